"""NiftiGrinder: a series of DICOM images becomes a NIfTI image laid out as dcm2niix writes it.

The conventions, checked against dcm2niix's own output by the parity tests:

- voxel ``(i, j, k[, t])`` is column ``i``, row ``rows - 1 - j`` (rows are
  stored bottom first), slice ``k`` counted along the slice normal
  ``cross(row cosine, column cosine)``, volume ``t`` in time order;
- the affine is the DICOM (LPS) geometry turned into RAS, written as both
  sform and qform with code 1 (scanner);
- the stored integer type is kept with the DICOM rescale as ``scl_slope`` /
  ``scl_inter`` (unsigned 16-bit values with fewer than 16 stored bits become
  int16); series whose slices have different rescales become float32;
- 3D acquisitions (MRAcquisitionType ``3D``) are turned to the nearest RAS
  orientation, as dcm2niix does by default;
- the time step of a 4D image is RepetitionTime, plus GE's slice-group
  delay (0043,107C) where there is one; Philips MR is scaled to the private
  "precise" values (dcm2niix's defaults);
- Siemens mosaics are split into slices using the CSA header;
- ``dim_info`` and ``slice_code`` are set where dcm2niix sets them
  (:mod:`dicomnode_nifti.slices`);
- the derived trace/ADC volumes of a Philips DWI series are left out, with a
  log line (:mod:`dicomnode_nifti.diffusion`).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from pydicom import Dataset

from dicomnode.errors import ConfigurationError
from dicomnode.extension.grinders import Grinder
from dicomnode_numpy import (
    Frame,
    StackLayout,
    arrange,
    fill,
    frames_of,
    split_mosaics,
    unloaded_datasets,
)

from .diffusion import leave_out_derived
from .image import ScaledNifti1Image
from .philips import precise_frames
from .slices import dim_info, slice_code
from .timing import time_step

__all__ = ["NiftiGrinder", "nifti_affine"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_affine(layout_affine: np.ndarray, rows: int) -> np.ndarray:
    """RAS affine of NIfTI voxels ``(column, rows - 1 - row, slice)`` from the LPS affine of ``(slice, row, column)``."""
    lps = np.eye(4)
    lps[:, 0] = layout_affine[:, 2]
    lps[:, 1] = -layout_affine[:, 1]
    lps[:, 2] = layout_affine[:, 0]
    lps[:3, 3] = layout_affine[:3, 3] + layout_affine[:3, 1] * (rows - 1)
    return _LPS_TO_RAS @ lps


def _nearest_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip and permute the voxel axes (views, no copy) so they run closest to R, A and S."""
    transform = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))  # type: ignore[no-untyped-call]
    turned = affine @ inv_ornt_aff(transform, data.shape)  # type: ignore[no-untyped-call]
    return apply_orientation(data, transform), turned  # type: ignore[no-untyped-call]


def _layout_affine(layout: StackLayout) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = layout.direction * layout.spacing
    affine[:3, 3] = layout.origin
    return affine


def _check_fraction(instance: NiftiGrinder, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigurationError(
            f"NiftiGrinder {attribute.name} is {value!r}; it is a fraction of the slice spacing, 0 <= x < 1"
        )


@attrs.frozen
class NiftiGrinder(Grinder):
    """Grind a series into a :class:`nibabel.Nifti1Image` with dcm2niix's conventions.

    The image is a :class:`~dicomnode_nifti.image.ScaledNifti1Image`: its
    ``get_fdata()`` gives rescaled values, and saving it writes the stored
    integers with ``scl_slope``/``scl_inter`` exactly as dcm2niix would.

    Parameters
    ----------
    rotate_3d_to_ras:
        turn 3D acquisitions (MRAcquisitionType ``3D``, one volume) to the
        nearest RAS orientation, as dcm2niix does by default (its ``-x n``);
        ``False`` keeps the acquisition's voxel order (dcm2niix ``-x i``).
    philips_precise_scaling:
        for Philips MR with private scale slopes, scale to the "floating point"
        values instead of the displayed ones, as dcm2niix does by default
        (its ``-p y``); ``False`` keeps the displayed values (``-p n``).
    keep_derived_diffusion:
        keep the derived trace/ADC volumes of a Philips DWI series
        (b > 0 without a gradient direction) instead of leaving them out as
        dcm2niix does.
    spacing_tolerance, accept_gantry_tilt:
        as for :class:`~dicomnode_numpy.NumpyGrinder`.

    Example
    -------
    >>> image = NiftiGrinder()(datasets)
    >>> image.to_filename("series.nii")
    """

    rotate_3d_to_ras: bool = True
    philips_precise_scaling: bool = True
    keep_derived_diffusion: bool = False
    spacing_tolerance: float = attrs.field(default=0.05, validator=_check_fraction)
    accept_gantry_tilt: bool = False

    def __call__(self, datasets: Iterable[Dataset]) -> nib.Nifti1Image:
        """Grind ``datasets`` (one series) into a NIfTI image.

        Raises :class:`~dicomnode.errors.GrindingError` when the images do not
        form one volume (see :class:`~dicomnode_numpy.NumpyGrinder`).
        """
        datasets = list(datasets)
        forget = unloaded_datasets(datasets)
        frames = split_mosaics(frames_of(datasets))
        if not self.keep_derived_diffusion:
            frames = leave_out_derived(frames)
        if self.philips_precise_scaling:
            frames = precise_frames(frames)
        layout = arrange(frames, spacing_tolerance=self.spacing_tolerance,
                         accept_gantry_tilt=self.accept_gantry_tilt)
        first = layout.frames[0].header
        three_d = str(first.get("MRAcquisitionType", "")).upper() == "3D"
        repetition = time_step(first)
        stored, slope, inter = self._values(layout, forget)
        affine = nifti_affine(_layout_affine(layout), layout.rows)
        # (v, k, j, i) in memory is NIfTI's (i, j, k, t) in Fortran order: a transpose, no copy
        data = stored.transpose(tuple(range(stored.ndim))[::-1])
        if self.rotate_3d_to_ras and three_d and data.ndim == 3 and data.shape[2] > 1:
            data, affine = _nearest_ras(data, affine)
        seconds = repetition if data.ndim == 4 else None
        return ScaledNifti1Image.from_stored(data, affine, slope=slope, inter=inter, repetition_time=seconds,
                                             dim_info=dim_info(first),
                                             slice_code=slice_code(first, layout.frames[-1].header))

    def _values(self, layout: StackLayout, forget: set[int]) -> tuple[np.ndarray, float, float]:
        """Stored values (rows flipped) and one scaling, or float32 values when rescales differ."""
        frames: list[Frame] = layout.frames
        scales = {(frame.slope, frame.intercept) for frame in frames}
        if len(scales) == 1:
            ((slope, inter),) = scales
            formats = {frame.pixel_format for frame in frames}
            dtype = np.dtype(np.result_type(*{f.dtype for f in formats}))
            if dtype == np.uint16 and all(f.bits_stored < 16 for f in formats):
                dtype = np.dtype(np.int16)  # every stored value fits, and int16 is what dcm2niix writes
            return fill(layout, dtype, rescale=False, flip_rows=True, forget=forget), slope, inter
        # float32 arithmetic, as dcm2niix computes it, so the values are identical to its own
        values = fill(layout, np.dtype(np.float32), rescale=True, flip_rows=True, forget=forget,
                      float_arithmetic="float32")
        return values, 1.0, 0.0
