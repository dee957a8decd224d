"""Storing real-valued pixels as DICOM integers: rescale, quantisation, DS text.

A DICOM image stores integers; the real value of a pixel is
``stored * RescaleSlope + RescaleIntercept``. :func:`plan_encoding` chooses the
integer type and the slope and intercept for a volume (one pair for the whole
series, or one per slice), and :meth:`PixelEncoding.encode_slice` turns one
slice into the integers to store, so a series is written one slice at a time
without a second copy of the volume in memory.

The slope and intercept written to the file are decimal strings of at most 16
characters (the limit of the DS value representation). The integers are
computed from exactly those strings, not from the unrounded floats, so a reader
that decodes with the file's values recovers every pixel to within half a
quantisation step (``RescaleSlope / 2``). Integer data (or float data holding
whole numbers) that fits 16 bits is stored exactly, with slope 1.

    >>> import numpy as np
    >>> volume = np.linspace(-1.0, 1.0, 2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    >>> plan = plan_encoding(volume)
    >>> stored = plan.encode_slice(0, volume[0])
    >>> real = stored * float(plan.slopes[0]) + float(plan.intercepts[0])
    >>> bool(np.abs(real - volume[0]).max() <= float(plan.slopes[0]) / 2)
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal
from typing import Literal

import attrs
import numpy as np

from dicomnode.errors import ConfigurationError, InvalidDatasetError

__all__ = [
    "DS_MAX_LENGTH",
    "PixelEncoding",
    "Window",
    "format_ds",
    "plan_encoding",
    "window_for",
]

#: the longest text a DS (decimal string) value may have
DS_MAX_LENGTH = 16

Rounding = Literal["nearest", "up", "down"]
_ROUNDING = {"nearest": ROUND_HALF_EVEN, "up": ROUND_CEILING, "down": ROUND_FLOOR}

_UINT16: np.dtype = np.dtype("<u2")
_INT16: np.dtype = np.dtype("<i2")


def format_ds(value: float, rounding: Rounding = "nearest") -> str:
    """``value`` as a DICOM decimal string of at most 16 characters, as precise as fits.

    ``rounding`` says which way to go when the value does not fit exactly:
    ``"up"`` never gives less than ``value``, ``"down"`` never more. The
    shortest text that keeps the chosen precision is used (``0.1`` stays
    ``"0.1"``), in fixed notation when it fits and scientific otherwise.

    >>> format_ds(0.1), format_ds(-1024), format_ds(1 / 3), format_ds(2.5e-12)
    ('0.1', '-1024', '0.33333333333333', '0.0000000000025')
    """
    number = float(value)
    if not math.isfinite(number):
        raise InvalidDatasetError(f"a DS value must be a finite number, got {value!r}")
    if number == 0.0:
        return "0"
    mode = _ROUNDING.get(rounding)
    if mode is None:
        raise ConfigurationError(f"rounding must be one of {sorted(_ROUNDING)}, got {rounding!r}")
    exact = Decimal(number)
    # 17 significant digits represent every double; fewer are tried until the text fits
    for digits in range(17, 0, -1):
        rounded = Context(prec=digits, rounding=mode).plus(exact).normalize()
        text = _decimal_text(rounded)
        if len(text) <= DS_MAX_LENGTH:
            return text
    raise AssertionError(f"no DS text found for {value!r}")  # pragma: no cover - one digit always fits


def _decimal_text(number: Decimal) -> str:
    fixed = format(number, "f")
    if len(fixed) <= DS_MAX_LENGTH:
        return fixed
    return format(number, "e").replace("e+", "e")


@attrs.frozen
class Window:
    """A VOI window in real (rescaled) units: WindowCenter and WindowWidth."""

    center: float
    width: float

    def __attrs_post_init__(self) -> None:
        if not (math.isfinite(self.center) and math.isfinite(self.width)) or self.width < 1:
            raise ConfigurationError(
                f"a window needs a finite center and a width of at least 1, got center={self.center!r}, "
                f"width={self.width!r}"
            )

    @property
    def center_text(self) -> str:
        """WindowCenter as DS text."""
        return format_ds(self.center)

    @property
    def width_text(self) -> str:
        """WindowWidth as DS text."""
        return format_ds(self.width)


def window_for(minimum: float, maximum: float) -> Window:
    """The window that shows the whole range ``minimum``..``maximum`` (width at least 1)."""
    return Window(center=(minimum + maximum) / 2, width=max(1.0, maximum - minimum))


@attrs.frozen
class PixelEncoding:
    """How a volume's slices are stored: integer type and one slope/intercept per slice.

    ``slopes`` and ``intercepts`` are the DS texts written to RescaleSlope and
    RescaleIntercept, one per slice (all equal unless chosen per slice).
    ``pixel_representation`` is 0 for unsigned and 1 for signed storage; 16
    bits are allocated and stored.
    """

    dtype: np.dtype = attrs.field(eq=False)
    slopes: tuple[str, ...]
    intercepts: tuple[str, ...]
    exact: bool
    minimum: float
    maximum: float

    bits_allocated = 16
    bits_stored = 16
    high_bit = 15

    @property
    def pixel_representation(self) -> int:
        """0 for unsigned, 1 for two's complement storage."""
        return 1 if self.dtype.kind == "i" else 0

    def encode_slice(self, index: int, values: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
        """The integers to store for slice ``index`` whose real values are ``values``.

        ``scratch`` is an optional float64 array of the slice's shape that is
        reused for the arithmetic (a writer of many slices saves allocating it
        each time).
        """
        info = np.iinfo(self.dtype)
        if self.exact:
            intercept = int(Decimal(self.intercepts[index]))
            if intercept == 0 and values.dtype == self.dtype:
                return values
            if values.dtype.kind in "iub":
                shifted = values.astype(np.int64) - intercept
            else:
                shifted = np.rint(values - intercept)
            return np.clip(shifted, info.min, info.max).astype(self.dtype)
        if scratch is None or scratch.shape != values.shape:
            scratch = np.empty(values.shape, dtype=np.float64)
        # float64 keeps the rounding exact for float32 input; one slice at a time keeps it small
        np.subtract(values, float(self.intercepts[index]), out=scratch, dtype=np.float64)
        scratch *= 1.0 / float(self.slopes[index])
        np.rint(scratch, out=scratch)
        np.clip(scratch, info.min, info.max, out=scratch)
        return np.asarray(scratch.astype(self.dtype))

    def decode_slice(self, index: int, stored: np.ndarray) -> np.ndarray:
        """The real values a reader obtains from the stored integers of slice ``index``."""
        return np.asarray(stored * float(self.slopes[index]) + float(self.intercepts[index]))

    def step(self, index: int) -> float:
        """The quantisation step of slice ``index``: values are kept to within half of it."""
        return float(self.slopes[index])


def _finite_range(values: np.ndarray, what: str) -> tuple[float, float]:
    low, high = float(np.min(values)), float(np.max(values))
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = "NaN" if math.isnan(low) or math.isnan(high) else "infinite values"
        raise InvalidDatasetError(
            f"{what} contains {bad}; DICOM pixels must be finite numbers — replace them (e.g. with "
            f"numpy.nan_to_num) before building the series"
        )
    return low, high


def _is_whole(array: np.ndarray) -> bool:
    if array.dtype.kind in "iub":
        return True
    if array.dtype.kind != "f":
        raise InvalidDatasetError(
            f"pixel data must be integer or floating point numbers, got an array of dtype {array.dtype}"
        )
    # slice by slice, so the check never holds a second copy of the volume
    return all(np.array_equal(part, np.rint(part)) for part in _slices(array))


def _slices(array: np.ndarray) -> Iterator[np.ndarray]:
    """The 2D slices of ``array`` in order, as views (a reshape of a strided view could copy it)."""
    for index in np.ndindex(*array.shape[:-2]):
        yield array[index]


def _exact_plan(low: float, high: float, count: int, zero_intercept: bool) -> PixelEncoding | None:
    """Whole numbers that fit 16 bits are stored as they are."""
    if low >= 0 and high <= 65535:
        dtype, intercept = _UINT16, 0
    elif low >= -32768 and high <= 32767:
        dtype, intercept = _INT16, 0
    elif not zero_intercept and high - low <= 65535:
        dtype, intercept = _UINT16, int(low)
    else:
        return None
    return PixelEncoding(
        dtype=dtype,
        slopes=("1",) * count,
        intercepts=(format_ds(intercept),) * count,
        exact=True,
        minimum=low,
        maximum=high,
    )


def _storage_type(low: float, zero_intercept: bool) -> np.dtype:
    """Unsigned storage unless the intercept must be 0 and the data go below it."""
    return _INT16 if zero_intercept and low < 0 else _UINT16


def _quantised(low: float, high: float, dtype: np.dtype, zero_intercept: bool) -> tuple[str, str]:
    """Slope and intercept texts that map ``low..high`` onto the integers of ``dtype``."""
    if zero_intercept:
        intercept = "0"
        slope = max(-min(low, 0.0) / 32768, high / 32767) if dtype == _INT16 else high / 65535
    else:
        intercept = format_ds(low, "down")
        slope = (high - float(intercept)) / 65535
    if slope <= 0:  # a constant slice: any positive slope stores it exactly
        slope = 1.0
    # rounding the slope up keeps the top of the range inside the integer type
    return format_ds(slope, "up"), intercept


def plan_encoding(
    array: np.ndarray,
    *,
    per_slice: bool = False,
    zero_intercept: bool = False,
) -> PixelEncoding:
    """Choose how to store ``array`` (slices first: ``(slices, rows, columns)`` or more dims).

    ``per_slice``
        One RescaleSlope/RescaleIntercept per slice (each slice keeps the
        full 16-bit resolution) instead of one for the whole series.
    ``zero_intercept``
        RescaleIntercept is always 0, as the PET image module requires; the
        sign of the data chooses unsigned or signed storage.
    """
    if array.ndim < 3:
        raise InvalidDatasetError(
            f"a volume needs at least 3 dimensions (slices, rows, columns), got shape {array.shape}"
        )
    if array.size == 0:
        raise InvalidDatasetError(f"the volume is empty (shape {array.shape})")
    count = int(np.prod(array.shape[:-2]))
    whole = _is_whole(array)
    low, high = _finite_range(array, "the volume")
    if whole:
        plan = _exact_plan(low, high, count, zero_intercept)
        if plan is not None:
            return plan
    dtype = _storage_type(low, zero_intercept)
    if per_slice:
        lows = array.min(axis=(-2, -1)).astype(np.float64).reshape(-1).tolist()
        highs = array.max(axis=(-2, -1)).astype(np.float64).reshape(-1).tolist()
    else:
        lows, highs = [low], [high]
    pairs = [_quantised(lo, hi, dtype, zero_intercept) for lo, hi in zip(lows, highs)]
    if not per_slice:
        pairs = pairs * count
    return PixelEncoding(
        dtype=dtype,
        slopes=tuple(slope for slope, _ in pairs),
        intercepts=tuple(intercept for _, intercept in pairs),
        exact=False,
        minimum=low,
        maximum=high,
    )
