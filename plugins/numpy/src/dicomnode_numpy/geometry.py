"""Put the images of a series in patient order and check they form one volume.

Slices are ordered by their position along the slice normal
``cross(row cosine, column cosine)`` (or, for a Siemens mosaic, along the
normal its CSA header names, which may point the other way): InstanceNumber
and arrival order are not geometry and are never used for it. Images that share a position are the
volumes of a 4D series, ordered in time.
"""

from __future__ import annotations

from collections import Counter

import attrs
import numpy as np

from dicomnode.errors import GrindingError

from .frames import Frame

__all__ = ["StackLayout", "arrange"]

#: images closer than this (mm) along the normal are at the same position
_SAME_POSITION_MM = 0.01
#: sine of the largest angle between the slice step and the normal that is not a gantry tilt
_TILT_SINE = 1e-3


@attrs.frozen(eq=False)
class StackLayout:
    """The images of a series in array order, with the volume's geometry.

    ``volumes[v][k]`` is slice ``k`` of volume ``v``; a 3D series has one volume.
    """

    volumes: list[list[Frame]]
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray
    rows: int
    columns: int
    tilt_degrees: float = 0.0

    @property
    def frames(self) -> list[Frame]:
        """Every image, volume by volume, slice by slice."""
        return [frame for volume in self.volumes for frame in volume]

    @property
    def shape(self) -> tuple[int, ...]:
        """``(slices, rows, columns)`` or ``(volumes, slices, rows, columns)``."""
        slices = len(self.volumes[0])
        if len(self.volumes) == 1:
            return (slices, self.rows, self.columns)
        return (len(self.volumes), slices, self.rows, self.columns)


def _check_sizes(frames: list[Frame]) -> tuple[int, int]:
    sizes = Counter((frame.rows, frame.columns) for frame in frames)
    if len(sizes) > 1:
        found = ", ".join(f"{r}x{c} ({n} images)" for (r, c), n in sizes.most_common())
        raise GrindingError(
            f"the images have different sizes (Rows x Columns): {found}; a volume needs one size"
        )
    ((rows, columns),) = sizes
    return rows, columns


def _check_orientation(frames: list[Frame], tolerance: float) -> None:
    reference = frames[0].orientation
    different = [f for f in frames if float(np.abs(f.orientation - reference).max()) > tolerance]
    if different:
        first = different[0]
        raise GrindingError(
            f"the images have mixed orientations: {frames[0].describe()} has ImageOrientationPatient "
            f"{np.round(reference, 5).tolist()} but {first.describe()} has "
            f"{np.round(first.orientation, 5).tolist()} ({len(different)} of {len(frames)} images "
            f"differ by more than {tolerance}); a volume needs one orientation"
        )
    spacing = np.array(frames[0].pixel_spacing)
    odd = [f for f in frames if float(np.abs(np.array(f.pixel_spacing) - spacing).max()) > 1e-4 * max(1.0, spacing.max())]
    if odd:
        raise GrindingError(
            f"the images have different PixelSpacing: {frames[0].describe()} has "
            f"{list(frames[0].pixel_spacing)} but {odd[0].describe()} has {list(odd[0].pixel_spacing)}"
        )


def _group_by_position(frames: list[Frame], normal: np.ndarray) -> list[list[Frame]]:
    distances = np.array([float(frame.position @ normal) for frame in frames])
    order = np.argsort(distances, kind="stable")
    groups: list[list[Frame]] = []
    last = None
    for i in order:
        if last is None or distances[i] - last > _SAME_POSITION_MM:
            groups.append([])
        groups[-1].append(frames[i])
        last = distances[i]
    return groups


def _split_volumes(groups: list[list[Frame]], normal: np.ndarray) -> list[list[Frame]]:
    counts = Counter(len(group) for group in groups)
    if len(counts) > 1:
        volumes = max(counts)
        short = [g for g in groups if len(g) != volumes]
        where = float(short[0][0].position @ normal)
        raise GrindingError(
            f"the positions hold different numbers of images: most hold {counts.most_common(1)[0][0]}, "
            f"but {len(short)} position(s) (the first {where:.3f} mm along the normal) hold "
            f"{len(short[0])}; a volume of the 4D series is incomplete or an image is duplicated"
        )
    volumes = len(groups[0])
    ordered = [sorted(group, key=lambda frame: frame.temporal_key) for group in groups]
    return [[group[v] for group in ordered] for v in range(volumes)]


def _single_slice_spacing(frame: Frame) -> float:
    if frame.spacing_between_slices:
        return abs(frame.spacing_between_slices)
    if frame.slice_thickness:
        return abs(frame.slice_thickness)
    return 1.0


def arrange(
    frames: list[Frame],
    *,
    spacing_tolerance: float = 0.05,
    accept_gantry_tilt: bool = False,
    orientation_tolerance: float = 1e-4,
) -> StackLayout:
    """Order ``frames`` along the slice normal, split 4D series, and check the geometry.

    Parameters
    ----------
    spacing_tolerance:
        largest allowed deviation of a gap between neighbouring slices from the
        mean slice spacing, as a fraction of it (0.05: 5 %).
    accept_gantry_tilt:
        accept slices that are shifted in-plane from one to the next (a CT
        gantry tilt) and describe them with a sheared slice direction instead
        of refusing them.
    orientation_tolerance:
        largest difference between ImageOrientationPatient values of one volume.

    Raises :class:`~dicomnode.errors.GrindingError` on an empty series, mixed
    sizes, orientations or pixel spacings, missing slices, incomplete 4D volumes
    and (unless accepted) gantry tilt.
    """
    if not frames:
        raise GrindingError("no images to grind: the input holds no datasets")
    rows, columns = _check_sizes(frames)
    _check_orientation(frames, orientation_tolerance)
    row_cosine, column_cosine = frames[0].row_cosine, frames[0].column_cosine
    normal = np.cross(row_cosine, column_cosine)
    normal /= np.linalg.norm(normal)
    named = frames[0].slice_normal
    if named is not None and float(named @ normal) < 0:
        normal = -normal  # the header's own slice order (a mosaic's CSA normal) is kept
    groups = _group_by_position(frames, normal)
    volumes = _split_volumes(groups, normal)
    first = volumes[0]
    origin = first[0].position
    direction = np.column_stack([normal, column_cosine, row_cosine])
    row_spacing, column_spacing = first[0].pixel_spacing
    tilt = 0.0
    if len(first) == 1:
        slice_spacing = _single_slice_spacing(first[0])
    else:
        positions = np.array([frame.position for frame in first])
        along = positions @ normal
        gaps = np.diff(along)
        slice_spacing = float((along[-1] - along[0]) / (len(first) - 1))
        worst = int(np.argmax(np.abs(gaps - slice_spacing)))
        if abs(gaps[worst] - slice_spacing) > spacing_tolerance * slice_spacing:
            raise GrindingError(
                f"the slices are unevenly spaced: the gap between slice {worst} and {worst + 1} "
                f"(at {along[worst]:.3f} and {along[worst + 1]:.3f} mm along the normal) is "
                f"{gaps[worst]:.3f} mm, but the mean spacing is {slice_spacing:.3f} mm "
                f"(allowed: ±{100 * spacing_tolerance:g} %); a slice is probably missing "
                f"({len(first)} slices over {along[-1] - along[0]:.3f} mm)"
            )
        step = (positions[-1] - positions[0]) / (len(first) - 1)
        in_plane = step - (step @ normal) * normal
        sine = float(np.linalg.norm(in_plane) / np.linalg.norm(step))
        if sine > _TILT_SINE:
            tilt = float(np.degrees(np.arcsin(min(sine, 1.0))))
            if not accept_gantry_tilt:
                raise GrindingError(
                    f"the slices are tilted: each {slice_spacing:.3f} mm step along the normal also "
                    f"moves {np.linalg.norm(in_plane):.3f} mm in-plane (a gantry tilt of {tilt:.2f}°); "
                    "pass accept_gantry_tilt=True to keep the sheared geometry"
                )
            slice_spacing = float(np.linalg.norm(step))
            direction[:, 0] = step / slice_spacing
    return StackLayout(
        volumes=volumes,
        origin=np.array(origin, dtype=np.float64),
        spacing=np.array([slice_spacing, row_spacing, column_spacing]),
        direction=direction,
        rows=rows,
        columns=columns,
        tilt_degrees=tilt,
    )
