"""Philips MR "precise" scaling from the private scale slope.

Philips scanners store three numbers per image: the standard RescaleSlope
(RS) and RescaleIntercept (RI), which give the *displayed* value, and a
private scale slope SS (``2005,100E`` in the ``Philips MR Imaging DD 001``
block) that gives the *floating point* value proportional to the signal:
``FP = (stored * RS + RI) / (RS * SS)``. dcm2niix uses the latter by default
(its ``-p y``); quantitative work across scans needs it, reading a single
image does not.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
from pydicom import Dataset

from dicomnode_numpy import Frame, text_value

__all__ = ["precise_frames", "private_scale_slope"]

_CREATOR = "Philips MR Imaging DD 001"
_PER_FRAME_PRIVATE = (0x2005, 0x140F)


def _scale_slope_in(item: Dataset) -> float | None:
    try:
        block = item.private_block(0x2005, _CREATOR)
        value = block[0x0E].value
    except KeyError:
        return None
    try:
        slope = float(value[0] if isinstance(value, list | tuple) else value)
    except (TypeError, ValueError):
        return None
    return slope if slope != 0.0 else None


def private_scale_slope(dataset: Dataset, frame: int = 0) -> float | None:
    """The Philips private scale slope of ``frame`` of ``dataset``, or None when it has none."""
    if "Philips" not in str(text_value(dataset, "Manufacturer") or ""):  # read raw: once per image
        return None
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        private = per_frame[frame].get(_PER_FRAME_PRIVATE)
        if private is not None and private.value:
            slope = _scale_slope_in(private.value[0])
            if slope is not None:
                return slope
    return _scale_slope_in(dataset)


def precise_frames(frames: Iterable[Frame]) -> list[Frame]:
    """``frames`` with Philips precise scaling as their rescale, where the private slope exists."""
    result = []
    for frame in frames:
        scale = private_scale_slope(frame.header, frame.index)
        if scale is None or frame.slope == 0.0:
            result.append(frame)
            continue
        result.append(attrs.evolve(
            frame,
            slope=1.0 / scale,
            intercept=frame.intercept / (frame.slope * scale),
        ))
    return result
