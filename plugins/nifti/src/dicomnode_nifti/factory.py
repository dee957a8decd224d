"""NiftiFactory: a NIfTI image becomes a DICOM series, placed by its affine.

The voxel layout is the one :class:`~dicomnode_nifti.grinder.NiftiGrinder` and
dcm2niix write: voxel ``(i, j, k[, t])`` is column ``i``, row ``rows - 1 - j``
and slice ``k`` of volume ``t``, and the affine maps voxels to RAS. The factory
turns the affine back into DICOM's LPS geometry, so a series ground to NIfTI and
built again lies exactly where it was, and hands the volume to
:class:`~dicomnode_numpy.NumpyFactory` for the rest (pixel encoding, window,
ImageType, per-slice positions).

No parent series is needed: :func:`standalone_blueprint` makes a complete
CT or MR series from the image alone, with patient and study from ``kwargs``::

    factory = NiftiFactory()
    header = factory.build_series_header(None, standalone_blueprint("MR"),
                                         {"patient_id": "P1", "patient_name": "Doe^Jane"})
    datasets = factory.build_series(nibabel.load("result.nii.gz"), header)

A blueprint that copies from a parent (``CopyElement``) needs one; without it
the header cannot be built and the error names the element.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
from pydicom import Dataset

from dicomnode.dicom.blueprints import DEFAULT_BLUEPRINT, new_series_uid
from dicomnode.dicom.factory import (
    Blueprint,
    SeriesContext,
    SeriesElement,
    SeriesHeader,
    StaticElement,
)
from dicomnode.errors import ConfigurationError, InvalidDatasetError
from dicomnode_numpy import IMAGE_STORAGE, NumpyFactory, Volume

__all__ = ["NiftiFactory", "nifti_to_volume", "standalone_blueprint"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _snapped(affine: np.ndarray) -> np.ndarray:
    """The affine with float32 noise taken off.

    A NIfTI file stores its affine as float32, so 0.8 mm comes back as
    0.800000011920929. An entry that is exactly a float32 value is replaced by
    the shortest decimal that float32 reads as the same number (0.8): the value
    the writer meant. Entries that are not float32 values are left alone.
    """
    result = np.array(affine, dtype=np.float64)
    flat = result.reshape(-1)
    for index, value in enumerate(flat):
        single = np.float32(value)
        if float(single) == value:
            flat[index] = float(np.format_float_positional(single))
    return result


def _values(image: nib.Nifti1Image) -> np.ndarray:
    """The real voxel values, as integers when the scaling is whole, float64 otherwise."""
    proxy = image.dataobj
    if not hasattr(proxy, "get_unscaled"):
        return np.asarray(proxy)
    stored = np.asarray(proxy.get_unscaled())
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    if not np.isfinite(slope) or slope == 0:  # nibabel's "no scaling"
        slope, inter = 1.0, 0.0
    if not np.isfinite(inter):
        inter = 0.0
    if slope == 1.0 and inter == 0.0:
        return stored
    if stored.dtype.kind in "iub" and slope.is_integer() and inter.is_integer():
        # 16-bit values with a modest whole scaling (CT's -1024) fit int32: half the memory of int64
        small = stored.dtype.itemsize <= 2 and abs(slope) < 2**14 and abs(inter) < 2**30
        whole = stored.astype(np.int32 if small else np.int64)
        whole *= int(slope)
        whole += int(inter)
        return whole
    return stored * slope + inter


def nifti_to_volume(image: nib.Nifti1Image) -> Volume:
    """The image as a :class:`~dicomnode_numpy.Volume`: DICOM voxel order and LPS geometry.

    The array is a view of the image's values ``(t, k, rows - 1 - j, i)``;
    no pixel is copied when the values need no scaling.
    """
    values = _values(image)
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim not in (3, 4):
        raise InvalidDatasetError(
            f"NiftiFactory writes 3D images (i, j, k) or 4D images (i, j, k, t), got shape {values.shape}"
        )
    # (i, j, k[, t]) -> ([t,] k, j, i), then rows top first
    array = values.transpose(tuple(range(values.ndim))[::-1])[..., ::-1, :]
    rows = array.shape[-2]
    lps = _RAS_TO_LPS @ _snapped(np.asarray(image.affine, dtype=np.float64))
    column_step, row_step_up, slice_step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    origin = lps[:3, 3] + row_step_up * (rows - 1)
    steps = np.column_stack([slice_step, -row_step_up, column_step])
    spacing = np.linalg.norm(steps, axis=0)
    if np.any(spacing == 0):
        raise InvalidDatasetError(
            f"the NIfTI affine gives a voxel size of 0 along an axis (voxel sizes {spacing.tolist()}); "
            f"the image has no usable geometry"
        )
    return Volume(array=array, origin=origin, spacing=spacing, direction=steps / spacing)


class NiftiFactory(NumpyFactory):
    """Builds a DICOM series from a :class:`nibabel.Nifti1Image` (or any nibabel spatial image).

    Takes the options of :class:`~dicomnode_numpy.NumpyFactory`. A parent
    series is optional: with one, its source images are referenced where a
    slice lies exactly on a parent slice.
    """

    def build_series(
        self,
        image: Any,
        header: SeriesHeader,
        parent_series: Sequence[Dataset] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """One dataset per slice of the NIfTI image ``image`` (a 4D image: volume after volume)."""
        if isinstance(image, Volume | np.ndarray):
            return super().build_series(image, header, parent_series, kwargs)
        if not hasattr(image, "affine") or not hasattr(image, "dataobj"):
            raise InvalidDatasetError(
                f"NiftiFactory builds a series from a nibabel image, got {type(image).__name__}"
            )
        return super().build_series(nifti_to_volume(image), header, parent_series, kwargs)


# --------------------------------------------------------------------------- without a parent


def _from_kwargs(keyword: str, vr: str, name: str, default: Any = "") -> SeriesElement:
    def produce(context: SeriesContext) -> Any:
        return context.kwargs.get(name, default)

    return SeriesElement(keyword, vr, produce)


def _uid_from_kwargs(keyword: str, name: str) -> SeriesElement:
    def produce(context: SeriesContext) -> Any:
        given = context.kwargs.get(name)
        return str(given) if given else context.factory.uids.random_uid()

    return SeriesElement(keyword, "UI", produce)


_MODALITY_ELEMENTS: dict[str, list[StaticElement]] = {
    "CT": [StaticElement("KVP", "DS", None), StaticElement("AcquisitionNumber", "IS", None)],
    "MR": [
        StaticElement("ScanningSequence", "CS", "RM"),
        StaticElement("SequenceVariant", "CS", "NONE"),
        StaticElement("ScanOptions", "CS", None),
        StaticElement("MRAcquisitionType", "CS", None),
        StaticElement("EchoTime", "DS", None),
        StaticElement("RepetitionTime", "DS", None),
        StaticElement("EchoTrainLength", "IS", None),
    ],
}


def standalone_blueprint(modality: str = "MR") -> Blueprint:
    """A blueprint for a complete series without a parent, of ``modality`` ``"CT"`` or ``"MR"``.

    Patient and study come from the ``kwargs`` given to ``build_series_header``:
    ``patient_name``, ``patient_id``, ``patient_birth_date``, ``patient_sex``,
    ``study_instance_uid``, ``study_date``, ``study_time``, ``accession_number``,
    ``frame_of_reference_uid``, ``patient_position`` (e.g. ``HFS``), plus ``series_description`` and
    ``series_number`` as for every series. Missing values stay empty (they
    are type 2) and missing UIDs are new. MR images are marked research mode
    (ScanningSequence ``RM``): the acquisition is not known.
    """
    if modality not in _MODALITY_ELEMENTS:
        raise ConfigurationError(
            f"standalone_blueprint makes {' or '.join(sorted(_MODALITY_ELEMENTS))} series, got {modality!r}; "
            f"for another modality build the header from a parent series"
        )
    return DEFAULT_BLUEPRINT + Blueprint([
        StaticElement("SOPClassUID", "UI", IMAGE_STORAGE[modality]),
        _from_kwargs("PatientName", "PN", "patient_name"),
        _from_kwargs("PatientID", "LO", "patient_id"),
        _from_kwargs("PatientBirthDate", "DA", "patient_birth_date"),
        _from_kwargs("PatientSex", "CS", "patient_sex"),
        _uid_from_kwargs("StudyInstanceUID", "study_instance_uid"),
        _from_kwargs("StudyDate", "DA", "study_date"),
        _from_kwargs("StudyTime", "TM", "study_time"),
        _from_kwargs("AccessionNumber", "SH", "accession_number"),
        StaticElement("StudyID", "SH", None),
        StaticElement("ReferringPhysicianName", "PN", None),
        StaticElement("Modality", "CS", modality),
        # type 2C when the body part is unknown (it might be a paired one): present and empty
        StaticElement("Laterality", "CS", None),
        _from_kwargs("PatientPosition", "CS", "patient_position"),
        SeriesElement("SeriesInstanceUID", "UI", new_series_uid),
        _uid_from_kwargs("FrameOfReferenceUID", "frame_of_reference_uid"),
        StaticElement("PositionReferenceIndicator", "LO", None),
        *_MODALITY_ELEMENTS[modality],
    ])
