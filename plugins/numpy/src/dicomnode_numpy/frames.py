"""One record per 2D image of a series, whether it came as a file or as a frame.

Single-frame images carry their geometry at the top level; enhanced
multi-frame objects carry it in functional groups (shared, overridden per
frame). :func:`frames_of` flattens both into :class:`Frame` records so the
rest of the grinder never needs to know which kind it was given.
"""

from __future__ import annotations

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

from .header_values import has, int_value
from .header_values import text_value as _text
from .pixels import PixelFile, PixelFormat

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


def frames_of(datasets: Iterable[Dataset]) -> list[Frame]:
    """Every 2D image of ``datasets``, with its geometry and rescale.

    Raises :class:`~dicomnode.errors.GrindingError` for an image without
    PixelData or geometry, or a colour image.
    """
    frames: list[Frame] = []
    for original in datasets:
        dataset, pixel_file, syntax = _header_of(original)
        uid = str(_text(dataset, "SOPInstanceUID") or "<no SOPInstanceUID>")
        if not has(dataset, "PixelData"):
            raise GrindingError(f"image {uid} has no PixelData; only images can be ground into a volume")
        samples = int_value(dataset, "SamplesPerPixel", 1)
        if samples != 1:
            raise GrindingError(
                f"image {uid} has SamplesPerPixel {samples}; a volume needs greyscale images (1)"
            )
        pixel_format = PixelFormat.of(dataset, syntax)
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
            frames.append(_frame(original, dataset, 0, [None], f"image {uid}", pixel_format, pixel_file))
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
