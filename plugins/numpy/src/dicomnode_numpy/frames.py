"""One record per 2D image of a series, whether it came as a file or as a frame.

Single-frame images carry their geometry at the top level; enhanced
multi-frame objects carry it in functional groups (shared, overridden per
frame). :func:`frames_of` flattens both into :class:`Frame` records so the
rest of the grinder never needs to know which kind it was given.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import numpy as np
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.uid import UID

from dicomnode.dicom.lazy import scan_file
from dicomnode.errors import GrindingError

from .header_values import has, int_value, tag_object
from .header_values import text_value as _text
from .pixels import PixelFile, PixelFormat
from .series_scan import ScannedHeader, scan_headers

__all__ = ["Frame", "frames_of"]

_PIXEL_DATA = BaseTag(0x7FE00010)

#: attributes that order the images of one position in time (a 4D series)
_TEMPORAL_KEYWORDS = ("TemporalPositionIdentifier", "AcquisitionNumber", "TriggerTime", "AcquisitionTime")
@attrs.frozen(eq=False)
class Frame:
    """One 2D image: a single-frame dataset, or frame ``index`` of a multi-frame one.

    ``dataset`` is the dataset the grinder was given; ``header`` is where its
    values are read: the dataset itself, or for a lazy dataset whose file
    was not read yet, the file's header as :func:`frames_of` scanned it
    (the lazy dataset stays unread). ``pixel_file`` says where the pixel
    data wait in a file when the header was scanned.
    """

    dataset: Dataset
    header: Dataset
    index: int
    position: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    temporal_key: tuple[Any, ...]
    sop_instance_uid: str
    slice_thickness: float | None
    spacing_between_slices: float | None
    rows: int
    columns: int
    frame_count: int
    instance_number: int | None
    frame_of_reference_uid: str | None
    pixel_format: PixelFormat
    #: where the pixel data wait in a file, when the header was scanned from it
    pixel_file: PixelFile | None = None
    #: (tile row, tile column) when the image is one tile of a mosaic frame of ``rows x columns`` tiles
    tile: tuple[int, int] | None = None
    #: the direction slices are counted along, when the header names one (a mosaic's CSA
    #: SliceNormalVector); None: ``cross(row cosine, column cosine)``
    slice_normal: np.ndarray | None = None

    @property
    def orientation(self) -> np.ndarray:
        """The six ImageOrientationPatient values."""
        return np.concatenate([self.row_cosine, self.column_cosine])

    def describe(self) -> str:
        """Short name of the image for error messages."""
        if self.frame_count > 1:
            return f"frame {self.index + 1} of {self.sop_instance_uid}"
        number = self.instance_number
        return f"instance {number} ({self.sop_instance_uid})" if number is not None else self.sop_instance_uid


def _first_item(group: Dataset | None, sequence: str) -> Dataset | None:
    if group is None:
        return None
    items = group.get(sequence)
    if not items:
        return None
    item: Dataset = items[0]
    return item


def _lookup(groups: Sequence[Dataset | None], sequence: str, keyword: str) -> Any:
    """The value of ``keyword`` in the first group (per-frame before shared) that has it."""
    for group in groups:
        item = _first_item(group, sequence)
        if item is not None and item.get(keyword) is not None:
            return item.get(keyword)
    return None


def _numbers(value: Any, count: int, what: str, source: str) -> np.ndarray:
    try:
        array = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GrindingError(f"{source}: {what} is {value!r}, expected {count} numbers") from exc
    if array.shape != (count,):
        raise GrindingError(f"{source}: {what} is {list(value)!r}, expected {count} numbers")
    return array


def _scalar(value: Any, default: float, what: str = "", source: str = "") -> float:
    """``value`` as a number; ``default`` when absent. A value that is not a number is an
    error when ``what`` names it, and counts as absent otherwise (ordering keys)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        if not what:
            return default
        raise GrindingError(f"{source}: {what} is {value!r}, which is not a number") from exc


def _optional(value: Any, what: str, source: str) -> float | None:
    if value is None or value == "":
        return None
    return _scalar(value, 0.0, what, source)


def _temporal_key(dataset: Dataset, frame_group: Dataset | None) -> tuple[Any, ...]:
    key: list[Any] = []
    index = _lookup([frame_group], "FrameContentSequence", "TemporalPositionIndex")
    key.append(_scalar(index, 0.0))
    for keyword in _TEMPORAL_KEYWORDS:
        value = _text(dataset, keyword)
        key.append(str(value or "") if keyword == "AcquisitionTime" else _scalar(value, 0.0))
    key.append(_scalar(_text(dataset, "InstanceNumber"), 0.0))
    return tuple(key)


def _unit(vector: np.ndarray, what: str, source: str) -> np.ndarray:
    norm = math.sqrt(float(vector @ vector))
    if not 0.9 < norm < 1.1:
        raise GrindingError(f"{source}: {what} {vector.tolist()} is not a unit vector (length {norm:.4g})")
    return np.asarray(vector / norm)


def _frame(original: Dataset, dataset: Dataset, index: int, groups: Sequence[Dataset | None], source: str,
           pixel_format: PixelFormat, pixel_file: PixelFile | None) -> Frame:
    position = _lookup(groups, "PlanePositionSequence", "ImagePositionPatient")
    orientation = _lookup(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _lookup(groups, "PixelMeasuresSequence", "PixelSpacing")
    thickness = _lookup(groups, "PixelMeasuresSequence", "SliceThickness")
    slope = _lookup(groups, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _lookup(groups, "PixelValueTransformationSequence", "RescaleIntercept")
    if position is None:
        position = _text(dataset, "ImagePositionPatient")
    if orientation is None:
        orientation = _text(dataset, "ImageOrientationPatient")
    if spacing is None:
        spacing = _text(dataset, "PixelSpacing") or _text(dataset, "ImagerPixelSpacing")
    if thickness is None:
        thickness = _text(dataset, "SliceThickness")
    if slope is None:
        slope = _text(dataset, "RescaleSlope")
    if intercept is None:
        intercept = _text(dataset, "RescaleIntercept")
    missing = [
        name
        for name, value in (
            ("ImagePositionPatient", position),
            ("ImageOrientationPatient", orientation),
            ("PixelSpacing", spacing),
        )
        if value is None
    ]
    if missing:
        raise GrindingError(
            f"{source} has no {', '.join(missing)}: a volume needs the position, orientation "
            "and pixel spacing of every image"
        )
    iop = _numbers(orientation, 6, "ImageOrientationPatient", source)
    between = _text(dataset, "SpacingBetweenSlices")
    number = _text(dataset, "InstanceNumber")
    frame_of_reference = _text(dataset, "FrameOfReferenceUID")
    pixel_spacing = _numbers(spacing, 2, "PixelSpacing", source)
    return Frame(
        dataset=original,
        header=dataset,
        index=index,
        position=_numbers(position, 3, "ImagePositionPatient", source),
        row_cosine=_unit(iop[:3], "the row direction ImageOrientationPatient[0:3]", source),
        column_cosine=_unit(iop[3:], "the column direction ImageOrientationPatient[3:6]", source),
        pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
        slope=_scalar(slope, 1.0, "RescaleSlope", source),
        intercept=_scalar(intercept, 0.0, "RescaleIntercept", source),
        temporal_key=_temporal_key(dataset, groups[0] if len(groups) > 1 else None),
        sop_instance_uid=str(_text(dataset, "SOPInstanceUID") or ""),
        slice_thickness=_optional(thickness, "SliceThickness", source),
        spacing_between_slices=_optional(between, "SpacingBetweenSlices", source),
        rows=pixel_format.rows,
        columns=pixel_format.columns,
        frame_count=pixel_format.frame_count,
        instance_number=None if number in (None, "") else int(_scalar(number, 0.0)),
        frame_of_reference_uid=str(frame_of_reference) if frame_of_reference else None,
        pixel_format=pixel_format,
        pixel_file=pixel_file,
    )


def _raw_text(raw: bytes) -> str | list[str] | None:
    """What :func:`~dicomnode_numpy.header_values.text_value` gives for an element's raw bytes."""
    text = raw.decode("ascii", "replace").strip(" \x00")
    if not text:
        return None
    parts = [part.strip(" \x00") for part in text.split("\\")]
    return parts if len(parts) > 1 else parts[0]


@functools.lru_cache(maxsize=8192)
def _cached_vector(raw: bytes, count: int) -> np.ndarray | None:
    """``count`` numbers (a read-only array shared by every image with these bytes), None when not."""
    value = _raw_text(raw)
    values = value if isinstance(value, list) else [value]
    try:
        array = np.array([float(v) for v in values if v is not None], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.shape != (count,) or not np.isfinite(array).all():
        return None
    array.setflags(write=False)
    return array


@functools.lru_cache(maxsize=1024)
def _cached_directions(raw: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    iop = _cached_vector(raw, 6)
    if iop is None:
        return None
    directions = []
    for vector in (iop[:3], iop[3:]):
        norm = math.sqrt(float(vector @ vector))
        if not 0.9 < norm < 1.1:
            return None
        unit = vector / norm
        unit.setflags(write=False)
        directions.append(unit)
    return directions[0], directions[1]


@functools.lru_cache(maxsize=8192)
def _cached_number(raw: bytes) -> float | None:
    value = _raw_text(raw)
    if isinstance(value, list):
        value = value[0]
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return math.nan  # not a number: the general path says so


_FAST_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                  "RescaleSlope", "RescaleIntercept", "TemporalPositionIdentifier", "AcquisitionNumber",
                  "TriggerTime", "AcquisitionTime", "InstanceNumber", "SOPInstanceUID", "SpacingBetweenSlices",
                  "FrameOfReferenceUID")
_FAST_TAGS = tuple(tag_object(tag_for_keyword(keyword) or 0) for keyword in _FAST_KEYWORDS)


def _quick_frame(original: Dataset, dataset: Dataset, pixel_format: PixelFormat,
                 pixel_file: PixelFile | None) -> Frame | None:
    """The frame of a single-frame image whose header values are all still raw bytes; None otherwise.

    The same frame :func:`_frame` makes, with the values parsed straight
    from their bytes and the repeated ones (orientation, spacing, the
    positions of a 4D series) parsed once per series: the ordinary path
    costs more than reading the file. Anything unusual (a value missing,
    converted or not a number) is None, and :func:`_frame` decides — and
    gives the error.
    """
    raws: list[bytes | None] = []
    get = dataset._dict.get
    for tag in _FAST_TAGS:
        element = get(tag)
        if element is None:
            raws.append(None)
        elif type(element) is RawDataElement and type(element.value) is bytes:
            raws.append(element.value)
        else:
            return None
    (position_raw, orientation_raw, spacing_raw, thickness_raw, slope_raw, intercept_raw, temporal_raw,
     acquisition_raw, trigger_raw, time_raw, number_raw, uid_raw, between_raw, reference_raw) = raws
    if position_raw is None or orientation_raw is None or spacing_raw is None:
        return None
    position = _cached_vector(position_raw, 3)
    directions = _cached_directions(orientation_raw)
    spacing = _cached_vector(spacing_raw, 2)
    if position is None or directions is None or spacing is None:
        return None
    numbers = [None if raw is None else _cached_number(raw)
               for raw in (thickness_raw, slope_raw, intercept_raw, between_raw, number_raw)]
    if any(number is not None and math.isnan(number) for number in numbers):
        return None
    thickness, slope, intercept, between, number = numbers
    key: list[Any] = [0.0]
    for raw in (temporal_raw, acquisition_raw, trigger_raw):
        value = None if raw is None else _cached_number(raw)
        key.append(0.0 if value is None or math.isnan(value) else value)
    acquisition_time = None if time_raw is None else _raw_text(time_raw)
    key.append(str(acquisition_time[0] if isinstance(acquisition_time, list) else acquisition_time or ""))
    key.append(number or 0.0)
    uid = None if uid_raw is None else _raw_text(uid_raw)
    reference = None if reference_raw is None else _raw_text(reference_raw)
    return Frame(
        dataset=original, header=dataset, index=0, position=position, row_cosine=directions[0],
        column_cosine=directions[1], pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slope=1.0 if slope is None else slope, intercept=0.0 if intercept is None else intercept,
        temporal_key=tuple(key), sop_instance_uid=str(uid or ""), slice_thickness=thickness,
        spacing_between_slices=between, rows=pixel_format.rows, columns=pixel_format.columns,
        frame_count=pixel_format.frame_count, instance_number=None if number is None else int(number),
        frame_of_reference_uid=str(reference) if reference else None, pixel_format=pixel_format,
        pixel_file=pixel_file,
    )


#: the attributes a grinder reads (frames, geometry, pixels, NIfTI conventions, vendor rules)
_WANTED_TAGS = frozenset(
    int(tag_for_keyword(keyword) or 0) for keyword in (
        "SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "Modality", "Manufacturer", "ImageType",
        "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "ImagerPixelSpacing",
        "SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "InstanceNumber",
        "FrameOfReferenceUID", "TemporalPositionIdentifier", "NumberOfTemporalPositions", "AcquisitionNumber",
        "TriggerTime", "AcquisitionTime", "ContentTime", "Rows", "Columns", "BitsAllocated", "BitsStored",
        "HighBit", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation", "NumberOfFrames",
        "MRAcquisitionType", "RepetitionTime", "EchoTime", "InPlanePhaseEncodingDirection",
        "DiffusionBValue", "DiffusionDirectionality", "DiffusionGradientOrientation", "SliceLocation",
        "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "SpecificCharacterSet",
        "GantryDetectorTilt", "ImagesInAcquisition", "NumberOfSlices", "FrameReferenceTime",
    )
)
#: private groups whose blocks vendor rules read (Siemens CSA, GE, Philips)
_WANTED_PRIVATE_GROUPS = frozenset({0x0019, 0x0029, 0x0043, 0x2001, 0x2005})


def _header_of(dataset: Dataset) -> tuple[Dataset, PixelFile | None, UID | None]:
    """Where the values of ``dataset`` are read, where its pixel data wait, and its transfer syntax.

    A lazy dataset whose file was not read yet is not read now: its file is
    scanned (:func:`dicomnode.dicom.lazy.scan_file`, one read and one walk
    over the element headers, a fraction of pydicom's parse) into a header
    of raw elements that only this grind keeps, and its uncompressed pixel
    data are read from the file later, straight into the volume. Anything
    else — a dataset in memory, a compressed or unusual file — is read as
    it is.
    """
    if getattr(dataset, "is_loaded", True) is not False:
        return dataset, None, None
    scanned = scan_file(dataset.path, keep_tags=_WANTED_TAGS, keep_groups=_WANTED_PRIVATE_GROUPS)
    if scanned is None or scanned.transfer_syntax.is_compressed:
        return dataset, None, None
    pixels = scanned.elements.get(_PIXEL_DATA)
    if not isinstance(pixels, RawDataElement) or pixels.value is not None:
        return dataset, None, None
    return Dataset(scanned.elements), PixelFile(scanned.path, pixels), scanned.transfer_syntax


_FORMAT_TAGS = tuple(tag_object(tag_for_keyword(keyword) or 0) for keyword in (
    "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation", "Rows", "Columns", "NumberOfFrames"))


def _format_of(dataset: Dataset, syntax: UID | None, uid: str, formats: dict[tuple[Any, ...], PixelFormat]
               ) -> PixelFormat:
    """The pixel format of a greyscale image; images whose format elements are the very same objects (the
    headers of one scan share them) share it."""
    get = dataset._dict.get
    key = (syntax, *(id(get(tag)) for tag in _FORMAT_TAGS))
    known = formats.get(key)
    if known is not None:
        return known
    samples = int_value(dataset, "SamplesPerPixel", 1)
    if samples != 1:
        raise GrindingError(f"image {uid} has SamplesPerPixel {samples}; a volume needs greyscale images (1)")
    made = PixelFormat.of(dataset, syntax)
    if all(isinstance(get(tag), RawDataElement) or get(tag) is None for tag in _FORMAT_TAGS):
        formats[key] = made  # raw elements are not changed in place: the same objects, the same format
    return made


def _scanned_together(datasets: list[Dataset]) -> dict[int, ScannedHeader]:
    """The headers of the lazy datasets whose files were not read yet, scanned all at once (by ``id``)."""
    unread = [dataset for dataset in datasets if getattr(dataset, "is_loaded", True) is False]
    if len(unread) < 2:
        return {}
    headers = scan_headers([dataset.path for dataset in unread], _WANTED_TAGS, _WANTED_PRIVATE_GROUPS)
    return {id(dataset): header for dataset, header in zip(unread, headers, strict=True) if header is not None}


def frames_of(datasets: Iterable[Dataset]) -> list[Frame]:
    """Every 2D image of ``datasets``, with its geometry and rescale.

    Raises :class:`~dicomnode.errors.GrindingError` for an image without
    PixelData or geometry, or a colour image.
    """
    datasets = list(datasets)
    scanned = _scanned_together(datasets)
    formats: dict[tuple[Any, ...], PixelFormat] = {}
    frames: list[Frame] = []
    for original in datasets:
        found = scanned.get(id(original))
        dataset, pixel_file, syntax = (found.header, found.pixel_file, found.syntax) if found is not None \
            else _header_of(original)
        uid = str(_text(dataset, "SOPInstanceUID") or "<no SOPInstanceUID>")
        if not has(dataset, "PixelData"):
            raise GrindingError(f"image {uid} has no PixelData; only images can be ground into a volume")
        pixel_format = _format_of(dataset, syntax, uid, formats)
        count = pixel_format.frame_count
        per_frame = (dataset.get("PerFrameFunctionalGroupsSequence")
                     if has(dataset, "PerFrameFunctionalGroupsSequence") else None)
        shared_items = (dataset.get("SharedFunctionalGroupsSequence")
                        if has(dataset, "SharedFunctionalGroupsSequence") else None)
        shared = shared_items[0] if shared_items else None
        if per_frame is None and shared is None:
            if count != 1:
                raise GrindingError(
                    f"image {uid} has {count} frames but no functional groups, so the frames have "
                    "no positions; only enhanced multi-frame objects can be ground"
                )
            frames.append(_quick_frame(original, dataset, pixel_format, pixel_file)
                          or _frame(original, dataset, 0, [None], f"image {uid}", pixel_format, pixel_file))
            continue
        if per_frame is not None and len(per_frame) != count:
            raise GrindingError(
                f"image {uid} has NumberOfFrames {count} but {len(per_frame)} "
                "PerFrameFunctionalGroupsSequence items"
            )
        for index in range(count):
            groups = [per_frame[index] if per_frame is not None else None, shared]
            frames.append(_frame(original, dataset, index, groups, f"frame {index + 1} of image {uid}",
                                 pixel_format, pixel_file))
    return frames
