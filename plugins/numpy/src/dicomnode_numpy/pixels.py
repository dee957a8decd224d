"""Read stored pixel values frame by frame and fill one preallocated array.

Uncompressed pixel data are read as views of the dataset's own buffer (no
copy); compressed transfer syntaxes are decoded one frame at a time by
pydicom's pixel handlers. Rescale is applied slice by slice into the output,
so the only allocation the size of the volume is the output itself.

Datasets that were not yet read from disk when grinding began (a
:class:`dicomnode.dicom.lazy.LazyDataset` whose pixel data are still in its
file) never hold their pixel data: each frame is read from the file straight
into its slot of the output when its bytes are already the output's values,
or into one frame-sized buffer of the reader otherwise. Those that must be
read whole (compressed, deflated) forget them again as soon as they are
copied. So a node holding thousands of slices on disk never has them all in
memory at once. (Lazy datasets whose header was not read either stay unread:
:func:`~dicomnode_numpy.frames.frames_of` scans their files instead.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.uid import UID, ExplicitVRBigEndian

from dicomnode.dicom.lazy import read_value_range
from dicomnode.errors import GrindingError

from .header_values import int_value, text_value

if TYPE_CHECKING:
    from .frames import Frame
    from .geometry import StackLayout

__all__ = ["PixelFile", "PixelFormat", "PixelReader", "choose_dtype", "fill", "stored_as", "unloaded_datasets"]

_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
_INTEGER_CANDIDATES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64)


@functools.lru_cache(maxsize=64)
def _uid(value: str) -> UID:
    return UID(value)


def _transfer_syntax(dataset: Dataset) -> UID | None:
    meta = getattr(dataset, "file_meta", None)
    syntax = text_value(meta, "TransferSyntaxUID") if meta is not None else None
    if isinstance(syntax, list):
        syntax = syntax[0]
    return _uid(str(syntax)) if syntax else None


def _uid_of(dataset: Dataset) -> str:
    """The SOPInstanceUID that names ``dataset`` in an error (read raw: pydicom's conversion is not free)."""
    return str(text_value(dataset, "SOPInstanceUID") or "<no SOPInstanceUID>")


@attrs.frozen
class PixelFormat:
    """How the stored values of one dataset are encoded (read from its header only)."""

    bits_allocated: int
    bits_stored: int
    signed: bool
    syntax: UID | None
    rows: int
    columns: int
    frame_count: int

    @classmethod
    def of(cls, dataset: Dataset, syntax: UID | None = None) -> PixelFormat:
        """The pixel format of ``dataset`` (``syntax``: its transfer syntax, when its file meta is not at hand).

        Refuses what the grinder cannot read.
        """
        bits = int_value(dataset, "BitsAllocated", 16) or 16
        if bits not in (8, 16, 32):
            raise GrindingError(f"image {_uid_of(dataset)} has BitsAllocated {bits}; supported: 8, 16, 32")
        rows, columns = int_value(dataset, "Rows"), int_value(dataset, "Columns")
        if not rows or not columns:
            raise GrindingError(
                f"image {_uid_of(dataset)} has Rows {rows} and Columns {columns}; both must be positive"
            )
        return cls(
            bits_allocated=bits,
            bits_stored=int_value(dataset, "BitsStored", bits) or bits,
            signed=int_value(dataset, "PixelRepresentation", 0) == 1,
            syntax=syntax if syntax is not None else _transfer_syntax(dataset),
            rows=rows,
            columns=columns,
            frame_count=int_value(dataset, "NumberOfFrames", 1) or 1,
        )

    @property
    def compressed(self) -> bool:
        """True for an encapsulated (compressed) transfer syntax."""
        return bool(self.syntax is not None and self.syntax.is_compressed)

    @property
    def stored_dtype(self) -> np.dtype:
        """The numpy type of the stored values, with the byte order of the buffer."""
        order = ">" if self.syntax == ExplicitVRBigEndian else "<"
        return np.dtype(f"{order}{'i' if self.signed else 'u'}{self.bits_allocated // 8}")

    @property
    def dtype(self) -> np.dtype:
        """The stored type in native byte order."""
        native: np.dtype = np.dtype(self.stored_dtype.str[1:])
        return native

    def value_range(self) -> tuple[int, int]:
        """Smallest and largest value the stored bits can hold."""
        if self.signed:
            return -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
        return 0, (1 << self.bits_stored) - 1


def _pixel_data_in_file(dataset: Dataset) -> int | None:
    """Length of the PixelData value when it is still in the file and can be read from there in parts.

    That is a :class:`~dicomnode.dicom.lazy.LazyDataset` whose pixel data
    were not read yet and are not encapsulated; None for anything else.
    """
    if not callable(getattr(type(dataset), "read_value_into", None)):
        return None
    element = dataset.get_item(_PIXEL_DATA, keep_deferred=True)
    if isinstance(element, RawDataElement) and element.value is None \
            and element.length not in (0, _UNDEFINED_LENGTH):
        return int(element.length)
    return None


@attrs.frozen(eq=False)
class PixelFile:
    """Pixel data waiting in a file: the file and its deferred PixelData element (defined length)."""

    path: Path
    element: RawDataElement

    def read(self, view: memoryview, offset: int) -> bool:
        """Read bytes ``offset`` on of the value into ``view``; always True (the bytes are in the file)."""
        read_value_range(self.path, self.element, view, offset)
        return True


class PixelReader:
    """Stored values of the frames of one dataset, before any rescale.

    Pixel data still in a file (``pixel_file``, or a lazy dataset's whose
    header is read) are read from there frame by frame into one frame-sized
    buffer of the reader (the dataset never holds them); pixel data in memory
    are viewed in place; compressed ones are decoded.
    """

    def __init__(self, dataset: Dataset, pixel_format: PixelFormat, pixel_file: PixelFile | None = None) -> None:
        self.dataset = dataset
        self.format = pixel_format
        self.rows, self.columns = pixel_format.rows, pixel_format.columns
        self.frame_count = frame_count = pixel_format.frame_count
        rows, columns = self.rows, self.columns
        self._buffer: bytes | None = None
        self._in_file = False
        self._read_bytes: Callable[[memoryview, int], bool] = self._read_lazy
        self._scratch: np.ndarray | None = None
        self._scratch_index = -1
        if not self.format.compressed:
            if pixel_file is not None:
                in_file: int | None = int(pixel_file.element.length)
                self._read_bytes = pixel_file.read
            else:
                in_file = _pixel_data_in_file(dataset)
            self._in_file = in_file is not None
            buffer = dataset.PixelData if in_file is None else None
            length = len(buffer) if buffer is not None else in_file or 0
            needed = frame_count * rows * columns * self.format.stored_dtype.itemsize
            if length < needed:
                raise GrindingError(
                    f"image {_uid_of(dataset)} has {length} bytes of PixelData, "
                    f"but {frame_count} frame(s) of {rows}x{columns} at "
                    f"{self.format.bits_allocated} bits need {needed}"
                )
            self._buffer = buffer

    def _read_lazy(self, view: memoryview, offset: int) -> bool:
        read: bool = self.dataset.read_value_into(_PIXEL_DATA, view, offset)
        return read

    def frame(self, index: int) -> np.ndarray:
        """``(rows, columns)`` stored values of frame ``index`` (0-based).

        The array may be a view of the reader's own buffer: it is valid until
        the next call.
        """
        dtype = self.format.stored_dtype
        count = self.rows * self.columns
        values = self._read_from_file(index, dtype, count) if self._in_file else None
        if values is None:
            if self._buffer is None:
                return self._decode(index)
            values = np.frombuffer(self._buffer, dtype=dtype, count=count, offset=index * count * dtype.itemsize)
        values = values.reshape(self.rows, self.columns)
        shift = dtype.itemsize * 8 - self.format.bits_stored
        if self.format.signed and shift > 0:
            # the unused high bits may hold anything; extend the sign of the stored bits
            values = (values.astype(self.format.dtype) << shift) >> shift
        return values

    def _read_from_file(self, index: int, dtype: np.dtype, count: int) -> np.ndarray | None:
        """Frame ``index`` read straight from the file into the reader's buffer (once for all tiles of a mosaic).

        None when the dataset has read its pixel data into memory meanwhile
        (another thread asked for them); the reader uses those from then on.
        """
        if self._scratch is None:
            self._scratch = np.empty(count, dtype=dtype)
        if self._scratch_index != index:
            self._scratch_index = -1  # a failed read leaves no stale frame behind
            # a byte view: memoryview cannot cast a big-endian array's format
            if not self._read_bytes(self._scratch.view(np.uint8).data, index * count * dtype.itemsize):
                self._use_memory()
                return None
            self._scratch_index = index
        return self._scratch

    def read_into(self, index: int, out: np.ndarray) -> bool:
        """Read the stored bytes of frame ``index`` from the file straight into ``out``; True if it did.

        ``out`` is a C-contiguous ``(rows, columns)`` array whose type has the
        stored values' bytes (see :func:`stored_as`). False, with ``out``
        untouched, when the pixel data are not waiting in a file: use
        :meth:`frame` then.
        """
        if not self._in_file:
            return False
        size = self.rows * self.columns * self.format.stored_dtype.itemsize
        if self._read_bytes(out.view(np.uint8).data, index * size):
            return True
        self._use_memory()
        return False

    def _use_memory(self) -> None:
        """The dataset has read its pixel data meanwhile (another thread asked for them): use those."""
        self._in_file, self._scratch = False, None
        self._buffer = self.dataset.PixelData

    def _decode(self, index: int) -> np.ndarray:
        from pydicom.pixels.utils import pixel_array

        try:
            values = pixel_array(self.dataset, index=index if self.frame_count > 1 else None)
        except Exception as exc:  # pydicom raises many kinds for a missing or failing decoder
            name = self.format.syntax.name if self.format.syntax is not None else "unknown"
            raise GrindingError(
                f"cannot decode the pixel data of image {_uid_of(self.dataset)} (transfer syntax {name}): "
                f"{_first_line(exc)}; the decoders for JPEG, JPEG-LS, JPEG 2000 and RLE come with "
                "pip install 'dicomnode-numpy[jpeg]'"
            ) from exc
        return np.asarray(values).reshape(self.rows, self.columns)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def stored_as(pixel_format: PixelFormat, dtype: np.dtype) -> bool:
    """True when the stored bytes of ``pixel_format`` are, as they are, the values in type ``dtype``.

    The same native type, or unsigned values with a free top bit in the
    signed type of their width; not values whose sign must be extended.
    """
    stored = pixel_format.stored_dtype
    if not stored.isnative or (pixel_format.signed and pixel_format.bits_stored < 8 * stored.itemsize):
        return False
    if stored == dtype:
        return True
    return bool((stored.kind, dtype.kind) == ("u", "i") and stored.itemsize == dtype.itemsize
                and pixel_format.bits_stored < 8 * stored.itemsize)


def _rescale_in_place(slot: np.ndarray, frame: Frame) -> None:
    """``slot = slot * slope + intercept`` for an integral rescale whose values fit the slot's type."""
    if frame.slope != 1.0:
        slot *= np.asarray(int(frame.slope), dtype=slot.dtype)
    if frame.intercept != 0.0:
        slot += np.asarray(int(frame.intercept), dtype=slot.dtype)


def unloaded_datasets(datasets: Iterable[Dataset]) -> set[int]:
    """``id`` of every dataset whose pixel data are still on disk (a lazy dataset).

    Its header may have been read already; its pixel data have not.
    """
    return {id(ds) for ds in datasets if getattr(ds, "pixels_loaded", True) is False}


def _smallest_integer(low: float, high: float) -> np.dtype:
    for candidate in _INTEGER_CANDIDATES:
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    raise GrindingError(f"rescaled values from {low} to {high} fit no integer type")


def _rescaled_range(frames: Sequence[Frame]) -> tuple[float, float]:
    low, high = np.inf, -np.inf
    for frame in frames:
        lo, hi = frame.pixel_format.value_range()
        ends = (lo * frame.slope + frame.intercept, hi * frame.slope + frame.intercept)
        low, high = min(low, *ends), max(high, *ends)
    return low, high


def choose_dtype(layout: StackLayout, *, rescale: bool) -> tuple[np.dtype, np.dtype]:
    """The output type and the widest type the values may need.

    Without rescale (or with the identity rescale) the stored type is kept.
    With a rescale that keeps values integral the result is an integer type:
    the smallest that holds every value the stored bits can give when it is no
    wider than the stored type, otherwise the signed type of the stored width,
    which :func:`fill` widens only if a value actually needs it. Other
    rescales give float32.
    """
    frames = layout.frames
    stored = np.dtype(np.result_type(*{f.pixel_format.dtype for f in frames}))
    if not rescale or all(f.slope == 1.0 and f.intercept == 0.0 for f in frames):
        return stored, stored
    if not all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames):
        return np.dtype(np.float32), np.dtype(np.float32)
    widest = _smallest_integer(*_rescaled_range(frames))
    if widest.itemsize <= stored.itemsize:
        return widest, widest
    hopeful = np.dtype(f"i{stored.itemsize}")
    info = np.iinfo(hopeful)
    if not all(info.min <= f.intercept <= info.max for f in frames):
        return widest, widest  # even a stored 0 would not fit: no point in hoping
    return hopeful, widest


def fill(
    layout: StackLayout,
    dtype: np.dtype,
    *,
    rescale: bool,
    widest: np.dtype | None = None,
    flip_rows: bool = False,
    forget: set[int] | None = None,
    float_arithmetic: str = "float64",
) -> np.ndarray:
    """Allocate the output once and copy (and rescale) every frame into its slot.

    ``widest``: an integer type the output is widened to if a rescaled value
    does not fit ``dtype``. ``flip_rows`` stores each slice bottom row first
    (the NIfTI convention). Datasets whose ``id`` is in ``forget`` (lazy
    datasets) forget their pixel data after their last frame is copied.
    ``float_arithmetic`` is the type a fractional rescale is computed in
    before the result is stored (``"float32"`` rounds as dcm2niix does).
    """
    arithmetic = np.dtype(float_arithmetic)
    forget = forget or set()
    out = np.empty(layout.shape, dtype=dtype)
    integral = np.issubdtype(dtype, np.integer)
    ordered = [(v, k, frame) for v, volume in enumerate(layout.volumes) for k, frame in enumerate(volume)]
    last_use = {id(frame.dataset): i for i, (_, _, frame) in enumerate(ordered)}
    readers: dict[int, PixelReader] = {}
    scratch: np.ndarray | None = None
    for i, (v, k, frame) in enumerate(ordered):
        key = id(frame.dataset)
        reader = readers.get(key)
        if reader is None:
            reader = readers[key] = PixelReader(frame.header, frame.pixel_format, frame.pixel_file)
        slot = out[v, k] if out.ndim == 4 else out[k]
        identity = not rescale or (frame.slope == 1.0 and frame.intercept == 0.0)
        in_place = integral and (widest is None or widest == out.dtype)
        if (identity or in_place) and frame.tile is None and not flip_rows \
                and stored_as(frame.pixel_format, out.dtype) and reader.read_into(frame.index, slot):
            # the file's bytes went straight into the slot, with no copy in between
            if not identity:
                _rescale_in_place(slot, frame)
        else:
            out, scratch = _store(out, slot, (v, k), reader.frame(frame.index), frame, identity, in_place,
                                  widest, flip_rows, scratch, arithmetic)
        if last_use[key] == i:
            del readers[key]
            if key in forget:
                frame.dataset.unload_pixels()
    return out


def _store(out: np.ndarray, slot: np.ndarray, place: tuple[int, int], values: np.ndarray, frame: Frame,
           identity: bool, in_place: bool, widest: np.dtype | None, flip_rows: bool,
           scratch: np.ndarray | None, arithmetic: np.dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """Copy (and rescale) the stored ``values`` of ``frame`` into ``slot`` of ``out``.

    Returns the output (widened to ``widest`` when a value needed it) and the
    scratch array the next frame may reuse.
    """
    if frame.tile is not None:
        top, left = frame.tile[0] * frame.rows, frame.tile[1] * frame.columns
        values = values[top:top + frame.rows, left:left + frame.columns]
    if flip_rows:
        values = values[::-1]
    if identity:
        if (values.dtype.kind, out.dtype.kind) == ("u", "i") and values.dtype.isnative \
                and values.dtype.itemsize == out.dtype.itemsize \
                and frame.pixel_format.bits_stored < 8 * values.dtype.itemsize:
            values = values.view(out.dtype)  # every value fits: a plain copy instead of a cast
        np.copyto(slot, values, casting="unsafe")
    elif in_place:
        np.copyto(slot, values, casting="unsafe")
        _rescale_in_place(slot, frame)
    elif np.issubdtype(out.dtype, np.integer):
        # the values might not fit the output type: rescale in int64 and widen if needed
        if scratch is None or scratch.dtype != np.int64:
            scratch = np.empty(values.shape, dtype=np.int64)
        np.copyto(scratch, values, casting="unsafe")
        scratch *= int(frame.slope)
        scratch += int(frame.intercept)
        info = np.iinfo(out.dtype)
        if scratch.min() < info.min or scratch.max() > info.max:
            out = out.astype(widest)
            slot = out[place] if out.ndim == 4 else out[place[1]]
        np.copyto(slot, scratch, casting="unsafe")
    else:
        if scratch is None or scratch.dtype != arithmetic:
            scratch = np.empty(values.shape, dtype=arithmetic)
        np.multiply(values, arithmetic.type(frame.slope), out=scratch)
        scratch += arithmetic.type(frame.intercept)
        np.copyto(slot, scratch, casting="unsafe")
    return out, scratch
