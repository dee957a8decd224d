"""Siemens mosaics: one DICOM image that holds every slice of a volume as tiles.

Siemens EPI (fMRI, diffusion) series store each volume as a mosaic: a grid
of ``ceil(sqrt(n))`` by ``ceil(sqrt(n))`` tiles in one image, where ``n`` is
NumberOfImagesInMosaic from the private CSA image header. The DICOM
ImagePositionPatient describes the whole mosaic as if it were one large
image; the first tile's own position is found by moving from that corner to
where a single tile's corner sits when the tile is centred on the mosaic.
Tiles follow the CSA SliceNormalVector, one slice spacing apart, and the
volume keeps them in that order: its slice direction is the CSA normal,
even where that is opposite to ``cross(row, column)`` (as in many sagittal
mosaics), as dcm2niix orders them, so anything indexed by slice (slice
timing, gradient directions) lines up with its files.

The CSA header is read with nibabel's reader of it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import attrs
import numpy as np
from pydicom import Dataset

from dicomnode.errors import GrindingError

from .frames import Frame
from .header_values import text_value

__all__ = ["is_mosaic", "mosaic_frames", "split_mosaics"]


def _csa_image_header(dataset: Dataset) -> dict[str, Any] | None:
    with warnings.catch_warnings():
        # nibabel warns about its DICOM readers on import; only the CSA parser is used here
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import csareader

    try:
        header: dict[str, Any] | None = csareader.get_csa_header(dataset, "image")  # type: ignore[no-untyped-call]
    except Exception:  # a damaged private header is the same as none: not usable
        return None
    return header


def is_mosaic(dataset: Dataset) -> bool:
    """True for a Siemens mosaic: ImageType holds MOSAIC."""
    image_type = text_value(dataset, "ImageType")
    values = image_type if isinstance(image_type, list) else [image_type]
    return "MOSAIC" in [str(value).upper() for value in values if value]


def split_mosaics(frames: list[Frame]) -> list[Frame]:
    """``frames`` with each Siemens mosaic cut into its tiles (see :func:`mosaic_frames`); others as they are."""
    if frames and is_mosaic(frames[0].header):
        return mosaic_frames(frames)
    return frames


def _csa_value(header: dict[str, Any], name: str, count: int = 1) -> list[float] | None:
    item = header.get("tags", {}).get(name)
    if not item or len(item.get("items", [])) < count:
        return None
    return [float(v) for v in item["items"][:count]]


def mosaic_frames(frames: list[Frame]) -> list[Frame]:
    """Each mosaic frame of ``frames`` replaced by one frame per tile, with the tile's geometry.

    Raises :class:`~dicomnode.errors.GrindingError` when a mosaic lacks the
    CSA values needed (NumberOfImagesInMosaic, SliceNormalVector).
    """
    tiles: list[Frame] = []
    for frame in frames:
        header = _csa_image_header(frame.header)
        count = _csa_value(header, "NumberOfImagesInMosaic") if header else None
        normal = _csa_value(header, "SliceNormalVector", 3) if header else None
        if count is None or normal is None:
            raise GrindingError(
                f"{frame.describe()} is a mosaic (ImageType MOSAIC) but its Siemens CSA image header "
                "has no NumberOfImagesInMosaic or SliceNormalVector; it cannot be split into slices"
            )
        n = int(count[0])
        grid = math.ceil(math.sqrt(n))
        # tiles are the whole part of rows / grid; the remainder is padding at the end
        rows, columns = frame.rows // grid, frame.columns // grid
        if rows == 0 or columns == 0:
            raise GrindingError(
                f"{frame.describe()}: a {frame.rows}x{frame.columns} mosaic cannot hold a "
                f"{grid}x{grid} grid of tiles for its {n} slices"
            )
        row_spacing, column_spacing = frame.pixel_spacing
        corner = (
            frame.position
            + frame.row_cosine * column_spacing * (frame.columns - columns) / 2.0
            + frame.column_cosine * row_spacing * (frame.rows - rows) / 2.0
        )
        step = frame.spacing_between_slices or frame.slice_thickness
        if not step:
            raise GrindingError(
                f"{frame.describe()}: a mosaic needs SpacingBetweenSlices or SliceThickness to place its slices"
            )
        direction = np.array(normal) / np.linalg.norm(normal)
        for k in range(n):
            tiles.append(attrs.evolve(
                frame,
                position=corner + k * step * direction,
                rows=rows,
                columns=columns,
                tile=(k // grid, k % grid),
                spacing_between_slices=step,
                slice_normal=direction,
            ))
    return tiles
