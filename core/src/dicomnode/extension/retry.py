"""Exponential backoff: how many times to try a destination, and how long to wait in between."""

from __future__ import annotations

from collections.abc import Iterator

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
