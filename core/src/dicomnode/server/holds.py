"""Why a patient is still waiting: each input's images and the completeness rule that holds it back.

A patient waits in the node until every input validates (and, with a
``stable_time``, until no image arrived for that long). :func:`hold_of`
describes one patient's wait for the log, the history and the status,
without a value of its datasets: the input names, their image counts, the
rule each input applies (``at least 300 image(s)``, ``CT.validate()``) and
whether it holds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs

from dicomnode.extension.inputs import AbstractInput

if TYPE_CHECKING:
    from dicomnode.server.pipeline_tree import PatientContainer

__all__ = ["InputHold", "PatientHold", "hold_of", "rule_of"]


@attrs.frozen
class InputHold:
    """One input of a waiting patient: how many images it holds, its rule, and whether the rule holds."""

    name: str
    images: int
    complete: bool
    rule: str


@attrs.frozen
class PatientHold:
    """A patient the node holds: its images, since when, and what it waits for.

    ``first_image`` and ``last_image`` are wall-clock times (seconds since
    the epoch); ``waiting_for`` says in a few words what is missing.
    """

    patient_key: str
    calling_aet: str
    images: int
    first_image: float
    last_image: float
    inputs: tuple[InputHold, ...]
    waiting_for: str

    @property
    def complete(self) -> bool:
        """True when every input's rule holds (the patient waits only for its stable time or a check)."""
        return all(item.complete for item in self.inputs)


def rule_of(inp: AbstractInput) -> str:
    """The completeness rule of an input, in words: its own ``validate``, a ``validator``, or a minimum count."""
    cls = type(inp)
    if cls.validate is not AbstractInput.validate:
        owner = next(klass for klass in cls.__mro__ if "validate" in vars(klass))
        return f"{owner.__name__}.validate()"
    validator = inp.setting("validator")
    if validator is not None:
        return f"validator {getattr(validator, '__qualname__', type(validator).__name__)}()"
    minimum = inp.minimum_images or 1
    return f"at least {minimum} image{'s' if minimum != 1 else ''}"


def hold_of(container: PatientContainer, stable_time: float | None = None, *,
            validate: bool = True) -> PatientHold:
    """Describe why ``container`` waits (its lock is held while its inputs are read).

    ``validate=False`` skips the inputs' rules (the metrics need only the counts).
    """
    with container.lock:
        now_wall, now = time.time(), time.monotonic()
        inputs = []
        for name, inp in container.inputs.items():
            complete = False
            rule = rule_of(inp)
            if validate:
                try:
                    complete = bool(inp.validate())
                except Exception as error:  # an input's user code; the status must still answer
                    rule += f" (raised {type(error).__name__})"
            inputs.append(InputHold(name, inp.images, complete, rule))
        images = container.images
        last = now_wall - (now - container.last_update)
        calling_aet = container.calling_aet
        first = container.created
    missing = [f"{item.name}: {item.rule}, has {item.images}" for item in inputs if not item.complete]
    if not validate:
        waiting = ""
    elif missing:
        waiting = "; ".join(missing)
    elif stable_time is not None and now_wall - last < stable_time:
        waiting = f"no new image for {stable_time:g} s (the last came {now_wall - last:.0f} s ago)"
    else:
        waiting = "complete: the next check starts its job"
    return PatientHold(container.patient_key, calling_aet, images, first, last, tuple(inputs), waiting)
