"""SecondaryCaptureFactory: the source slices with the mask's outlines burned in, for PACS that show no SEG.

Not every PACS viewer overlays a Segmentation. A secondary capture is an
ordinary picture every viewer shows: each source slice, windowed to 8 bits,
with the outline of each segment drawn in its colour. The pixels are no longer
the scanner's, so each image says so: BurnedInAnnotation ``YES``, ImageType
``DERIVED\\SECONDARY``, a DerivationDescription naming the segments and the
algorithm, and a SourceImageSequence naming the slice it shows::

    captures = SecondaryCaptureFactory(algorithm_name="bone-threshold", algorithm_version="1.0").build(
        mask, source, segments=[Segment(1, "bone")],
    )                                    # one Secondary Capture dataset per slice with a segment

The image is the grinder's volume of the sources (``NumpyGrinder()(source)``,
rescaled) unless you pass the one you already have as ``image``. The window is
``window=(center, width)``, else the sources' first WindowCenter/WindowWidth,
else the 1st to 99th percentile of the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from dicomnode.errors import ConfigurationError, InvalidDatasetError
from dicomnode_numpy import NumpyGrinder, Volume

from .alignment import Alignment, align
from .provenance import ResultFactory, check_sources
from .seg import Segment, segments_of

__all__ = ["SecondaryCaptureFactory", "outline"]

#: the letters of PatientOrientation for the +x, +y, +z patient axes (and their opposites)
_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))


def outline(region: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of a 2D boolean ``region`` that touch a pixel outside it (4-neighbours), ``width`` deep."""
    edge = np.zeros_like(region, dtype=bool)
    inside = region.astype(bool)
    for _ in range(width):
        eroded = inside.copy()
        eroded[1:, :] &= inside[:-1, :]
        eroded[:-1, :] &= inside[1:, :]
        eroded[:, 1:] &= inside[:, :-1]
        eroded[:, :-1] &= inside[:, 1:]
        eroded[0, :] = eroded[-1, :] = False
        eroded[:, 0] = eroded[:, -1] = False
        edge |= inside & ~eroded
        inside = eroded
    return edge


def patient_orientation(cosine: np.ndarray) -> str:
    """PatientOrientation letters of one direction, most significant first (``[0, 1, 0]`` -> ``"P"``)."""
    order = np.argsort(-np.abs(cosine))
    letters = [_LETTERS[axis][0 if cosine[axis] > 0 else 1] for axis in order if abs(cosine[axis]) > 1e-3]
    return "".join(letters)


def _check_window(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if (not isinstance(value, tuple) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or value[1] <= 0):
        raise ConfigurationError(f"window must be None or a (center, width) pair with width > 0, got {value!r}")


def _check_slices(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("mask", "all"):
        raise ConfigurationError(f"slices must be 'mask' (slices with a segment) or 'all', got {value!r}")


def _check_width(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise ConfigurationError(f"outline_width must be an integer from 1 to 10 pixels, got {value!r}")


@attrs.frozen(kw_only=True)
class SecondaryCaptureFactory(ResultFactory):
    """Builds Secondary Capture images of the source slices with segment outlines burned in.

    Parameters (besides those of :class:`~dicomnode_highdicom.provenance.ResultFactory`)
    ----------
    slices:
        ``"mask"`` (default): the slices where a segment has a pixel;
        ``"all"``: every slice.
    window:
        ``(center, width)`` in the image's values; see the module text for the default.
    outline_width:
        pixels of the outline, 1 to 10.

    The SeriesNumber defaults to the source series' plus 1002; InstanceNumber
    is the slice's place along the normal (1-based), so a slice keeps its UID
    when the job runs again.
    """

    slices: str = attrs.field(default="mask", validator=_check_slices)
    window: tuple[float, float] | None = attrs.field(default=None, validator=_check_window)
    outline_width: int = attrs.field(default=1, validator=_check_width)

    kind = "sc"
    series_offset = 1002

    def build(self, mask: Any, source: Sequence[Dataset], *, segments: Sequence[Segment | str],
              image: Any = None) -> list[Dataset]:
        """One Secondary Capture dataset per chosen slice, in slice order.

        ``mask`` is what :meth:`SegFactory.build <dicomnode_highdicom.SegFactory.build>` takes (a float
        mask is outlined where it is at least 0.5).
        """
        sources = check_sources(source, "a secondary capture")
        described = segments_of(segments)
        labels, volume = _labels(mask, described)
        alignment = align(labels.shape[:3], volume, sources)
        if not alignment.on_source_grid:
            raise InvalidDatasetError(
                "secondary captures burn the outlines into the source slices, so the mask must lie on them; "
                "this mask's slices lie elsewhere (another grid): resample it to the source grid first"
            )
        pixels = self._image(image, sources, alignment, labels.shape)
        chosen = [k for k in range(labels.shape[0]) if self.slices == "all" or labels[k].any()]
        center, width = self._window(pixels, chosen, sources)
        series_uid = self.series_uid(sources)
        description = (f"outlines of {', '.join(f'{s.number} {s.label}' for s in described)} burned in by "
                       f"{self.contribution_description}")[:1024]
        captures = []
        for k in chosen:
            rgb = self._picture(pixels(k), labels[k], described, center, width)
            captures.append(self._capture(rgb, k, alignment, series_uid, description))
        return captures

    # -- pixels ---------------------------------------------------------------------------------

    def _image(self, image: Any, sources: list[Dataset], alignment: Alignment, shape: tuple[int, ...]) -> Any:
        """A function from mask slice index to that slice of the image, in the image's values."""
        if image is None:  # the grinder's volume: in layout order
            array = NumpyGrinder()(sources).array
            indices = [int(i) for i in alignment.layout_indices if i is not None]
        elif isinstance(image, Volume):
            matched = align(image.array.shape, image, sources)
            by_layout = {index: k for k, index in enumerate(matched.layout_indices) if index is not None}
            if any(index not in by_layout for index in alignment.layout_indices):
                raise InvalidDatasetError("the image must cover every slice of the mask, on the source slices")
            array = image.array
            indices = [by_layout[index] for index in alignment.layout_indices if index is not None]
        elif isinstance(image, np.ndarray):  # in the mask's own layout
            array = image
            indices = list(range(shape[0]))
        else:
            raise InvalidDatasetError(f"image must be a Volume, an array or None, got {type(image).__name__}")
        if array.ndim != 3 or tuple(array.shape[1:]) != tuple(shape[1:3]) or len(array) < len(indices):
            raise InvalidDatasetError(
                f"the image has shape {array.shape}; it must hold the mask's slices of {shape[1]}x{shape[2]} "
                "pixels (a Volume of the sources, or an array in the mask's layout)"
            )
        return lambda k: array[indices[k]]

    def _window(self, pixels: Any, chosen: list[int], sources: list[Dataset]) -> tuple[float, float]:
        if self.window is not None:
            return float(self.window[0]), float(self.window[1])
        first = sources[0]
        if "WindowCenter" in first and "WindowWidth" in first:
            center, width = first.WindowCenter, first.WindowWidth
            center = center[0] if isinstance(center, Sequence) and not isinstance(center, str) else center
            width = width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width
            if float(width) > 0:
                return float(center), float(width)
        if not chosen:
            return 0.0, 1.0
        sample = np.concatenate([np.asarray(pixels(k))[::4, ::4].ravel() for k in chosen])
        low, high = (float(v) for v in np.percentile(sample, [1, 99]))
        return (low + high) / 2, max(high - low, 1.0)

    def _picture(self, values: np.ndarray, labels: np.ndarray, described: list[Segment], center: float,
                 width: float) -> np.ndarray:
        # the linear VOI function of PS3.3 C.11.2.1.2, to 8 bits
        scaled = ((np.asarray(values, dtype=np.float64) - (center - 0.5)) / (width - 1 if width > 1 else 1) + 0.5)
        gray = (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        for index, segment in enumerate(described):
            region = labels == segment.number if labels.ndim == 2 else labels[:, :, index]
            rgb[outline(region, self.outline_width)] = segment.display_color()
        return rgb

    # -- the dataset ---------------------------------------------------------------------------

    def _capture(self, rgb: np.ndarray, k: int, alignment: Alignment, series_uid: str, description: str) -> Dataset:
        parent = alignment.slice_sources[k]
        assert parent is not None  # on the source grid: checked in build
        number = k + 1
        orientation = [patient_orientation(alignment.row_cosine), patient_orientation(alignment.column_cosine)]
        capture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=parent,
            pixel_array=rgb,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=self.new_series_number(parent),
            sop_instance_uid=self.instance_uid(series_uid, number),
            instance_number=number,
            manufacturer=self.manufacturer,
            pixel_spacing=alignment.pixel_spacing,  # type: ignore[arg-type]  # highdicom types mm as int
            # highdicom takes one letter per direction; an oblique slice gets all of them below
            patient_orientation=(orientation[0][0], orientation[1][0]),
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            contributing_equipment=[self.contributing_equipment()],
            series_description=self.series_description or f"{self.algorithm_name} outlines (burned in)"[:64],
            institution_name=self.institution_name,
            institutional_department_name=self.institutional_department_name,
            specific_character_set=parent.get("SpecificCharacterSet"),
        )
        capture.PatientOrientation = orientation
        for keyword in ("BodyPartExamined", "Laterality"):  # what says whether laterality applies
            if parent.get(keyword):
                setattr(capture, keyword, parent[keyword].value)
        if "BodyPartExamined" not in capture and "Laterality" not in capture:
            setattr(capture, "Laterality", None)  # noqa: B010  # type 2C: unknown without a body part to tell paired from unpaired
        capture.ConversionType = "WSD"  # made by a workstation program, not captured from a screen
        capture.BurnedInAnnotation = "YES"
        capture.DerivationDescription = description
        reference = Dataset()
        reference.ReferencedSOPClassUID = parent.SOPClassUID
        reference.ReferencedSOPInstanceUID = parent.SOPInstanceUID
        if alignment.slice_frames[k] is not None:
            reference.ReferencedFrameNumber = alignment.slice_frames[k]
        capture.SourceImageSequence = DicomSequence([reference])
        return self.checked(capture)


def _labels(mask: Any, described: list[Segment]) -> tuple[np.ndarray, Volume | None]:
    """The mask as labels ``(slices, rows, columns)`` or stacked ``(..., segments)``, and its geometry."""
    if isinstance(mask, (list, tuple)):
        volumes = [m for m in mask if isinstance(m, Volume)]
        arrays = [np.asarray(m.array if isinstance(m, Volume) else m) for m in mask]
        if len(arrays) != len(described) or len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 3:
            raise InvalidDatasetError("a list of masks holds one 3D mask per segment, all of one shape")
        return np.stack([a > 0 for a in arrays], axis=-1), (volumes[0] if volumes else None)
    volume = mask if isinstance(mask, Volume) else None
    array = np.asarray(volume.array if volume is not None else mask)
    if array.ndim != 3:
        raise InvalidDatasetError(f"a mask is a 3D array (slices, rows, columns), got shape {array.shape}")
    if array.dtype.kind == "f":
        array = array >= 0.5
    return array, volume
