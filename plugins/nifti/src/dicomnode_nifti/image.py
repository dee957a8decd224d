"""A NIfTI image that keeps the scanner's stored integers and their scaling.

nibabel treats an in-memory array as already scaled: saving one makes
nibabel choose a new ``scl_slope``/``scl_inter`` for it, so an int16 CT with
intercept -1024 would come back with an odd slope and rounding. dcm2niix
writes the stored integers with the DICOM rescale as ``scl_slope`` and
``scl_inter``. :class:`ScaledArray` holds stored values and scaling the way
nibabel's own file proxy does (``get_fdata()`` gives rescaled values), and
:class:`ScaledNifti1Image` writes them back exactly as stored.
"""

from __future__ import annotations

import os
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling, native_code

__all__ = ["ScaledArray", "ScaledNifti1Image"]


class ScaledArray:
    """Stored values plus NIfTI scaling; reads as ``stored * slope + inter`` (an array proxy).

    ``slope`` and ``inter`` are kept as float32, the type of the NIfTI header
    fields, so values read here equal values read back from the written file.
    """

    is_proxy = True

    def __init__(self, stored: np.ndarray, slope: float = 1.0, inter: float = 0.0) -> None:
        self._stored = stored
        self.slope = np.float32(slope)
        self.inter = np.float32(inter)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the values."""
        return tuple(self._stored.shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return int(self._stored.ndim)

    @property
    def dtype(self) -> np.dtype:
        """Type of the stored values (what the file holds)."""
        stored: np.dtype = self._stored.dtype
        return stored

    def get_unscaled(self) -> np.ndarray:
        """The stored values, without scaling (no copy)."""
        return self._stored

    def _scaled(self, values: np.ndarray, dtype: Any = None) -> np.ndarray:
        slope, inter = np.asanyarray(self.slope), np.asanyarray(self.inter)
        use = slope.dtype if dtype is None else np.dtype(dtype)
        if np.can_cast(slope, use):
            slope = slope.astype(use)
        if np.can_cast(inter, use):
            inter = inter.astype(use)
        scaled = apply_read_scaling(values, slope, inter)
        if dtype is not None:
            scaled = scaled.astype(np.promote_types(scaled.dtype, dtype), copy=False)
        return np.asarray(scaled)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        values = self._scaled(self._stored, dtype)
        return values if dtype is None else values.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._scaled(np.asarray(self._stored[key]))

    def reshape(self, shape: tuple[int, ...]) -> ScaledArray:
        """The same values with another shape (a view)."""
        return ScaledArray(self._stored.reshape(shape, order="F"), float(self.slope), float(self.inter))


class ScaledNifti1Image(nib.Nifti1Image):
    """A :class:`nibabel.Nifti1Image` whose data are stored values plus scaling.

    ``img.dataobj`` is a :class:`ScaledArray`; ``img.get_fdata()`` gives the
    rescaled values; saving (``nib.save`` / ``img.to_filename``) writes the
    stored type with ``scl_slope``/``scl_inter``, as dcm2niix does. Everything
    else behaves as the nibabel class it is.
    """

    @classmethod
    def from_stored(
        cls,
        stored: np.ndarray,
        affine: np.ndarray,
        *,
        slope: float = 1.0,
        inter: float = 0.0,
        repetition_time: float | None = None,
        dim_info: int = 0,
        slice_code: int = 0,
    ) -> ScaledNifti1Image:
        """An image of ``stored * slope + inter`` with ``affine`` as sform and qform (code 1).

        ``stored`` is indexed ``(i, j, k[, t])``; ``repetition_time`` (seconds)
        becomes the time step of a 4D image. Units are mm and seconds.
        ``dim_info`` and ``slice_code`` are written as they are
        (:mod:`dicomnode_nifti.slices`).
        """
        image = cls(ScaledArray(stored, slope, inter), affine)
        header: Any = image.header  # nibabel's header methods are untyped
        header.set_data_dtype(stored.dtype)
        header.set_sform(affine, code=1)
        header.set_qform(affine, code=1)
        header.set_xyzt_units("mm", "sec")
        header["dim_info"] = dim_info
        header["slice_code"] = slice_code
        if stored.ndim == 4:
            header["pixdim"][4] = repetition_time if repetition_time else 1.0
        return image

    def to_file_map(self, file_map: Any = None, dtype: Any = None, **kwargs: Any) -> Any:
        """Write the stored values and their scaling unchanged (then as nibabel does)."""
        proxy = self._dataobj
        header: Any = self.header  # nibabel's header methods are untyped
        header_dtype = header.get_data_dtype()
        wanted = np.dtype(dtype if dtype is not None else header_dtype)
        if not isinstance(proxy, ScaledArray) or wanted != proxy.dtype:
            # another on-disk type was asked for: nibabel converts (and chooses its own scaling)
            base: Any = super()
            return base.to_file_map(file_map, dtype=dtype, **kwargs)
        if file_map is None:
            file_map = self.file_map
        header = header.copy()
        stored: Any = nib.Nifti1Image(proxy.get_unscaled(), None, header)
        stored.header.set_slope_inter(float(proxy.slope), float(proxy.inter))
        target = _plain_nii_path(file_map)
        if target is not None and _writable_as_is(stored):
            _write_nii(stored, target)
        else:
            stored.to_file_map(file_map)
        self.file_map = file_map
        return None


def _plain_nii_path(file_map: Any) -> str | None:
    """The path of the uncompressed single ``.nii`` file ``file_map`` names, else None."""
    if set(file_map) != {"image"}:
        return None
    holder = file_map["image"]
    if holder.fileobj is not None or holder.filename is None:
        return None
    name = os.fspath(holder.filename)
    return name if name.endswith(".nii") else None


def _writable_as_is(image: Any) -> bool:
    """True when the array's memory is the file's voxel block: NIfTI order, the header's type and byte order."""
    data = np.asanyarray(image.dataobj)
    header = image.header
    return bool(
        type(data) is np.ndarray
        and data.flags.f_contiguous
        and data.dtype == header.get_data_dtype()
        and data.dtype.isnative
        and header.endianness == native_code
    )


def _write_nii(image: Any, path: str) -> None:
    """Write ``image`` as nibabel does, with its voxels in one write of the array's memory.

    nibabel copies the voxels slice by slice on their way to the file; here
    the array (already in the file's order and type) is written as it is.
    The bytes are the same as nibabel's own (a test compares them).
    """
    data = np.asanyarray(image.dataobj)
    image.update_header()
    header = image.header
    with open(path, "wb") as file:
        header.write_to(file)
        file.write(bytes(max(int(header.get_data_offset()) - file.tell(), 0)))
        # the transpose of a Fortran-ordered array is C-ordered: its buffer, as is
        file.write(data.T.data)
