"""The headers of a whole series of files, located together: one read per file and one numpy walk for all.

A series on disk is thousands of small files with the same kind of header.
Reading each with pydicom costs about half a millisecond, and walking each
header's elements in Python (:func:`dicomnode.dicom.lazy.scan_file`) still
a third of that — more than dcm2niix takes per file. Here the first 4 KiB of
every file (the header of a typical image; 64 KiB for the files whose header
is longer, such as Siemens' with their CSA headers) are read into one array,
one system call per file, and the element headers of all files are walked
*together*: step ``n`` reads the ``n``-th
element header of every file at once with numpy (its tag, VR and length, at
each file's own offset), so a 60-element header costs 60 array operations,
not 60 Python iterations per file. Files whose headers differ in length or
in the elements they hold are no problem: each file keeps its own offset.

Only explicit and implicit VR little endian files with their preamble are
walked so; a sequence of undefined length is stepped over with the core's
walker (:func:`~dicomnode.dicom.encoded.scan_elements`) for the file that
has one. Anything else — big endian, compressed or deflated pixel data, a
header longer than the first read, bytes that are not element headers — is
None for that file, and the grinder reads it the ordinary way (which also
gives the errors).

No compiled extension: numpy's array operations do the walking.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

import attrs
import numpy as np
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnode.dicom.encoded import DatasetDamageError, scan_elements

from .header_values import tag_object
from .pixels import PixelFile

__all__ = ["ScannedHeader", "scan_headers"]

_UNDEFINED = 0xFFFFFFFF
_FIRST_PIXEL_TAG = 0x7FE00008  # FloatPixelData, DoubleFloatPixelData and PixelData follow
_SYNTAXES = {str(ExplicitVRLittleEndian): False, str(ImplicitVRLittleEndian): True}
#: explicit VRs with 2 reserved bytes and a 4-byte length, by their two letters as one number
_LONG = np.zeros(1 << 16, dtype=bool)
for _vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"):
    _LONG[ord(_vr[0]) << 8 | ord(_vr[1])] = True


@attrs.frozen(eq=False)
class ScannedHeader:
    """One file's header as the scan found it: the kept elements (raw), where its pixel data wait, its syntax."""

    header: Dataset
    pixel_file: PixelFile
    syntax: UID


def _u16(a: np.ndarray, at: np.ndarray) -> np.ndarray:
    values: np.ndarray = a[at].astype(np.int64) | a[at + 1].astype(np.int64) << 8
    return values


def _u32(a: np.ndarray, at: np.ndarray) -> np.ndarray:
    values: np.ndarray = _u16(a, at) | _u16(a, at + 2) << 16
    return values


class _Steps:
    """The element headers a walk found, step by step: file index, tag, VR, length, value offset, end."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, files: np.ndarray, tags: np.ndarray, vrs: np.ndarray, lengths: np.ndarray,
            values: np.ndarray, ends: np.ndarray) -> None:
        if files.size:
            self.parts.append((files, tags, vrs, lengths, values, ends))

    def joined(self) -> tuple[np.ndarray, ...]:
        if not self.parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty, empty, empty
        return tuple(np.concatenate(column) for column in zip(*self.parts, strict=True))


_OK, _BAD, _SHORT = 0, 1, 2  # a file's state: walked, left to the ordinary reader, needs a longer read


def _walk(a: np.ndarray, view: memoryview, files: np.ndarray, pos: np.ndarray, end: np.ndarray,
          implicit: bool, meta: bool, state: np.ndarray, steps: _Steps, stride: int) -> np.ndarray:
    """Walk the element headers of ``files`` together from ``pos``; return where each stopped.

    File meta (``meta``) stops at the first element outside group 2; a
    dataset at its pixel data (recorded) or its end. A file whose bytes
    cannot be followed is marked ``_BAD`` in ``state``; one whose header
    goes on past the bytes read (``end``) ``_SHORT``.
    """
    pos = pos.copy()
    active = np.arange(files.size)
    while active.size:
        p = pos[active]
        room = end[active] - p
        short = room < 8
        if short.any():  # the bytes read end here: the dataset ends, or the read was too short
            if not meta:
                state[files[active[short & (room != 0)]]] = _SHORT
            active, p = active[~short], p[~short]
            if not active.size:
                break
        group = _u16(a, p)
        tags = group << 16 | _u16(a, p + 2)
        if meta:
            inside = group == 2
            active, p, tags = active[inside], p[inside], tags[inside]
            if not active.size:
                break
        if implicit:
            vrs = np.zeros(p.size, dtype=np.int64)
            lengths = _u32(a, p + 4)
            values = p + 8
        else:
            vrs = _u16(a, p + 4)
            vrs = (vrs & 0xFF) << 8 | vrs >> 8  # the two letters, first one high
            letters = ((vrs >> 8) >= 65) & ((vrs >> 8) <= 90) & ((vrs & 0xFF) >= 65) & ((vrs & 0xFF) <= 90)
            if not letters.all():
                state[files[active[~letters]]] = _BAD
                active, p, tags, vrs = active[letters], p[letters], tags[letters], vrs[letters]
            long = _LONG[vrs]
            lengths = np.where(long, _u32(a, p + 8), _u16(a, p + 6))
            values = p + np.where(long, 12, 8)
        pixels = tags >= _FIRST_PIXEL_TAG
        undefined = lengths == _UNDEFINED
        ends = values + np.where(undefined, 0, lengths)
        for index in np.nonzero(undefined & ~pixels)[0]:  # a sequence of undefined length: walked in Python
            file = int(files[active[index]])
            ends[index] = _sequence_end(view, file * stride, int(end[active[index]]), int(p[index]),
                                        int(tags[index]), implicit)
            if ends[index] < 0:
                state[file] = _SHORT if ends[index] == -2 else _BAD
        steps.add(files[active], tags, vrs, lengths, values, ends)
        past = (ends > end[active]) & ~pixels
        state[files[active[past]]] = _SHORT
        state[files[active[pixels & undefined]]] = _BAD  # encapsulated: the ordinary reader decodes it
        pos[active] = ends
        active = active[~(pixels | past | (ends < 0))]
    return pos


def _sequence_end(view: memoryview, start: int, end: int, at: int, tag: int, implicit: bool) -> int:
    """Where the sequence of undefined length at ``at`` ends; -2 when past the bytes read, -1 when damaged."""
    try:
        _, stop = scan_elements(view[start:end], implicit=implicit, offset=at - start, before=tag + 1,
                                       keep_tags=())
    except DatasetDamageError:
        return -2  # its delimiter may lie past the bytes read: a longer read tells
    return start + stop


def _read_heads(paths: Sequence[Path], size: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The first ``size`` bytes of each file, one row each (a little zero padding after);
    how many bytes each gave, and each file's size (0 when it cannot be read)."""
    stride = size + 16
    a = np.empty(len(paths) * stride, dtype=np.uint8)
    view = a.data
    got = np.zeros(len(paths), dtype=np.int64)
    sizes = [0] * len(paths)
    for index, path in enumerate(paths):
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # the ordinary reader says why
        try:
            row = index * stride
            count = os.readv(descriptor, [view[row:row + size]])
            view[row + count:row + count + 16] = bytes(16)
            got[index] = count
            sizes[index] = count if count < size else os.fstat(descriptor).st_size
        except OSError:
            got[index] = 0
        finally:
            os.close(descriptor)
    return a, got, sizes


def scan_headers(paths: Sequence[Path], keep_tags: Collection[int], keep_groups: Collection[int] = ()
                 ) -> list[ScannedHeader | None]:
    """The header of each file: its elements of ``keep_tags`` and ``keep_groups``, raw, and its pixel data located.

    None for a file the scan leaves to the ordinary reader (see the module
    docstring). The first 4 KiB of each file are read (the header of a
    typical image); files whose header is longer are read again, 64 KiB.
    """
    result: list[ScannedHeader | None] = [None] * len(paths)
    pending = list(range(len(paths)))
    for size in _READS:
        if not pending:
            break
        chosen = [paths[index] for index in pending]
        found, state = _scan(chosen, size, keep_tags, keep_groups)
        for index, header in zip(pending, found, strict=True):
            result[index] = header
        pending = [index for index, short in zip(pending, (state == _SHORT).tolist(), strict=True) if short]
    return result


_READS = (4096, 64 * 1024)


def _scan(paths: Sequence[Path], size: int, keep_tags: Collection[int], keep_groups: Collection[int]
          ) -> tuple[list[ScannedHeader | None], np.ndarray]:
    count = len(paths)
    a, got, sizes = _read_heads(paths, size)
    view = a.data
    stride = size + 16
    starts = np.arange(count, dtype=np.int64) * stride
    state = np.zeros(count, dtype=np.int8)
    marker = np.stack([a[starts + 128 + i] for i in range(4)], axis=1) if count else np.zeros((0, 4), np.uint8)
    has_preamble = (got >= 136) & (marker == np.frombuffer(b"DICM", dtype=np.uint8)).all(axis=1)
    state[~has_preamble] = _BAD
    files = np.nonzero(has_preamble)[0]
    ends = starts + got
    meta_steps = _Steps()
    data_start = _walk(a, view, files, starts[files] + 132, ends[files], False, True, state, meta_steps, stride)
    meta_files, meta_tags, _, meta_lengths, meta_values, _ = meta_steps.joined()
    syntax_of: dict[int, str] = {}
    is_syntax = meta_tags == 0x00020010
    for file, length, value in zip(meta_files[is_syntax].tolist(), meta_lengths[is_syntax].tolist(),
                                   meta_values[is_syntax].tolist(), strict=True):
        syntax_of[file] = view[value:value + length].tobytes().decode("ascii", "replace").strip(" \0")
    start_of = dict(zip(files.tolist(), data_start.tolist(), strict=True))
    steps = _Steps()
    for file in files.tolist():
        if syntax_of.get(file) not in _SYNTAXES:
            state[file] = _BAD
    for implicit in (False, True):
        chosen = np.array([f for f in files.tolist()
                           if _SYNTAXES.get(syntax_of.get(f, "")) is implicit and state[f] == _OK], dtype=np.int64)
        if chosen.size:
            _walk(a, view, chosen, np.array([start_of[f] for f in chosen.tolist()], dtype=np.int64),
                  ends[chosen], implicit, False, state, steps, stride)
    return _headers(paths, a, steps, state, syntax_of, sizes, keep_tags, keep_groups, stride), state


def _headers(paths: Sequence[Path], a: np.ndarray, steps: _Steps, state: np.ndarray,
             syntax_of: dict[int, str], sizes: list[int], keep_tags: Collection[int],
             keep_groups: Collection[int], stride: int) -> list[ScannedHeader | None]:
    """One :class:`ScannedHeader` per file from the walk's elements (those kept, and the pixel data).

    Column by column (one kept tag at a time, for every file at once): a
    value every file holds with the same bytes becomes one raw element all
    the headers share (a series repeats most of its header); the others
    one per file.
    """
    view = a.data
    files, tags, vrs, lengths, values, ends = steps.joined()
    ok = state == _OK
    wanted = ok[files] & (np.isin(tags, np.fromiter(keep_tags, dtype=np.int64)) | np.isin(
        tags >> 16, np.fromiter(keep_groups, dtype=np.int64)) | (tags >= _FIRST_PIXEL_TAG))
    files, tags, vrs, lengths, values, ends = (column[wanted] for column in (files, tags, vrs, lengths, values,
                                                                             ends))
    implicit_of = np.zeros(len(paths), dtype=bool)
    for file, syntax in syntax_of.items():
        implicit_of[file] = _SYNTAXES.get(syntax, False)
    make = tuple.__new__
    result: list[ScannedHeader | None] = [None] * len(paths)
    pixel_rows = np.nonzero(tags >= _FIRST_PIXEL_TAG)[0]
    pixel_rows = pixel_rows[lengths[pixel_rows] != _UNDEFINED]
    offsets = values[pixel_rows] - files[pixel_rows] * stride
    whole = offsets + lengths[pixel_rows] <= np.array([sizes[f] for f in files[pixel_rows].tolist()],
                                                      dtype=np.int64)
    pixel_rows = pixel_rows[whole]  # a file whose pixel data are cut short: the ordinary reader says so
    with_pixels = files[pixel_rows]
    if not with_pixels.size:
        return result
    present = np.zeros(len(paths), dtype=bool)
    present[with_pixels] = True
    shared: dict[BaseTag, RawDataElement] = {}
    own: dict[int, dict[BaseTag, RawDataElement]] = {int(f): {} for f in with_pixels.tolist()}
    rows = np.nonzero(present[files] & (tags < _FIRST_PIXEL_TAG))[0]
    order = np.argsort(tags[rows], kind="stable")
    rows = rows[order]
    boundaries = np.nonzero(np.diff(tags[rows]))[0] + 1
    for column in np.split(rows, boundaries) if rows.size else []:
        tag = int(tags[column[0]])
        key = tag_object(tag)
        column_files, column_lengths, column_values = files[column], lengths[column], values[column]
        column_vrs, column_implicit = vrs[column], implicit_of[column_files]
        length = int(column_lengths[0])
        if (column.size == with_pixels.size and length != _UNDEFINED and length <= 1024 and _shareable(tag)
                and (column_lengths == length).all() and (column_vrs == column_vrs[0]).all()
                and (column_implicit == column_implicit[0]).all() and int(column_vrs[0]) != _SQ
                and (length == 0 or (a[column_values[:, None] + np.arange(length)] ==
                                     a[column_values[0]:column_values[0] + length]).all())):
            # the same bytes in every file: one element for every header
            vr = int(column_vrs[0])
            start = int(column_values[0])
            shared[key] = make(RawDataElement, (key, _vr_name(vr), length, view[start:start + length].tobytes(),
                                                start - int(column_files[0]) * stride,
                                                bool(column_implicit[0]), True, True, False))
            continue
        names = _VR_NAMES
        for file, vr, length, value, end, implicit in zip(
                column_files.tolist(), column_vrs.tolist(), column_lengths.tolist(), column_values.tolist(),
                ends[column].tolist(), column_implicit.tolist(), strict=True):
            name = names[vr] if vr in names else _vr_name(vr)
            if length == _UNDEFINED:  # a sequence of undefined length, up to its delimiter, as pydicom keeps it
                raw = view[value:end].tobytes()
                name = name or "SQ"
            else:
                raw = view[value:value + length].tobytes() if length else b""
            own[file][key] = make(RawDataElement, (key, name, length, raw, value - file * stride, implicit, True,
                                                   True, False))
    template = _dataset_state()
    for row in pixel_rows.tolist():
        file = int(files[row])
        key = tag_object(int(tags[row]))
        pixel = make(RawDataElement, (key, _vr_name(int(vrs[row])), int(lengths[row]), None,
                                      int(values[row]) - file * stride, bool(implicit_of[file]), True, True, False))
        elements = {**shared, **own[file], key: pixel}
        result[file] = ScannedHeader(_dataset(elements, template), PixelFile(paths[file], pixel),
                                     UID(syntax_of[file]))
    return result


_VR_NAMES: dict[int, str | None] = {0: None}
_SQ = ord("S") << 8 | ord("Q")


def _shareable(tag: int) -> bool:
    """Whether one element may serve every header: not a sequence, whose items pydicom places by the
    element's offset in its file."""
    try:
        return bool(dictionary_VR(tag) != "SQ")
    except KeyError:
        return False  # a private or unknown tag: its VR may be anything


def _vr_name(code: int) -> str | None:
    name = _VR_NAMES.get(code, "")
    if name == "":
        name = _VR_NAMES[code] = chr(code >> 8) + chr(code & 0xFF)
    return name


def _dataset_state() -> tuple[dict[str, object], tuple[tuple[str, type], ...]]:
    """What a new, empty pydicom Dataset holds: its plain attributes, and the names of its containers."""
    state = Dataset().__dict__
    containers = tuple((name, type(value)) for name, value in state.items() if isinstance(value, (dict, list, set)))
    plain = {name: value for name, value in state.items() if not isinstance(value, (dict, list, set))}
    return plain, containers


def _dataset(elements: dict[BaseTag, RawDataElement],
             state: tuple[dict[str, object], tuple[tuple[str, type], ...]]) -> Dataset:
    """A Dataset over ``elements`` without pydicom's ``__init__``: its attributes copied from ``state``.

    ``Dataset.__init__`` sets each attribute through ``__setattr__``, which
    looks the name up among the DICOM keywords (20 µs a dataset, a tenth of
    what scanning a file costs); the attributes of a new dataset are copied
    instead, each container a new empty one, as ``__init__`` makes them.
    """
    plain, containers = state
    dataset = object.__new__(Dataset)
    own = dataset.__dict__
    own.update(plain)
    for name, kind in containers:
        own[name] = kind()
    own["_dict"] = elements
    return dataset
