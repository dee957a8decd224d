"""Derived diffusion volumes: Philips puts the isotropic trace (or ADC) image in the DWI series itself.

A Philips diffusion series holds, besides the b=0 and the directional
volumes, a volume the scanner computed: b > 0 with no gradient direction
(0, 0, 0). Kept, it is one more volume than there are b-values and
directions in the gradient table, so every volume after it lines up with
the wrong direction. dcm2niix leaves such volumes out (and says so), except
where they are all there is to a DWI: a b=0 and one trace image, or a
series with fewer than two volumes besides them. So does
:func:`leave_out_derived`.

The b-value and direction are read from DiffusionBValue (0018,9087) and
DiffusionGradientOrientation (0018,9089), per frame of an enhanced image
(MRDiffusionSequence), else from Philips' private b-value ``(2001,xx03)``
and direction ``(2005,xxB0-B2)``; a direction that is absent counts as
(0, 0, 0), as dcm2niix counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pydicom import Dataset

from dicomnode_numpy import Frame, text_value

__all__ = ["diffusion_of", "leave_out_derived"]

logger = logging.getLogger("dicomnode.nifti")

_PHILIPS_B = (0x2001, "Philips Imaging DD 001", 0x03)
_PHILIPS_DIRECTION = (0x2005, "Philips MR Imaging DD 001", (0xB0, 0xB1, 0xB2))


def _number(value: object) -> float | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return None if value is None or value == "" else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _private(dataset: Dataset, group: int, creator: str, offsets: Sequence[int]) -> list[float | None]:
    try:
        block = dataset.private_block(group, creator)
    except KeyError:
        return [None] * len(offsets)
    values: list[float | None] = []
    for offset in offsets:
        try:
            values.append(_number(block[offset].value))
        except KeyError:
            values.append(None)
    return values


def diffusion_of(frame: Frame) -> tuple[float | None, tuple[float, float, float] | None]:
    """The b-value and gradient direction of one frame (None where the header has none)."""
    header = frame.header
    source: Dataset = header
    per_frame = header.get("PerFrameFunctionalGroupsSequence") if frame.frame_count > 1 else None
    if per_frame is not None and frame.index < len(per_frame):
        items = per_frame[frame.index].get("MRDiffusionSequence")
        if items:
            source = items[0]
            directions = source.get("DiffusionGradientDirectionSequence")
            if directions:
                source = Dataset({**items[0]._dict, **directions[0]._dict})
    b = _number(source.get("DiffusionBValue"))
    direction = source.get("DiffusionGradientOrientation")
    vector = None
    if direction is not None and len(direction) == 3:
        vector = (float(direction[0]), float(direction[1]), float(direction[2]))
    if b is None:
        (b,) = _private(header, _PHILIPS_B[0], _PHILIPS_B[1], (_PHILIPS_B[2],))
    if vector is None:
        parts = _private(header, *_PHILIPS_DIRECTION)
        if all(part is not None for part in parts):
            vector = (float(parts[0] or 0.0), float(parts[1] or 0.0), float(parts[2] or 0.0))
    return b, vector


def _is_derived(frame: Frame) -> bool:
    b, vector = diffusion_of(frame)
    return b is not None and b != 0.0 and (vector is None or not any(vector))


def leave_out_derived(frames: list[Frame]) -> list[Frame]:
    """``frames`` without the derived trace/ADC volumes of a Philips DWI series, as dcm2niix leaves them out.

    Logs what it left out. Other series are returned as they are.
    """
    if not frames or "PHILIPS" not in str(text_value(frames[0].header, "Manufacturer") or "").upper():
        return frames
    derived = [_is_derived(frame) for frame in frames]
    if not any(derived):
        return frames
    normal = np.cross(frames[0].row_cosine, frames[0].column_cosine)
    positions = {round(float(frame.position @ normal), 3) for frame in frames}
    per_volume = max(1, len(positions))
    volumes, left_out = len(frames) // per_volume, sum(derived) // per_volume
    if volumes - left_out < 2:  # a b=0 with one trace image, or nothing but trace: keep them, as dcm2niix does
        return frames
    logger.info("left out %d derived trace/ADC volume(s) of %d in series %s (b > 0 without a gradient "
                "direction), as dcm2niix does", left_out, volumes,
                text_value(frames[0].header, "SeriesInstanceUID") or "?")
    return [frame for frame, is_derived in zip(frames, derived, strict=True) if not is_derived]
