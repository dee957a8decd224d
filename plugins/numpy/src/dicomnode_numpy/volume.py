"""The image a grinder hands to ``process``: voxels plus where they are in the patient.

A bare array throws away what a factory needs to write results back (and what
a reader needs to know left from right), so the data and its geometry travel
together in one :class:`Volume`.

Coordinates are DICOM patient coordinates (LPS: x to the patient's left, y to
the back, z to the head), in millimetres.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import numpy as np

__all__ = ["Volume"]


def _as_vector(value: object) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.shape != (3,):
        raise ValueError(f"expected 3 numbers, got shape {array.shape}: {value!r}")
    return array


def _as_matrix(value: object) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (3, 3):
        raise ValueError(f"direction must be a 3x3 matrix, got shape {array.shape}")
    return array


def _as_uids(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(uid) for uid in value)


def _check_array(instance: Volume, attribute: attrs.Attribute[np.ndarray], value: np.ndarray) -> None:
    if not isinstance(value, np.ndarray) or value.ndim not in (3, 4):
        shape = getattr(value, "shape", None)
        raise ValueError(
            "Volume.array must be a numpy array of shape (slices, rows, columns) or "
            f"(volumes, slices, rows, columns), got shape {shape}"
        )


@attrs.frozen(eq=False)
class Volume:
    """Voxels of one series with their position in patient space.

    Attributes
    ----------
    array:
        ``(slices, rows, columns)``, or ``(volumes, slices, rows, columns)`` for
        a 4D series. Slices are ordered by position along the slice normal,
        never by InstanceNumber or arrival order.
    origin:
        ``(3,)`` LPS position in mm of voxel ``[0, 0, 0]``: the
        ImagePositionPatient of the first slice.
    spacing:
        ``(3,)`` mm along the array axes: slice spacing, row spacing
        (PixelSpacing[0], the distance between rows) and column spacing
        (PixelSpacing[1]).
    direction:
        ``(3, 3)``; its columns are the LPS unit vectors of the array axes
        (slice, row, column): ``[:, 0]`` the slice direction (the normal
        ``cross(row cosine, column cosine)``, or the actual slice-to-slice
        direction of an accepted gantry tilt), ``[:, 1]`` down the rows
        (ImageOrientationPatient[3:6]), ``[:, 2]`` along a row
        (ImageOrientationPatient[0:3]).
    frame_of_reference_uid:
        FrameOfReferenceUID of the source, if it had one.
    source_uids:
        SOPInstanceUIDs of the source images in array slice order (for a 4D
        volume: volume by volume). A multi-frame source repeats its UID once per
        frame.

    Example
    -------
    >>> volume.affine @ [k, r, c, 1]   # LPS position of voxel array[k, r, c]
    """

    array: np.ndarray = attrs.field(validator=_check_array)
    origin: np.ndarray = attrs.field(converter=_as_vector)
    spacing: np.ndarray = attrs.field(converter=_as_vector)
    direction: np.ndarray = attrs.field(converter=_as_matrix)
    frame_of_reference_uid: str | None = None
    source_uids: tuple[str, ...] = attrs.field(default=(), converter=_as_uids)

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` LPS affine: ``(slice, row, column, 1) -> (x, y, z, 1)`` in mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * self.spacing
        affine[:3, 3] = self.origin
        return affine

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`array`."""
        return tuple(self.array.shape)

    @property
    def is_4d(self) -> bool:
        """True when the array holds several volumes (its first axis)."""
        return bool(self.array.ndim == 4)

    @property
    def slice_count(self) -> int:
        """Number of slices of one volume."""
        return int(self.array.shape[-3])

    @property
    def rows(self) -> int:
        """Rows of a slice (DICOM Rows)."""
        return int(self.array.shape[-2])

    @property
    def columns(self) -> int:
        """Columns of a slice (DICOM Columns)."""
        return int(self.array.shape[-1])

    @property
    def row_cosine(self) -> np.ndarray:
        """Direction along a row: ImageOrientationPatient[0:3]."""
        return np.array(self.direction[:, 2])

    @property
    def column_cosine(self) -> np.ndarray:
        """Direction down a column: ImageOrientationPatient[3:6]."""
        return np.array(self.direction[:, 1])

    @property
    def slice_direction(self) -> np.ndarray:
        """Unit vector from one slice to the next."""
        return np.array(self.direction[:, 0])

    @property
    def image_orientation(self) -> list[float]:
        """ImageOrientationPatient of every slice: row cosine then column cosine."""
        return [float(v) for v in (*self.row_cosine, *self.column_cosine)]

    @property
    def pixel_spacing(self) -> list[float]:
        """PixelSpacing of every slice: ``[row spacing, column spacing]``."""
        return [float(self.spacing[1]), float(self.spacing[2])]

    @property
    def slice_spacing(self) -> float:
        """Distance in mm between consecutive slices."""
        return float(self.spacing[0])

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient (LPS mm, centre of the first pixel) of slice ``k``."""
        if not -self.slice_count <= k < self.slice_count:
            raise IndexError(f"slice {k} is outside 0..{self.slice_count - 1}")
        k %= self.slice_count
        return np.asarray(self.origin + k * self.spacing[0] * self.direction[:, 0])

    def slice_positions(self) -> np.ndarray:
        """``(slices, 3)`` ImagePositionPatient of every slice."""
        steps = np.arange(self.slice_count, dtype=np.float64)[:, None]
        return np.asarray(self.origin[None, :] + steps * self.spacing[0] * self.direction[:, 0][None, :])

    def voxel_to_patient(self, index: object) -> np.ndarray:
        """LPS position in mm of ``(slice, row, column)`` indices (one or ``(n, 3)``)."""
        points = np.asarray(index, dtype=np.float64)
        return np.asarray(points @ (self.direction * self.spacing).T + self.origin)

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, dtype={self.array.dtype}, "
            f"spacing={np.round(self.spacing, 4).tolist()}, origin={np.round(self.origin, 3).tolist()})"
        )
