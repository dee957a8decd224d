"""When an input is complete: judged by ``validate()``, by what the headers announce, or by asking a PACS.

Every peer of a DICOM node guesses that a study is complete when no image
came for a while. An input's ``completeness`` setting says how it decides
instead:

``"validate"`` (the default)
    the input's own ``validate()``; with ``stable_time`` only once no image
    of the patient arrived for that long;
``"announced"``
    every series the input accepted holds as many instances as its headers
    announce (:func:`announced`); ``validate()`` must hold too;
``"query"``
    a C-FIND to a known endpoint (usually the sending PACS) says how many
    instances each series of the study has, and the node has received them
    all; ``validate()`` must hold too.

When the content cannot tell (no header announces a count, no endpoint to
ask, or it does not know the study), the input falls back to ``"validate"``
with ``stable_time``. A :class:`Completion` carries the verdict and the words
the log uses for what holds a patient back ("212 of 300 announced
instances").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

from dicomnode.extension.series import InstanceFacts

__all__ = ["COMPLETENESS", "Completion", "announced", "announced_series"]

#: the values of an input's ``completeness`` setting
COMPLETENESS = ("validate", "announced", "query")


@attrs.frozen
class Completion:
    """A verdict on whether an input holds everything that will come.

    ``state``: ``"complete"``, ``"incomplete"`` or ``"unknown"`` (the content
    cannot tell: the input falls back to ``validate()`` and ``stable_time``);
    ``detail`` says why, for the log.
    """

    state: Literal["complete", "incomplete", "unknown"]
    detail: str = ""

    @property
    def complete(self) -> bool:
        """True for ``"complete"``."""
        return self.state == "complete"


UNKNOWN = Completion("unknown")


def _plural(count: int) -> str:
    return "" if count == 1 else "s"


def announced_series(facts: Sequence[InstanceFacts]) -> tuple[int | None, str]:
    """How many instances one series' headers announce (None: they do not say), and from which field.

    In order, the first that applies:

    1. a concatenation (ConcatenationUID): InConcatenationTotalNumber
       instances per concatenation;
    2. multi-frame instances (NumberOfFrames > 1) outside a concatenation:
       each is whole by itself;
    3. NumberOfTemporalPositions T with TemporalPositionIdentifier: every one
       of the T positions present, each acquisition holding its
       ImagesInAcquisition (or, without it, every position as many images as
       the fullest);
    4. ImagesInAcquisition of a series in one acquisition, except MR (whose
       diffusion and functional series come as one acquisition per volume
       without saying how many);
    5. GE's Images in Series (0025,xx07), or GE's Locations in acquisition
       (0021,xx4F) times NumberOfTemporalPositions.
    """
    held = len(facts)
    concatenations: dict[str, tuple[int, int | None]] = {}
    for fact in facts:
        if fact.concatenation:
            count, total = concatenations.get(fact.concatenation, (0, None))
            concatenations[fact.concatenation] = (count + 1, total or fact.concatenation_total)
    if concatenations:
        if any(total is None for _, total in concatenations.values()):
            return None, ""
        expected = sum(total or 0 for _, total in concatenations.values())
        expected += sum(1 for fact in facts if not fact.concatenation)
        return expected, "InConcatenationTotalNumber"
    if all(fact.frames > 1 for fact in facts):
        return held, "NumberOfFrames"
    temporal = next((f.temporal_positions for f in facts if f.temporal_positions), None)
    positions = {f.temporal_position for f in facts if f.temporal_position is not None}
    acquisitions: dict[str, list[InstanceFacts]] = {}
    for fact in facts:
        acquisitions.setdefault(fact.acquisition, []).append(fact)
    if temporal is not None and temporal > 1 and positions:
        per_position: dict[int | None, int] = {}
        for fact in facts:
            per_position[fact.temporal_position] = per_position.get(fact.temporal_position, 0) + 1
        slices = max(per_position.values())
        per_acquisition = [next((f.images_in_acquisition for f in group if f.images_in_acquisition), 0)
                           for group in acquisitions.values()]
        if all(per_acquisition):
            if len(acquisitions) == 1:  # one acquisition holding every temporal position
                return max(per_acquisition[0], temporal * slices), "ImagesInAcquisition"
            slices = max(slices, *per_acquisition)  # one acquisition per temporal position
        return temporal * slices, "NumberOfTemporalPositions"
    images = next((f.images_in_acquisition for f in facts if f.images_in_acquisition), None)
    if images is not None and len(acquisitions) == 1 and facts[0].modality != "MR":
        return images, "ImagesInAcquisition"
    vendor_total = next((f.vendor_total for f in facts if f.vendor_total), None)
    if vendor_total is not None:
        return vendor_total, "GE Images in Series"
    vendor_slices = next((f.vendor_slices for f in facts if f.vendor_slices), None)
    if vendor_slices is not None and temporal is not None:
        return vendor_slices * temporal, "GE Locations in acquisition x NumberOfTemporalPositions"
    return None, ""


def announced(facts: Iterable[InstanceFacts]) -> Completion:
    """Whether every series in ``facts`` holds as many instances as its headers announce.

    Complete when every series is; incomplete when one is short (the detail
    names the first such series); unknown when a series' headers announce
    nothing (see :func:`announced_series` for what is read). More instances
    than announced count as complete: a wrong header must not hold a patient
    forever.
    """
    grouped: dict[str, list[InstanceFacts]] = {}
    for fact in facts:
        grouped.setdefault(fact.series_uid, []).append(fact)
    if not grouped:
        return Completion("incomplete", "no images yet")
    silent = []
    for uid, members in grouped.items():
        expected, source = announced_series(members)
        if expected is None:
            silent.append(uid)
            continue
        if len(members) < expected:
            return Completion("incomplete", f"{len(members)} of {expected} announced instance{_plural(expected)} "
                                            f"of series {uid} ({source})")
    if silent:
        return Completion("unknown", f"series {silent[0]} announces no instance count")
    series = len(grouped)
    return Completion("complete", f"every announced instance of {series} series")
