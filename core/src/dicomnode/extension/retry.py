"""Exponential backoff: how many times to try a destination, how long to wait in between, and the trying."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import attrs

from dicomnode.errors import ConfigurationError

__all__ = ["Backoff"]


def _positive_int(_instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be a whole number of at least 1, got {value!r}")


def _non_negative(_instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigurationError(f"{attribute.name} must be a number of seconds >= 0, got {value!r}")


@attrs.frozen
class Backoff:
    """Try up to ``attempts`` times; wait ``first_delay`` after the first failure, then twice as
    long after each further one, never more than ``max_delay``.

    >>> list(Backoff(attempts=5, first_delay=1.0, max_delay=3.0).delays())
    [1.0, 2.0, 3.0, 3.0]
    """

    attempts: int = attrs.field(default=5, validator=_positive_int)
    first_delay: float = attrs.field(default=1.0, validator=_non_negative)
    max_delay: float = attrs.field(default=60.0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.max_delay < self.first_delay:
            raise ConfigurationError(
                f"max_delay ({self.max_delay:g} s) must not be smaller than first_delay ({self.first_delay:g} s)"
            )

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1 for the first)."""
        if failures < 1:
            return 0.0
        # cap the exponent: 2**1000 would overflow a float long after max_delay is reached
        return float(min(self.first_delay * 2.0 ** min(failures - 1, 62), self.max_delay))

    def delays(self) -> Iterator[float]:
        """The waits between attempts: ``attempts - 1`` values."""
        return (self.delay(n) for n in range(1, self.attempts))

    def run(self, attempt: Callable[[], str | None], log: logging.Logger | logging.LoggerAdapter[logging.Logger],
            what: str) -> int:
        """Call ``attempt`` until it says nothing is left to do, or the attempts are spent; how many ran.

        ``attempt`` returns None when everything is delivered, else what is
        still wrong, in words for the log. Each failed attempt is a warning
        line naming ``what`` (``"C-STORE to PACS@10.0.0.9:104"``) and the
        wait that follows; the last one an error line. The waits sleep.
        """
        attempts = 0
        delays = self.delays()
        while True:
            attempts += 1
            problem = attempt()
            if problem is None:
                return attempts
            delay = next(delays, None)
            if delay is None:
                log.error("%s: attempt %d of %d failed, giving up: %s", what, attempts, self.attempts, problem)
                return attempts
            log.warning("%s: attempt %d of %d failed: %s; retrying in %g s", what, attempts, self.attempts,
                        problem, delay)
            time.sleep(delay)
