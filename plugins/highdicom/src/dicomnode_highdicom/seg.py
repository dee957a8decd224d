"""SegFactory: a mask becomes a DICOM Segmentation that references the right source slices.

highdicom encodes the object (bit packing, functional groups, dimension
indices, segment descriptions); this module decides what highdicom is given:
the source images in the mask's order (see :mod:`~dicomnode_highdicom.alignment`),
coded segment descriptions, the provenance and stable UIDs::

    seg = SegFactory(algorithm_name="bone-threshold", algorithm_version="1.0").build(
        mask,                                   # Volume.array layout, or a Volume
        source,                                 # the source datasets, in any order
        segments=[Segment(number=1, label="bone")],
    )

A mask is a 3D array ``(slices, rows, columns)`` or a
:class:`~dicomnode_numpy.volume.Volume`, or a list of them (one per segment,
for segments that overlap):

- 0/1 or boolean: one segment, number 1;
- integer labels 0..n: one segment per value (0 is background);
- floats from 0 to 1 (``segmentation_type="FRACTIONAL"``): probabilities or
  occupancies, written as 0..``max_fractional_value``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicomnode.errors import ConfigurationError, InvalidDatasetError
from dicomnode_numpy import Volume

from .alignment import align
from .properties import SEGMENT_PROPERTIES, PropertyTable
from .provenance import ResultFactory, check_sources, without_values

__all__ = ["COMPRESSIONS", "SEGMENTATION_TYPES", "SegFactory", "Segment"]

SEGMENTATION_TYPES = ("BINARY", "FRACTIONAL", "LABELMAP")
#: compression name -> transfer syntax; a BINARY segmentation allows only JPEG 2000
COMPRESSIONS = {"jpeg2000": JPEG2000Lossless, "jpeg-ls": JPEGLSLossless, "rle": RLELossless}
#: colours given to segments without their own (RGB), in segment order
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40))
_MAX_SEGMENT = 65535


def _check_number(_instance: object, _attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_SEGMENT:
        raise ConfigurationError(f"Segment number must be an integer from 1 to {_MAX_SEGMENT}, got {value!r}")


def _check_label(_instance: object, _attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > 64 or "\\" in value:
        raise ConfigurationError(
            f"Segment label must be text of 1 to 64 characters without backslashes (DICOM LO), got {value!r}"
        )


def _check_optional_code(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Code):
        raise ConfigurationError(f"Segment {attribute.name} must be a pydicom Code or None, got {value!r}")


def _check_color(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if (not isinstance(value, tuple) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        raise ConfigurationError(f"Segment color must be an (R, G, B) tuple of integers 0..255, got {value!r}")


@attrs.frozen
class Segment:
    """One segment of a segmentation: its number (the mask value), label and codes.

    ``category`` and ``type`` (pydicom Codes) say what it is; when both are
    None they are looked up by ``property`` (default: the label) in the
    factory's :class:`~dicomnode_highdicom.properties.PropertyTable`.
    ``color`` is an ``(R, G, B)`` display colour; segments without one get
    one of a fixed palette.
    """

    number: int = attrs.field(validator=_check_number)
    label: str = attrs.field(validator=_check_label)
    property: str | None = None
    category: Code | None = attrs.field(default=None, validator=_check_optional_code)
    type: Code | None = attrs.field(default=None, validator=_check_optional_code)
    color: tuple[int, int, int] | None = attrs.field(default=None, validator=_check_color)

    def __attrs_post_init__(self) -> None:
        if (self.category is None) != (self.type is None):
            raise ConfigurationError(
                f"Segment {self.number} ({self.label!r}): give both category and type, or neither "
                "(then they are looked up by label)"
            )

    def codes(self, table: PropertyTable) -> tuple[Code, Code]:
        """(category, type): the segment's own, or the table's for its property or label."""
        if self.category is not None and self.type is not None:
            return self.category, self.type
        found = table.lookup(self.property or self.label)
        return found.category, found.type

    def display_color(self) -> tuple[int, int, int]:
        """The segment's colour, or the palette's for its number."""
        return self.color if self.color is not None else PALETTE[(self.number - 1) % len(PALETTE)]


def segments_of(segments: Sequence[Segment | str]) -> list[Segment]:
    """``segments`` as Segments sorted by number; a string is a label numbered by its position."""
    if isinstance(segments, (str, Segment)) or not isinstance(segments, Sequence) or not segments:
        raise ConfigurationError(
            f"segments must be a non-empty list of Segment (or labels), got {segments!r}"
        )
    result = [s if isinstance(s, Segment) else Segment(number=n, label=s) for n, s in enumerate(segments, 1)]
    numbers = [s.number for s in result]
    if len(set(numbers)) != len(numbers):
        raise ConfigurationError(f"segment numbers must be unique, got {numbers}")
    return sorted(result, key=lambda s: s.number)


def _check_type(_instance: object, _attribute: attrs.Attribute[str], value: object) -> None:
    if value not in SEGMENTATION_TYPES:
        raise ConfigurationError(
            f"segmentation_type must be one of {', '.join(SEGMENTATION_TYPES)}, got {value!r}"
        )


def _check_compression(instance: Any, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if value not in COMPRESSIONS:
        raise ConfigurationError(
            f"compression must be None or one of {', '.join(repr(c) for c in COMPRESSIONS)}, got {value!r}"
        )
    if instance.segmentation_type == "BINARY" and value != "jpeg2000":
        raise ConfigurationError(
            f"a BINARY segmentation packs 8 pixels a byte and can only be compressed with 'jpeg2000' "
            f"(got {value!r}); use segmentation_type 'FRACTIONAL' or 'LABELMAP' for {value!r}"
        )


def _check_fractional(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("PROBABILITY", "OCCUPANCY"):
        raise ConfigurationError(f"fractional_type must be 'PROBABILITY' or 'OCCUPANCY', got {value!r}")


def _check_max_fractional(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise ConfigurationError(f"max_fractional_value must be an integer from 1 to 255, got {value!r}")


@attrs.frozen(kw_only=True)
class SegFactory(ResultFactory):
    """Builds a DICOM Segmentation (SEG) from a mask and its source images, with highdicom.

    Parameters (besides those of :class:`~dicomnode_highdicom.provenance.ResultFactory`)
    ----------
    segmentation_type:
        ``"BINARY"`` (default), ``"FRACTIONAL"`` or ``"LABELMAP"`` (the Label
        Map Segmentation class of 2024; not every PACS stores it yet).
    fractional_type, max_fractional_value:
        how a FRACTIONAL segmentation's values read: ``"PROBABILITY"`` or
        ``"OCCUPANCY"``, stored as 0..max_fractional_value.
    compression:
        None (default), ``"jpeg2000"``, ``"jpeg-ls"`` or ``"rle"``; a BINARY
        segmentation allows only ``"jpeg2000"`` (which needs
        pylibjpeg-openjpeg, from dicomnode-numpy[jpeg]).
    omit_empty_frames:
        leave out frames where a segment has no pixel (default True).
    properties:
        the table of segment labels to codes (default :data:`SEGMENT_PROPERTIES`).

    The SeriesNumber defaults to the source series' plus 1000.
    """

    segmentation_type: str = attrs.field(default="BINARY", validator=_check_type)
    fractional_type: str = attrs.field(default="PROBABILITY", validator=_check_fractional)
    max_fractional_value: int = attrs.field(default=255, validator=_check_max_fractional)
    compression: str | None = attrs.field(default=None, validator=_check_compression)
    omit_empty_frames: bool = True
    properties: PropertyTable = attrs.field(default=SEGMENT_PROPERTIES)

    kind = "seg"
    series_offset = 1000

    def build(self, mask: Any, source: Sequence[Dataset], *, segments: Sequence[Segment | str]) -> Dataset:
        """The Segmentation of ``mask`` over the ``source`` images (any order), one Dataset.

        Raises :class:`~dicomnode.errors.InvalidDatasetError` when the mask does
        not fit the sources or holds values no segment describes,
        :class:`~dicomnode.errors.ConfigurationError` for segments that cannot
        be coded, and :class:`~dicomnode.errors.DatasetValidationError` when
        ``validate`` is on and the object fails its check.
        """
        sources = check_sources(source, "a segmentation")
        described = segments_of(segments)
        array, volume = self._mask_array(mask, described)
        alignment = align(array.shape[:3], volume, sources)
        series_uid = self.series_uid(sources)
        descriptions = [self._description(segment, series_uid) for segment in described]
        first = alignment.source_images[0]
        try:
            seg = hd.seg.Segmentation(
                source_images=alignment.source_images,
                pixel_array=array,
                segmentation_type=self.segmentation_type,
                segment_descriptions=descriptions,
                series_instance_uid=series_uid,
                series_number=self.new_series_number(first),
                sop_instance_uid=self.instance_uid(series_uid),
                instance_number=1,
                manufacturer_model_name=self.algorithm_name,
                software_versions=self.algorithm_version,
                device_serial_number=self.model_hash or self.algorithm_version,
                fractional_type=self.fractional_type,
                max_fractional_value=self.max_fractional_value,
                content_description=self.contribution_description[:64],
                content_label=_content_label(self.algorithm_name),
                transfer_syntax_uid=COMPRESSIONS.get(self.compression or "", ExplicitVRLittleEndian),
                omit_empty_frames=self.omit_empty_frames,
                contributing_equipment=[self.contributing_equipment()],
                series_description=self.series_description or f"{self.algorithm_name} segmentation"[:64],
                plane_positions=alignment.plane_positions,
                plane_orientation=alignment.plane_orientation,
                pixel_measures=alignment.pixel_measures,
                **self.equipment(),
            )
        except (ValueError, TypeError) as error:
            raise InvalidDatasetError(
                f"highdicom could not encode the segmentation: {without_values(error)}") from error
        except ModuleNotFoundError as error:
            raise ConfigurationError(
                f"compression {self.compression!r} needs a codec that is not installed: {error}"
            ) from error
        return self.checked(seg)

    # -- the mask ---------------------------------------------------------------------------------

    def _mask_array(self, mask: Any, described: list[Segment]) -> tuple[np.ndarray, Volume | None]:
        """The array highdicom gets (no copy for boolean, uint8 and uint16 masks) and the geometry."""
        numbers = [segment.number for segment in described]
        if self.segmentation_type != "LABELMAP" and numbers != list(range(1, len(numbers) + 1)):
            raise ConfigurationError(
                f"the segments of a {self.segmentation_type} segmentation are numbered 1, 2, ... without "
                f"gaps, got {numbers}; renumber them (or use segmentation_type 'LABELMAP')"
            )
        if isinstance(mask, (list, tuple)):
            return self._stacked(mask, described)
        volume = mask if isinstance(mask, Volume) else None
        array = volume.array if volume is not None else mask
        if not isinstance(array, np.ndarray) or array.ndim != 3:
            raise InvalidDatasetError(
                "a mask is a 3D numpy array (slices, rows, columns), a Volume, or a list of them (one per "
                f"segment), got {type(array).__name__} of shape {getattr(array, 'shape', None)}"
            )
        return self._values(array, described, stacked=False), volume

    def _stacked(self, masks: Sequence[Any], described: list[Segment]) -> tuple[np.ndarray, Volume | None]:
        if len(masks) != len(described):
            raise InvalidDatasetError(
                f"a list of masks holds one mask per segment: got {len(masks)} mask(s) for "
                f"{len(described)} segment(s)"
            )
        volumes = [m for m in masks if isinstance(m, Volume)]
        arrays = [m.array if isinstance(m, Volume) else m for m in masks]
        shapes = {getattr(a, "shape", None) for a in arrays}
        if len(shapes) != 1 or not all(isinstance(a, np.ndarray) and a.ndim == 3 for a in arrays):
            raise InvalidDatasetError(
                f"every mask of the list must be a 3D array of the same shape, got shapes {sorted(map(str, shapes))}"
            )
        if self.segmentation_type == "LABELMAP":
            raise ConfigurationError(
                "a LABELMAP segmentation holds one label per pixel; pass one label array, not a list of masks"
            )
        checked = [self._values(a, [s], stacked=True) for a, s in zip(arrays, described)]
        dtype = np.float32 if any(a.dtype.kind == "f" for a in checked) else np.uint8
        # highdicom wants the segments down the last axis: one copy of the masks
        return np.stack([a.astype(dtype, copy=False) for a in checked], axis=-1), (volumes[0] if volumes else None)

    def _values(self, array: np.ndarray, described: list[Segment], *, stacked: bool) -> np.ndarray:
        kind = array.dtype.kind
        if kind == "f":
            return self._float_values(array, stacked)
        if kind not in "biu":
            raise InvalidDatasetError(f"a mask holds booleans, integers or floats, got dtype {array.dtype}")
        if kind == "i" and array.size and int(array.min()) < 0:
            raise InvalidDatasetError("a mask holds no negative values; 0 is background, 1.. are segments")
        largest = int(array.max()) if array.size else 0
        numbers = [segment.number for segment in described]
        if stacked and largest > 1:
            raise InvalidDatasetError(
                f"each mask of a list is 0/1 (its segment's pixels), but one holds the value {largest}"
            )
        if not stacked:
            undescribed = sorted(_labels_above(array, largest, set(numbers)))
            if undescribed:
                shown = ", ".join(map(str, undescribed[:10])) + (" ..." if len(undescribed) > 10 else "")
                raise InvalidDatasetError(
                    f"the mask holds the value(s) {shown}, which no segment describes; the segments are "
                    + ", ".join(f"{s.number} ({s.label})" for s in described)
                )
        if largest > 65535:
            raise InvalidDatasetError(f"segment numbers go up to {_MAX_SEGMENT}, the mask holds {largest}")
        if array.dtype in (np.bool_, np.uint8, np.uint16):
            if self.segmentation_type == "FRACTIONAL" and array.dtype != np.bool_ and largest <= 1:
                # highdicom scales a 0/1 integer mask of one segment in place; as booleans it scales a copy
                return array.view(np.bool_)
            return array
        return array.astype(np.uint8 if largest < 256 else np.uint16)

    def _float_values(self, array: np.ndarray, stacked: bool) -> np.ndarray:
        low = float(array.min()) if array.size else 0.0
        high = float(array.max()) if array.size else 0.0
        if not (low >= 0.0 and high <= 1.0) or np.isnan(low) or np.isnan(high):
            raise InvalidDatasetError(
                f"a float mask holds values from 0 to 1, but this one goes from {low:g} to {high:g}"
            )
        if self.segmentation_type == "FRACTIONAL":
            return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)
        # a BINARY or LABELMAP segmentation of floats: they must be exactly 0 or 1, checked a slice at a time
        for k in range(array.shape[0]):
            plane = array[k]
            if np.any((plane != 0) & (plane != 1)):
                raise InvalidDatasetError(
                    f"a {self.segmentation_type} segmentation stores 0/1 masks, but slice {k} of this float "
                    "mask holds values between 0 and 1; use segmentation_type 'FRACTIONAL' for "
                    "probabilities, or threshold the mask"
                )
        return array.astype(np.uint8)

    def _description(self, segment: Segment, series_uid: str) -> hd.seg.SegmentDescription:
        category, kind = segment.codes(self.properties)
        return hd.seg.SegmentDescription(
            segment_number=segment.number,
            segment_label=segment.label,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=self.algorithm_name,
                family=self.algorithm_family,
                version=self.algorithm_version,
                source=self.manufacturer,
                parameters=self.algorithm_parameters(),
            ),
            tracking_uid=self.tracking_uid(series_uid, segment.number),
            tracking_id=f"{segment.label} {segment.number}"[:64],
            display_color=hd.color.CIELabColor.from_rgb(*segment.display_color()),
        )


def _labels_above(array: np.ndarray, largest: int, described: set[int]) -> set[int]:
    """The values of ``array`` that are not 0 and not described; cheap when the largest value is described."""
    if largest == 0 or (largest <= max(described) and set(range(1, largest + 1)) <= described):
        return set()
    found: set[int] = set()
    for plane in array:  # a slice at a time: no temporary the size of the mask
        found.update(int(v) for v in np.unique(plane))
    return found - described - {0}


def _content_label(name: str) -> str:
    """A ContentLabel (CS: capitals, digits, underscores, at most 16) made from the algorithm name."""
    label = "".join(c if c.isalnum() and c.isascii() else "_" for c in name.upper()).strip("_")
    return (label or "SEGMENTATION")[:16]

