"""The series an input holds: what each image says about its series, summaries, and choosing one.

A study from a PACS usually holds several series — a scout, a thin and a
thick reconstruction, a dose report. An input with a ``series_selection``
accepts them all and chooses, when its job starts, the series it grinds:

``"largest"``
    the series with the most instances (ties: the thinnest, then the first
    to arrive);
``"thinnest"``
    the series with the smallest distance between neighbouring slices (from
    the positions; SpacingBetweenSlices or SliceThickness when a series has
    one slice; ties: the largest);
a tag rule
    ``{"SeriesDescription": re.compile(".*1.0.*"), "ImageType": contains("AXIAL")}``:
    the series whose first image satisfies every entry, compared as
    ``required_values`` are (ties: the largest);
a function
    ``select(summaries) -> SeriesSummary | str | None`` over the
    :class:`SeriesSummary` of every series held (its UID, description,
    count, spacing, orientation, …); it returns the chosen series or its
    UID, or None to choose none yet.

The facts an image gives (:class:`InstanceFacts`) are read once, when the
image is added, from the header the node routed on; summaries and
completeness are computed from them, never from the datasets again.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from pydicom import Dataset
from pydicom.tag import BaseTag

__all__ = [
    "SELECTIONS",
    "InstanceFacts",
    "SeriesSummary",
    "check_series_selection",
    "contains",
    "describe_selection",
    "select_series",
    "summarise",
]

#: the named series selections
SELECTIONS = ("largest", "thinnest")

_GE_SERIES = (0x0025, "GEMS_SERS_01", 0x07)  # Images in Series (SL)
_GE_LOCATIONS = (0x0021, "GEMS_RELA_01", 0x4F)  # Locations in acquisition (SS)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _whole(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _private(dataset: Dataset, spec: tuple[int, str, int]) -> int | None:
    """A vendor's private integer, found through its private creator (None when absent)."""
    group, creator, offset = spec
    for block in range(0x10, 0x100):
        owner = dataset.get((group, block))
        if owner is None:
            if block > 0x1F:
                return None
            continue
        if str(owner.value).strip() == creator:
            element = dataset.get((group, (block << 8) | offset))
            return None if element is None else _whole(element.value)
    return None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(math.isfinite(n) for n in numbers) else None


@attrs.frozen
class InstanceFacts:
    """What one image says about its series: where it lies, and how many images its headers announce.

    Read once per image by :meth:`from_header`; everything else about series
    (summaries, selection, completeness) is computed from these.
    """

    sop_uid: str
    series_uid: str
    study_uid: str = ""
    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    acquisition: str = ""
    temporal_position: int | None = None
    #: ImagesInAcquisition
    images_in_acquisition: int | None = None
    #: NumberOfTemporalPositions
    temporal_positions: int | None = None
    #: NumberOfFrames (1 for a single-frame image)
    frames: int = 1
    concatenation: str = ""
    #: InConcatenationTotalNumber
    concatenation_total: int | None = None
    #: GE's Images in Series (0025,xx07), when the standard counts are absent
    vendor_total: int | None = None
    #: GE's Locations in acquisition (0021,xx4F): slices per temporal position
    vendor_slices: int | None = None
    modality: str = ""

    @classmethod
    def from_header(cls, dataset: Dataset, sop_uid: str) -> InstanceFacts:
        """The facts of one image, from its (routed) header."""
        def text(keyword: str) -> str:
            value = dataset.get(keyword)  # by keyword: the value, converted
            return "" if value is None else str(value).strip()

        def whole(keyword: str) -> int | None:
            return _whole(dataset.get(keyword))

        images = whole("ImagesInAcquisition")
        temporal = whole("NumberOfTemporalPositions")
        vendor_total = vendor_slices = None
        if images is None:  # vendor fields only where the standard ones are absent
            vendor_total = _private(dataset, _GE_SERIES)
            if temporal is not None:
                vendor_slices = _private(dataset, _GE_LOCATIONS)
        return cls(
            sop_uid=sop_uid,
            series_uid=text("SeriesInstanceUID"),
            study_uid=text("StudyInstanceUID"),
            position=_floats(dataset.get("ImagePositionPatient"), 3),
            orientation=_floats(dataset.get("ImageOrientationPatient"), 6),
            acquisition=text("AcquisitionNumber"),
            temporal_position=whole("TemporalPositionIdentifier"),
            images_in_acquisition=images,
            temporal_positions=temporal,
            frames=whole("NumberOfFrames") or 1,
            concatenation=text("ConcatenationUID"),
            concatenation_total=whole("InConcatenationTotalNumber"),
            vendor_total=vendor_total,
            vendor_slices=vendor_slices,
            modality=text("Modality"),
        )


@attrs.frozen
class SeriesSummary:
    """One series an input holds, as a ``series_selection`` function sees it.

    ``spacing`` is the smallest distance between neighbouring slice
    positions along the slice normal, in mm (SpacingBetweenSlices, else
    SliceThickness, when the series has a single position; None when
    nothing says); ``orientation`` the ImageOrientationPatient of its first
    image; ``header`` its first image's header (for rules on other tags).
    """

    uid: str
    count: int
    description: str = ""
    number: int | None = None
    modality: str = ""
    image_type: tuple[str, ...] = ()
    spacing: float | None = None
    thickness: float | None = None
    orientation: tuple[float, ...] | None = None
    study_uid: str = ""
    header: Dataset | None = attrs.field(default=None, eq=False, repr=False)

    def describe(self) -> str:
        """``1.2.3 ('AX 1.0', 300 instances)``: for log lines."""
        label = f"{self.description!r}, " if self.description else ""
        return f"{self.uid} ({label}{self.count} instance{'s' if self.count != 1 else ''})"


def _spacing(facts: Sequence[InstanceFacts]) -> float | None:
    orientation = next((f.orientation for f in facts if f.orientation is not None), None)
    if orientation is None:
        return None
    row, column = orientation[:3], orientation[3:]
    normal = (row[1] * column[2] - row[2] * column[1], row[2] * column[0] - row[0] * column[2],
              row[0] * column[1] - row[1] * column[0])
    along = sorted({round(sum(p * n for p, n in zip(f.position, normal, strict=True)), 3)
                    for f in facts if f.position is not None})
    gaps = [b - a for a, b in itertools.pairwise(along) if b - a > 1e-3]
    return min(gaps) if gaps else None


def summarise(facts: Iterable[InstanceFacts], headers: Mapping[str, Dataset]) -> list[SeriesSummary]:
    """The summary of every series in ``facts``, in the order the series first arrived.

    ``headers`` maps a series UID to the header of its first image.
    """
    grouped: dict[str, list[InstanceFacts]] = {}
    for fact in facts:
        grouped.setdefault(fact.series_uid, []).append(fact)
    summaries = []
    for uid, members in grouped.items():
        header = headers.get(uid)
        description = number = image_type = thickness = None
        spacing = _spacing(members)
        if header is not None:
            description = header.get("SeriesDescription")
            number = _whole(header.get("SeriesNumber"))
            raw_type = header.get("ImageType")
            image_type = tuple(str(v) for v in raw_type) if raw_type is not None and not isinstance(
                raw_type, str) else ((str(raw_type),) if raw_type else ())
            thickness = _number(header.get("SliceThickness"))
            if spacing is None:
                spacing = _number(header.get("SpacingBetweenSlices")) or thickness
        summaries.append(SeriesSummary(
            uid=uid, count=len(members), description=str(description or "").strip(), number=number,
            modality=members[0].modality, image_type=image_type or (), spacing=spacing, thickness=thickness,
            orientation=members[0].orientation, study_uid=members[0].study_uid, header=header))
    return summaries


def contains(value: str) -> Callable[[Any], bool]:
    """A ``required_values`` / tag-rule check: the (multi-)value contains ``value``.

    >>> contains("AXIAL")(["ORIGINAL", "PRIMARY", "AXIAL"])
    True
    """
    wanted = value.strip().upper()

    def check(actual: Any) -> bool:
        values = [actual] if isinstance(actual, (str, bytes)) or not isinstance(actual, Iterable) else actual
        return any(str(v).strip().upper() == wanted for v in values)

    check.__qualname__ = check.__name__ = f"contains({value!r})"
    return check


def _thinnest_key(summary: SeriesSummary) -> tuple[float, int]:
    return (summary.spacing if summary.spacing is not None else math.inf, -summary.count)


def _largest_key(summary: SeriesSummary) -> tuple[int, float]:
    return (-summary.count, summary.spacing if summary.spacing is not None else math.inf)


def select_series(summaries: Sequence[SeriesSummary], selection: Any,
                  rule: Sequence[tuple[BaseTag, Any]] = ()) -> str | None:
    """The UID of the series ``selection`` chooses among ``summaries`` (None: none).

    ``rule`` is a tag rule's entries with their tags resolved (the input
    resolves them once).
    """
    from dicomnode.extension.inputs import value_matches

    if not summaries:
        return None
    if selection == "largest":
        return min(summaries, key=_largest_key).uid  # min keeps the first of equals: arrival order
    if selection == "thinnest":
        return min(summaries, key=_thinnest_key).uid
    if isinstance(selection, Mapping):
        matching = [s for s in summaries if s.header is not None and all(
            tag in s.header and value_matches(s.header[tag].value, expected) for tag, expected in rule)]
        return min(matching, key=_largest_key).uid if matching else None
    chosen = selection(list(summaries))
    if chosen is None:
        return None
    uid = chosen.uid if isinstance(chosen, SeriesSummary) else str(chosen)
    if all(s.uid != uid for s in summaries):
        raise ValueError(f"series_selection chose {uid!r}, which is not a series the input holds")
    return uid


def check_series_selection(value: Any, owner: str) -> str | None:
    """Why ``value`` is not a valid ``series_selection`` (None: it is, or it is unset)."""
    if value is None or value in SELECTIONS or callable(value):
        return None
    if isinstance(value, Mapping) and value:
        return None
    return (f"{owner}.series_selection must be 'largest', 'thinnest', a tag rule (a non-empty mapping of tag "
            f"to value, regex or check) or a function select(summaries) -> summary or UID, got {value!r}")


def describe_selection(selection: Any) -> str:
    """How a selection reads in a log line."""
    if isinstance(selection, str):
        return repr(selection)
    if isinstance(selection, Mapping):
        parts = []
        for tag, expected in selection.items():
            shown = f"/{expected.pattern}/" if isinstance(expected, re.Pattern) else (
                getattr(expected, "__name__", None) if callable(expected) else repr(expected))
            parts.append(f"{tag} {shown}")
        return "rule " + ", ".join(parts)
    return getattr(selection, "__name__", type(selection).__name__)
