"""NumpyFactory: a numpy volume becomes a DICOM series; NumpyCaller: values computed per slice.

The factory writes the geometry itself, from a :class:`~dicomnode_numpy.volume.Volume`
or, for a bare array, from the parent series sorted along the slice normal (never
by InstanceNumber or arrival order), so the result lies where the data are even
when the parents arrived shuffled::

    factory = NumpyFactory(pipeline_name="liver-segmentation")
    header = factory.build_series_header(parent_series, DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT)
    datasets = factory.build_series(volume, header)

Per series it sets Rows, Columns, the pixel format, ImageOrientationPatient,
PixelSpacing, SliceThickness, the window and the ImageType the modality's IOD
asks for; per slice only what differs: ImagePositionPatient, SliceLocation,
InstanceNumber (1..n along the normal), RescaleSlope/RescaleIntercept when
chosen per slice, the reference to the source image, and the pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.dicom.factory import (
    DicomFactory,
    InstancedVirtualElement,
    InstanceEnvironment,
    SeriesHeader,
)
from dicomnode.dicom.vr_rules import check_vr, make_element, to_tag
from dicomnode.errors import BlueprintError, ConfigurationError, InvalidDatasetError

from .encoding import PixelEncoding, Window, format_ds, plan_encoding, window_for
from .volume import Volume

__all__ = ["NumpyCaller", "NumpyFactory"]

logger = logging.getLogger("dicomnode.numpy.factory")

#: the single-frame storage class written for each modality
IMAGE_STORAGE = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
# multi-frame classes of the same modalities: a result is written as single frames
_MULTI_FRAME_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2": "CT",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.4": "MR",  # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.130": "PT",  # Enhanced PET
    "1.2.840.10008.5.1.4.1.1.128.1": "PT",  # Legacy Converted Enhanced PET
}

_TAG_PIXEL_DATA = BaseTag(0x7FE00010)
_TAG_IMAGE_POSITION = BaseTag(0x00200032)
_TAG_SLICE_LOCATION = BaseTag(0x00201041)
_TAG_INSTANCE_NUMBER = BaseTag(0x00200013)
_TAG_RESCALE_SLOPE = BaseTag(0x00281053)
_TAG_RESCALE_INTERCEPT = BaseTag(0x00281052)
_TAG_SOURCE_IMAGES = BaseTag(0x00082112)
_TAG_IMAGE_INDEX = BaseTag(0x00541330)
_TAG_TEMPORAL_POSITION = BaseTag(0x00200100)
_TAG_REFERENCED_CLASS = BaseTag(0x00081150)
_TAG_REFERENCED_INSTANCE = BaseTag(0x00081155)
_TAG_MEDIA_CLASS = BaseTag(0x00020002)
_TAG_MEDIA_INSTANCE = BaseTag(0x00020003)
_TAG_TRANSFER_SYNTAX = BaseTag(0x00020010)
# per-slice values the factory always sets: a blueprint's per-instance rule for them
# (say, copying ImagePositionPatient by InstanceNumber) would only be overwritten
_WRITTEN_PER_SLICE = frozenset({
    _TAG_PIXEL_DATA, _TAG_IMAGE_POSITION, _TAG_SLICE_LOCATION, _TAG_INSTANCE_NUMBER,
    _TAG_RESCALE_SLOPE, _TAG_RESCALE_INTERCEPT,
})


def _window_option(value: Any) -> Window | str | None:
    """The ``window`` option checked: "auto", None or a Window (a ``(center, width)`` pair becomes one)."""
    if isinstance(value, tuple) and len(value) == 2:
        return Window(center=float(value[0]), width=float(value[1]))
    if value is None or value == "auto" or isinstance(value, Window):
        return value  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"window must be 'auto' (the data's range), None (keep the blueprint's), a Window or a "
        f"(center, width) pair, got {value!r}"
    )


@attrs.define
class _Geometry:
    """Where every slice of one volume lies, and which source image each came from."""

    positions: np.ndarray  # (slices, 3)
    orientation: list[float]
    pixel_spacing: tuple[float, float]
    slice_distance: float
    normal: np.ndarray
    sources: list[tuple[str, str] | None]  # per slice of the whole (possibly 4D) array: its source


class NumpyFactory(DicomFactory):
    """Builds a DICOM image series from a numpy volume and a :class:`SeriesHeader`.

    Parameters
    ----------
    per_slice_rescale:
        choose RescaleSlope/RescaleIntercept per slice (each slice keeps the
        full 16-bit resolution) instead of once per series. PET results are
        always written with RescaleIntercept 0, as its IOD requires.
    window:
        ``"auto"`` (default) sets WindowCenter/WindowWidth to show the whole
        range of the data; a :class:`~dicomnode_numpy.encoding.Window` or a
        ``(center, width)`` pair sets them; None keeps what the blueprint gives.
    reference_sources:
        give every instance a SourceImageSequence naming the source image of
        its slice (from the volume's ``source_uids`` or the sorted parents).

    Other keyword arguments (``pipeline_name``, ``uid_prefix``, ...) are those
    of :class:`~dicomnode.dicom.factory.DicomFactory`.
    """

    def __init__(
        self,
        *,
        per_slice_rescale: bool = False,
        window: Window | tuple[float, float] | str | None = "auto",
        reference_sources: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.per_slice_rescale = bool(per_slice_rescale)
        self.window = _window_option(window)
        self.reference_sources = bool(reference_sources)

    # -- the public entry ------------------------------------------------------------------------

    def build_series(
        self,
        image: Any,
        header: SeriesHeader,
        parent_series: Sequence[Dataset] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """One dataset per slice of ``image`` (a :class:`Volume` or an array on the parents' grid).

        ``parent_series`` defaults to the parents the header was built from.
        A 4D image ``(volumes, slices, rows, columns)`` gives volume after
        volume, each numbered along the normal.
        """
        parents = list(parent_series) if parent_series is not None else list(header.parent_series)
        array, geometry = self._geometry(image, parents)
        if array.ndim not in (3, 4):
            raise InvalidDatasetError(
                f"NumpyFactory writes arrays of shape (slices, rows, columns) or "
                f"(volumes, slices, rows, columns), got shape {array.shape}"
            )
        slices = array.shape[-3]
        volumes = 1 if array.ndim == 3 else array.shape[0]
        shared = Dataset(dict(header.dataset.items()))
        modality = str(shared.get("Modality", "") or "")
        encoding = plan_encoding(array, per_slice=self.per_slice_rescale, zero_intercept=modality == "PT")
        self._set_shared(shared, array, geometry, encoding, modality, volumes)
        series = SeriesHeader(shared, self._instance_elements(header, geometry), parents)
        # InstanceNumber runs along the normal even if the volume's slices run the other way
        forward = float(np.dot(geometry.positions[-1] - geometry.positions[0], geometry.normal)) >= 0
        total = volumes * slices
        datasets: list[Dataset] = []
        scratch = np.empty(array.shape[-2:], dtype=np.float64)
        for index in range(total):
            volume_index, k = divmod(index, slices)
            along = k if forward else slices - 1 - k
            number = volume_index * slices + along + 1
            # indexing, not reshaping: a reshape of a strided view (a NIfTI image) could copy it all
            values = array[volume_index, k] if array.ndim == 4 else array[k]
            stored = encoding.encode_slice(index, values, scratch)
            env = InstanceEnvironment(
                number,
                kwargs=kwargs or {},
                header_dataset=shared,
                image=values,
                factory=self,
                intercept=float(encoding.intercepts[index]),
                slope=float(encoding.slopes[index]),
                scaled_image=stored,
                total_images=total,
            )
            dataset = series.instantiate(env)
            self._set_per_slice(dataset, index, k, number, geometry, encoding, stored, modality, volumes,
                                volume_index)
            datasets.append(dataset)
        datasets.sort(key=lambda ds: int(ds.InstanceNumber))
        logger.debug("built %d %s instances of series %s", len(datasets), modality or "image",
                     shared.get("SeriesInstanceUID"))
        return datasets

    def _instance_elements(self, header: SeriesHeader, geometry: _Geometry) -> list[InstancedVirtualElement]:
        """The header's per-instance elements, without those whose value the factory writes anyway."""
        written = set(_WRITTEN_PER_SLICE)
        if self.reference_sources and all(source is not None for source in geometry.sources):
            written.add(_TAG_SOURCE_IMAGES)
        return [element for element in header.instance_elements if element.tag not in written]

    # -- geometry ------------------------------------------------------------------------------

    def _geometry(self, image: Any, parents: Sequence[Dataset]) -> tuple[np.ndarray, _Geometry]:
        if isinstance(image, Volume):
            return image.array, self._volume_geometry(image, parents)
        if isinstance(image, np.ndarray):
            return image, self._parent_geometry(image, parents)
        raise InvalidDatasetError(
            f"NumpyFactory builds a series from a Volume or a numpy array, got {type(image).__name__}"
        )

    def _volume_geometry(self, volume: Volume, parents: Sequence[Dataset]) -> _Geometry:
        positions = volume.slice_positions()
        normal = np.cross(volume.row_cosine, volume.column_cosine)
        by_uid = {str(p.SOPInstanceUID): p for p in parents if "SOPInstanceUID" in p}
        total = int(np.prod(volume.shape[:-2]))
        sources: list[tuple[str, str] | None] = [None] * total
        if len(volume.source_uids) == total:
            sources = [_reference(by_uid[uid]) if uid in by_uid else None for uid in volume.source_uids]
        elif parents and not volume.source_uids:
            sources = _sources_by_position(volume, positions, parents)
        return _Geometry(
            positions=positions,
            orientation=volume.image_orientation,
            pixel_spacing=(float(volume.spacing[1]), float(volume.spacing[2])),
            slice_distance=abs(float(volume.spacing[0] * np.dot(volume.slice_direction, normal))),
            normal=normal,
            sources=sources,
        )

    def _parent_geometry(self, array: np.ndarray, parents: Sequence[Dataset]) -> _Geometry:
        if not parents:
            raise InvalidDatasetError(
                "a bare array has no geometry of its own: give NumpyFactory.build_series a Volume, or "
                "the parent series whose grid the array lies on"
            )
        from .frames import frames_of
        from .geometry import arrange

        layout = arrange(frames_of(parents), spacing_tolerance=0.05, accept_gantry_tilt=True)
        if tuple(layout.shape) != tuple(array.shape):
            raise InvalidDatasetError(
                f"the array has shape {array.shape} but the parent series forms a volume of shape "
                f"{layout.shape}; pass a Volume with the array's own geometry instead"
            )
        direction = np.asarray(layout.direction)
        volume = Volume(
            array=array,
            origin=layout.origin,
            spacing=layout.spacing,
            direction=direction,
            source_uids=tuple(frame.sop_instance_uid for frame in layout.frames),
        )
        return self._volume_geometry(volume, parents)

    # -- shared values -------------------------------------------------------------------------

    def _set_shared(self, ds: Dataset, array: np.ndarray, geometry: _Geometry, encoding: PixelEncoding,
                    modality: str, volumes: int) -> None:
        sop_class = str(ds.get("SOPClassUID", "") or "")
        if modality in IMAGE_STORAGE and (not sop_class or sop_class in _MULTI_FRAME_STORAGE):
            ds.SOPClassUID = IMAGE_STORAGE[modality]
        elif not sop_class:
            raise BlueprintError(
                f"the header has no SOPClassUID and the Modality {modality or '(none)'} does not choose "
                f"one; add CopyElement('SOPClassUID') (with a parent) or a StaticElement for it "
                f"(modalities chosen automatically: {', '.join(sorted(IMAGE_STORAGE))})"
            )
        ds.ImageType = _image_type(ds.get("ImageType"), modality)
        ds.SamplesPerPixel = 1
        if ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
            ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[-2]), int(array.shape[-1])
        ds.BitsAllocated = encoding.bits_allocated
        ds.BitsStored = encoding.bits_stored
        ds.HighBit = encoding.high_bit
        ds.PixelRepresentation = encoding.pixel_representation
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue",
                        "WindowCenterWidthExplanation", "VOILUTFunction", "ModalityLUTSequence",
                        "VOILUTSequence", "NumberOfFrames"):
            if keyword in ds:
                del ds[keyword]
        ds.ImageOrientationPatient = [format_ds(v) for v in geometry.orientation]
        ds.PixelSpacing = [format_ds(v) for v in geometry.pixel_spacing]
        ds.SliceThickness = format_ds(geometry.slice_distance)
        if modality == "MR":
            ds.SpacingBetweenSlices = format_ds(geometry.slice_distance)
        for keyword in ("RescaleSlope", "RescaleIntercept"):
            if keyword in ds:
                del ds[keyword]
        shared_rescale = len(set(encoding.slopes)) == 1 and len(set(encoding.intercepts)) == 1
        if _writes_rescale(encoding, modality) and shared_rescale:
            ds.RescaleSlope = encoding.slopes[0]
            ds.RescaleIntercept = encoding.intercepts[0]
        if modality == "CT" and "RescaleType" not in ds:
            # what a CT without RescaleType means anyway; a blueprint sets another type for other units
            ds.RescaleType = "HU"
        if modality == "PT":
            ds.NumberOfSlices = int(array.shape[-3])
            if volumes > 1:
                ds.NumberOfTimeSlices = volumes
        if modality == "MR" and volumes > 1:
            ds.NumberOfTemporalPositions = volumes
        window = self.window
        if window == "auto":
            window = window_for(encoding.minimum, encoding.maximum)
        if isinstance(window, Window):
            ds.WindowCenter = window.center_text
            ds.WindowWidth = window.width_text

    # -- per slice -----------------------------------------------------------------------------

    def _set_per_slice(self, ds: Dataset, index: int, k: int, number: int, geometry: _Geometry,
                       encoding: PixelEncoding, stored: np.ndarray, modality: str, volumes: int,
                       volume_index: int) -> None:
        position = geometry.positions[k]
        ds[_TAG_IMAGE_POSITION] = _text(_TAG_IMAGE_POSITION, "DS", "\\".join(format_ds(v) for v in position))
        ds[_TAG_SLICE_LOCATION] = _text(_TAG_SLICE_LOCATION, "DS",
                                        format_ds(float(np.dot(position, geometry.normal))))
        ds[_TAG_INSTANCE_NUMBER] = _text(_TAG_INSTANCE_NUMBER, "IS", str(number))
        if _TAG_RESCALE_SLOPE not in ds and _writes_rescale(encoding, modality):
            ds[_TAG_RESCALE_SLOPE] = _text(_TAG_RESCALE_SLOPE, "DS", encoding.slopes[index])
            ds[_TAG_RESCALE_INTERCEPT] = _text(_TAG_RESCALE_INTERCEPT, "DS", encoding.intercepts[index])
        if modality == "PT":
            ds[_TAG_IMAGE_INDEX] = DataElement(_TAG_IMAGE_INDEX, "US", number)
        if modality == "MR" and volumes > 1:
            ds[_TAG_TEMPORAL_POSITION] = _text(_TAG_TEMPORAL_POSITION, "IS", str(volume_index + 1))
        reference = geometry.sources[index] if self.reference_sources else None
        if reference is not None:
            ds[_TAG_SOURCE_IMAGES] = DataElement(_TAG_SOURCE_IMAGES, "SQ", DicomSequence([_reference_item(reference)]))
        if "SOPInstanceUID" not in ds:
            ds.SOPInstanceUID = self.uids.random_uid()
        ds[_TAG_PIXEL_DATA] = DataElement(_TAG_PIXEL_DATA, "OW", np.ascontiguousarray(stored).tobytes())
        meta = FileMetaDataset()
        meta[_TAG_MEDIA_CLASS] = _text(_TAG_MEDIA_CLASS, "UI", str(ds.SOPClassUID))
        meta[_TAG_MEDIA_INSTANCE] = _text(_TAG_MEDIA_INSTANCE, "UI", str(ds.SOPInstanceUID))
        meta[_TAG_TRANSFER_SYNTAX] = _EXPLICIT_LITTLE
        ds.file_meta = meta


def _text(tag: BaseTag, vr: str, text: str) -> RawDataElement:
    """An element from its text as it is written to a file.

    The text was made valid here (DS of at most 16 characters, UIDs from a
    dataset), so it is stored encoded, as pydicom stores what it reads: checked
    and converted only if someone reads the value. Thousands of slices then
    cost no per-value parsing.
    """
    encoded = text.encode("ascii")
    if len(encoded) % 2:
        encoded += b"\0" if vr == "UI" else b" "
    return RawDataElement(tag, vr, len(encoded), encoded, 0, False, True)


# every instance is written Explicit VR Little Endian; a raw element is immutable, so one serves all
_EXPLICIT_LITTLE = _text(_TAG_TRANSFER_SYNTAX, "UI", str(ExplicitVRLittleEndian))


def _writes_rescale(encoding: PixelEncoding, modality: str) -> bool:
    """The MR IOD has no rescale: leave it out when the stored values are the real ones."""
    identity = encoding.exact and set(encoding.slopes) == {"1"} and set(encoding.intercepts) == {"0"}
    return not (modality == "MR" and identity)


def _image_type(current: Any, modality: str) -> list[str]:
    """ImageType for a derived image, with the values the modality's IOD requires."""
    values = [] if current in (None, "") else ([str(current)] if isinstance(current, str) else
                                               [str(v) for v in current])
    values = values + [""] * max(0, 2 - len(values))
    values[0] = "DERIVED"
    # the PET image module allows only PRIMARY as value 2
    values[1] = "PRIMARY" if modality == "PT" else (values[1] or "SECONDARY")
    if modality == "CT" and (len(values) < 3 or values[2] not in ("AXIAL", "LOCALIZER")):
        values = [*values[:2], "AXIAL", *values[3:]]
    if modality == "MR" and (len(values) < 3 or not values[2]):
        # the MR image module requires a third value; OTHER is its defined term for "none of these"
        values = [*values[:2], "OTHER", *values[3:]]
    return values


def _plane_key(position: Any, orientation: Any) -> tuple[float, ...]:
    # positions written as DS text agree to far better than 1 µm; a coarser key would merge slices
    return tuple(round(float(v), 3) for v in (*position, *orientation))


def _sources_by_position(volume: Volume, positions: np.ndarray, parents: Sequence[Dataset]
                         ) -> list[tuple[str, str] | None]:
    """Each slice's parent image: the one in exactly the same plane (single-frame parents only)."""
    planes: dict[tuple[float, ...], Dataset] = {}
    for parent in parents:
        if "ImagePositionPatient" in parent and "ImageOrientationPatient" in parent:
            planes[_plane_key(parent.ImagePositionPatient, parent.ImageOrientationPatient)] = parent
    orientation = [round(v, 6) for v in volume.image_orientation]
    slices = volume.slice_count
    total = int(np.prod(volume.shape[:-2]))
    found: list[tuple[str, str] | None] = []
    for index in range(total):
        match = planes.get(_plane_key(positions[index % slices], orientation))
        found.append(None if match is None else _reference(match))
    return found


def _reference(parent: Dataset) -> tuple[str, str]:
    """What a source image reference names: (SOPClassUID, SOPInstanceUID)."""
    return str(parent.SOPClassUID), str(parent.SOPInstanceUID)


def _reference_item(reference: tuple[str, str]) -> Dataset:
    item = Dataset()
    item[_TAG_REFERENCED_CLASS] = _text(_TAG_REFERENCED_CLASS, "UI", reference[0])
    item[_TAG_REFERENCED_INSTANCE] = _text(_TAG_REFERENCED_INSTANCE, "UI", reference[1])
    return item


@attrs.frozen
class NumpyCaller(InstancedVirtualElement):
    """A per-instance element whose value is ``func`` of the slice being written.

    ``func`` receives the stored integers of the slice (what the file holds,
    e.g. for Smallest/LargestImagePixelValue), or with ``values="real"`` the
    real values (after RescaleSlope/Intercept). Numpy scalars become plain
    numbers; None gives no element.

    >>> NumpyCaller("LargestImagePixelValue", "US", np.max)   # doctest: +SKIP
    """

    tag: BaseTag = attrs.field(converter=to_tag)
    vr: str = attrs.field(default="US")
    func: Callable[[np.ndarray], Any] = attrs.field(default=None)
    values: str = attrs.field(default="stored", kw_only=True)

    @vr.validator
    def _check_vr(self, _attribute: attrs.Attribute[str], vr: str) -> None:
        check_vr(self.tag, vr, "NumpyCaller")

    @func.validator
    def _check_func(self, _attribute: attrs.Attribute[Any], func: Any) -> None:
        if not callable(func):
            raise BlueprintError(f"NumpyCaller({self.tag}): func must be callable, got {func!r}")

    @values.validator
    def _check_values(self, _attribute: attrs.Attribute[str], values: str) -> None:
        if values not in ("stored", "real"):
            raise BlueprintError(
                f"NumpyCaller({self.tag}): values must be 'stored' or 'real', got {values!r}")

    def produce(self, env: InstanceEnvironment) -> DataElement | None:
        """``func`` of this instance's slice."""
        array = env.scaled_image if self.values == "stored" else env.image
        if array is None:
            raise BlueprintError(
                f"NumpyCaller({self.tag}) needs the slice being written; use it with NumpyFactory"
            )
        value = self.func(np.asarray(array))
        if value is None:
            return None
        return make_element(self.tag, self.vr, _plain(value, self.vr), "NumpyCaller")


def _plain(value: Any, vr: str) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v, vr) for v in value.tolist()] if value.ndim else _plain(value.item(), vr)
    if isinstance(value, np.generic):
        value = value.item()
    if vr in ("US", "SS", "UL", "SL", "IS", "SV", "UV") and isinstance(value, float) and value.is_integer():
        return int(value)
    if vr == "DS" and isinstance(value, (float, int)):
        return format_ds(float(value))
    return value

