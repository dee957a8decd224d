"""Which source image each slice of a mask lies on, whatever order the images arrived in.

Geometry errors are the most common fault of masks written back to DICOM: a
frame that references the wrong slice, or a mask flipped against its image.
Nothing here guesses from InstanceNumber or arrival order. A mask comes in the
layout of NumpyGrinder's ``Volume.array``: slices ordered along the slice
normal ``cross(row cosine, column cosine)``, rows and columns as stored. The
source images are put in that same layout by the grinder's own
:meth:`~dicomnode_numpy.NumpyGrinder.layout`, so slice ``k`` of the mask lies
on the ``k``-th image of the layout:

- a bare array must have exactly the shape of that layout;
- a :class:`~dicomnode_numpy.volume.Volume` carries its own geometry: each of
  its slices is matched to the source image at the same position, orientation
  and pixel spacing (checked first against the source each slice names in
  ``source_uids``, which spares the layout of the sources); a volume on another
  grid (resampled, cropped) keeps its own plane positions, and highdicom
  references a source image for the frames that lie in one.

The result, an :class:`Alignment`, is what highdicom needs: the source images
in mask order (then highdicom copies each frame's position from its source
image and references it, and no copy of the mask is made), or explicit plane
positions (one multi-frame source, or a mask off the source grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import highdicom as hd
import numpy as np
from pydicom import Dataset

from dicomnode.errors import InvalidDatasetError
from dicomnode_numpy import NumpyGrinder

__all__ = ["Alignment", "align"]

#: how far (mm) a slice may lie from a source image's plane and still be on it
_SAME_PLANE_MM = 0.01
#: largest difference between direction cosines that still is the same orientation
_SAME_ORIENTATION = 1e-4


@attrs.frozen(eq=False)
class Alignment:
    """A mask's slices matched to the source images.

    ``source_images``: what highdicom takes as ``source_images``; when
    ``plane_positions`` is None, ``source_images[k]`` is the image mask slice
    ``k`` lies on. ``slice_sources[k]`` is that image for every mask slice, or
    None for a slice that lies on none; ``slice_frames[k]`` its frame number
    when it is a multi-frame image; ``layout_indices[k]`` the index of that
    image in the grinder's layout (the order of ``NumpyGrinder()(sources).array``).
    ``positions`` are the ``(slices, 3)``
    ImagePositionPatient of the mask's slices; ``row_cosine``,
    ``column_cosine`` and ``pixel_spacing`` (between rows, between columns)
    their orientation and size.
    """

    source_images: list[Dataset]
    slice_sources: list[Dataset | None]
    slice_frames: list[int | None]
    layout_indices: list[int | None]
    positions: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    pixel_spacing: tuple[float, float]
    plane_positions: list[hd.PlanePositionSequence] | None = None
    plane_orientation: hd.PlaneOrientationSequence | None = None
    pixel_measures: hd.PixelMeasuresSequence | None = None

    @property
    def on_source_grid(self) -> bool:
        """True when every mask slice lies on a source image."""
        return all(source is not None for source in self.slice_sources)


def _layout(sources: Sequence[Dataset]) -> Any:
    # accept a tilted CT: the SEG's frames lie on the sources' planes either way
    layout = NumpyGrinder(accept_gantry_tilt=True).layout(sources)
    if len(layout.shape) == 4:
        volumes, slices = layout.shape[:2]
        raise InvalidDatasetError(
            f"the source series holds {volumes} volumes of {slices} slices (a 4D series); a segmentation "
            "covers one volume: pass the datasets of the volume the mask was computed on"
        )
    return layout


def _volume_geometry(volume: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    return (np.asarray(volume.slice_positions()), np.asarray(volume.row_cosine),
            np.asarray(volume.column_cosine), (float(volume.spacing[1]), float(volume.spacing[2])))


def _match(positions: np.ndarray, frames: list[Any], normal: np.ndarray) -> list[int] | None:
    """For each position, the index of the frame in the same plane; None if any has none."""
    along = np.array([float(frame.position @ normal) for frame in frames])
    order = np.argsort(along)
    matched = []
    for position in positions:
        i = int(np.searchsorted(along[order], float(position @ normal)))
        candidates = [int(order[j]) for j in (i - 1, i) if 0 <= j < len(order)]
        best = min(candidates, key=lambda c: float(np.linalg.norm(frames[c].position - position)))
        if float(np.linalg.norm(frames[best].position - position)) > _SAME_PLANE_MM:
            return None
        matched.append(best)
    return matched if len(set(matched)) == len(matched) else None


def _plane_positions(positions: np.ndarray) -> list[hd.PlanePositionSequence]:
    return [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, [float(v) for v in position])
            for position in positions]


def _numbers(dataset: Dataset, keyword: str, count: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in dataset.get(keyword) or []], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if values.shape == (count,) else None


def _by_source_uids(mask_shape: tuple[int, ...], volume: Any, sources: Sequence[Dataset]) -> Alignment | None:
    """The alignment a grinder's Volume names itself: each slice's source by SOPInstanceUID.

    Used only when every slice names a different single-frame source of ``sources`` that lies
    exactly where the slice does, with the volume's orientation, spacing and size; then the
    grinder's layout of the sources (about 0.1 s for 300 images) is not needed. Anything else
    (a multi-frame source, a resampled or edited volume, missing UIDs) returns None.
    """
    uids = tuple(volume.source_uids)
    slices = mask_shape[0]
    if len(uids) != slices or len(set(uids)) != slices or len(sources) != slices:
        return None
    by_uid = {str(ds.get("SOPInstanceUID", "")): ds for ds in sources}
    positions, row, column, spacing = _volume_geometry(volume)
    ordered: list[Dataset] = []
    for k, uid in enumerate(uids):
        dataset = by_uid.get(uid)
        if dataset is None or int(dataset.get("NumberOfFrames") or 1) != 1:
            return None
        position = _numbers(dataset, "ImagePositionPatient", 3)
        orientation = _numbers(dataset, "ImageOrientationPatient", 6)
        pixel_spacing = _numbers(dataset, "PixelSpacing", 2)
        if (position is None or orientation is None or pixel_spacing is None
                or float(np.linalg.norm(position - positions[k])) > _SAME_PLANE_MM
                or float(np.abs(orientation - np.concatenate([row, column])).max()) > _SAME_ORIENTATION
                or not np.allclose(pixel_spacing, spacing, rtol=1e-4, atol=1e-6)
                or (dataset.get("Rows"), dataset.get("Columns")) != tuple(mask_shape[1:3])):
            return None
        ordered.append(dataset)
    # the grinder's layout orders the same images along the normal
    normal = np.cross(row, column)
    layout_indices: list[int | None] = [int(i) for i in np.argsort(np.argsort(positions @ normal, kind="stable"))]
    return Alignment(
        source_images=ordered, slice_sources=list(ordered), slice_frames=[None] * slices,
        layout_indices=layout_indices, positions=positions, row_cosine=row, column_cosine=column,
        pixel_spacing=spacing,
    )


def align(mask_shape: tuple[int, ...], volume: Any, sources: Sequence[Dataset]) -> Alignment:
    """Match the slices of a mask of ``mask_shape`` (and ``volume``'s geometry, if it is a Volume) to ``sources``.

    Raises :class:`~dicomnode.errors.InvalidDatasetError` when the shapes do not
    fit, and :class:`~dicomnode.errors.GrindingError` (from the grinder) when
    the sources do not form one volume.
    """
    if volume is not None:
        known = _by_source_uids(tuple(mask_shape), volume, sources)
        if known is not None:
            return known
    layout = _layout(sources)
    frames = list(layout.frames)
    single_frame = all(frame.frame_count == 1 for frame in frames)
    source_shape = tuple(layout.shape)
    if volume is None:
        if tuple(mask_shape) != source_shape:
            raise InvalidDatasetError(
                f"the mask has shape {tuple(mask_shape)} but the source series forms a volume of shape "
                f"{source_shape} (slices, rows, columns); a bare array must lie on the source grid in "
                "NumpyGrinder's order — pass a Volume to give the mask its own geometry"
            )
        matched: list[int] | None = list(range(len(frames)))
        positions = np.array([frame.position for frame in frames])
        row, column = np.asarray(frames[0].row_cosine), np.asarray(frames[0].column_cosine)
        spacing = (float(frames[0].pixel_spacing[0]), float(frames[0].pixel_spacing[1]))
    else:
        positions, row, column, spacing = _volume_geometry(volume)
        same_grid = (
            tuple(mask_shape[1:]) == source_shape[1:]
            and float(np.abs(row - frames[0].row_cosine).max()) <= _SAME_ORIENTATION
            and float(np.abs(column - frames[0].column_cosine).max()) <= _SAME_ORIENTATION
            and np.allclose(spacing, frames[0].pixel_spacing, rtol=1e-4, atol=1e-6)
        )
        normal = np.cross(frames[0].row_cosine, frames[0].column_cosine)
        matched = _match(positions, frames, normal) if same_grid else None
    if matched is None:  # the mask keeps its own grid; highdicom references what lies in a source plane
        datasets = list({id(frame.dataset): frame.dataset for frame in frames}.values())
        return Alignment(
            source_images=datasets,
            slice_sources=[None] * len(positions),
            slice_frames=[None] * len(positions),
            layout_indices=[None] * len(positions),
            positions=positions, row_cosine=row, column_cosine=column, pixel_spacing=spacing,
            plane_positions=_plane_positions(positions),
            plane_orientation=hd.PlaneOrientationSequence(
                hd.CoordinateSystemNames.PATIENT, [float(v) for v in (*row, *column)]),
            pixel_measures=hd.PixelMeasuresSequence(
                pixel_spacing=list(spacing),
                slice_thickness=float(np.linalg.norm(positions[1] - positions[0])) if len(positions) > 1
                else float(frames[0].slice_thickness or 1.0)),
        )
    ordered = [frames[i] for i in matched]
    slice_sources: list[Dataset | None] = [frame.dataset for frame in ordered]
    slice_frames: list[int | None] = [None if single_frame else frame.index + 1 for frame in ordered]
    indices: list[int | None] = list(matched)
    if single_frame:
        return Alignment(
            source_images=[frame.dataset for frame in ordered], slice_sources=slice_sources,
            slice_frames=slice_frames, layout_indices=indices,
            positions=np.array([frame.position for frame in ordered]), row_cosine=row, column_cosine=column,
            pixel_spacing=spacing,
        )
    # one multi-frame source: its frames are in their own order, so each mask slice says where it lies
    return Alignment(
        source_images=[frames[0].dataset], slice_sources=slice_sources, slice_frames=slice_frames,
        layout_indices=indices, positions=np.array([frame.position for frame in ordered]), row_cosine=row, column_cosine=column,
        pixel_spacing=spacing, plane_positions=_plane_positions(np.array([f.position for f in ordered])),
    )
