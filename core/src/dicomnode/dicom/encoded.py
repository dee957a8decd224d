"""Encoded datasets as bytes: making them, checking what arrives, locating elements, inflating within a limit.

:func:`encode_dataset` encodes a dataset as a DIMSE message carries it;
:func:`encoded_instance` turns a dataset, the bytes of a DICOM file or its
path into the encoded dataset, its transfer syntax and its file meta — what
the node's ingest takes.

A C-STORE's dataset arrives as bytes. pydicom parses a dataset whose last
element is cut short without complaint (it reads what is there), so a slice
truncated in transit would be acknowledged and later ground with missing
pixels. :func:`find_damage` walks the encoded elements — every length
checked against the bytes present, nested sequences and encapsulated pixel
data included — and names the first element that does not fit. It reads
only the 8 or 12 bytes of each element header (values are skipped, not
read), so a 512 KiB CT slice is checked in tens of microseconds.

:func:`inflate` undoes the Deflated Explicit VR Little Endian transfer
syntax, refusing to produce more than a limit: a few kilobytes of a
"deflate bomb" cannot become gigabytes in memory.

:func:`read_elements` does what :func:`find_damage` and pydicom's reader do
for a received dataset in one walk: every length checked, and the
top-level elements returned as the raw elements pydicom's
``read_dataset`` makes (values converted when first used), at a fraction
of its time — for a small image, reading its header was most of what
receiving it cost.

:func:`scan_elements` locates the top-level elements of an encoded dataset
(tag, VR, length and where the value starts) with the same walk, without
converting any value: what :class:`~dicomnode.dicom.lazy.LazyDataset` needs
to read a file's header, at a tenth of the time pydicom's reader takes
(which reads element by element through a file object and parses every
sequence on the way).

Written by hand because no library offers these: pydicom's reader has no
strict mode for truncation and no way to locate elements without reading
them, and :mod:`zlib` leaves the output limit to the caller.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

import attrs
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_preamble
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = [
    "DatasetDamage",
    "DatasetDamageError",
    "EncodedElement",
    "InflateLimitError",
    "element_name",
    "encode_dataset",
    "encoded_instance",
    "find_damage",
    "inflate",
    "read_elements",
    "scan_elements",
    "split_file",
    "tag_of",
    "transfer_syntax_of",
]

#: explicit VRs whose header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                       b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
#: nested sequences deeper than this are refused rather than followed (no real dataset comes close)
_MAX_DEPTH = 64


@attrs.frozen
class DatasetDamage:
    """Why an encoded dataset is not whole: the element, where it starts, and what is wrong."""

    tag: int
    offset: int
    problem: str

    def __str__(self) -> str:
        return f"{element_name(self.tag)} at byte {self.offset}: {self.problem}"

    @property
    def short(self) -> str:
        """The reason first, for the 64 characters of a C-STORE ErrorComment."""
        return f"{self.problem} in {element_name(self.tag)}"


def element_name(tag: int) -> str:
    """``PixelData (7FE0,0010)``, or only the tag when it has no keyword."""
    from pydicom.datadict import keyword_for_tag

    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    keyword = keyword_for_tag(tag) if tag >> 16 != 0xFFFE else ""
    return f"{keyword} {text}" if keyword else text


class _Damaged(Exception):
    def __init__(self, tag: int, offset: int, problem: str) -> None:
        super().__init__(problem)
        self.damage = DatasetDamage(tag, offset, problem)


class _Walker:
    """Walks elements with the struct formats of one transfer syntax."""

    def __init__(self, buffer: bytes | bytearray | memoryview, implicit: bool, little: bool) -> None:
        self.data = memoryview(buffer).cast("B")
        self.implicit = implicit
        order = "<" if little else ">"
        self.tag_length = struct.Struct(f"{order}HHL")  # group, element, 4-byte length (implicit; items)
        self.tag_vr_short = struct.Struct(f"{order}HH2sH")  # explicit, short VR
        self.long_length = struct.Struct(f"{order}L")

    def dataset(self, offset: int, end: int, depth: int, *, in_item: bool) -> int:
        """Walk elements from ``offset`` until ``end`` (or an item delimiter when ``in_item``); return where it stopped."""
        data = self.data
        while offset < end:
            if end - offset < 8:
                raise _Damaged(self._peek_tag(offset, end), offset,
                               f"{end - offset} byte(s) left, an element header needs 8")
            group, element, length = self.tag_length.unpack_from(data, offset)
            tag = group << 16 | element
            if tag == _ITEM_END:
                if not in_item:
                    raise _Damaged(tag, offset, "an item delimiter outside any item")
                return offset + 8
            if group == 0xFFFE:
                raise _Damaged(tag, offset, "a sequence delimiter where an element belongs")
            start = offset
            vr = b""
            if self.implicit:
                offset += 8
            else:
                _, _, vr, short = self.tag_vr_short.unpack_from(data, offset)
                if vr in _LONG_VRS:
                    if end - offset < 12:
                        raise _Damaged(tag, start, f"{end - offset} byte(s) left, its header needs 12")
                    (length,) = self.long_length.unpack_from(data, offset + 8)
                    offset += 12
                else:
                    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                        raise _Damaged(tag, start, f"the value representation is not two capital letters "
                                                   f"({bytes(vr)!r})")
                    length = short
                    offset += 8
            if length == _UNDEFINED:
                if tag == _PIXEL_DATA and vr != b"SQ":
                    offset = self.fragments(offset, end, tag)
                elif self.implicit or vr == b"SQ":
                    offset = self.sequence(offset, end, depth + 1, tag, defined=False)
                elif vr == b"UN":
                    # a sequence of unknown VR: its items are encoded in implicit VR little endian
                    offset = self._implicit().sequence(offset, end, depth + 1, tag, defined=False)
                else:
                    raise _Damaged(tag, start, f"an undefined length on a {vr.decode('ascii', 'replace')} "
                                               "element, which must have a length")
                continue
            if length > end - offset:
                raise _Damaged(tag, start, f"announces {length} bytes, {end - offset} present")
            if vr == b"SQ" and length:
                self.sequence(offset, offset + length, depth + 1, tag, defined=True)
            offset += length
        if in_item:
            raise _Damaged(_ITEM_END, offset, "an item ends without its delimiter")
        return offset

    def sequence(self, offset: int, end: int, depth: int, tag: int, *, defined: bool) -> int:
        """Walk the items of a sequence; return where it ends.

        A sequence of ``defined`` length fills its window; one of undefined
        length ends at its delimiter, which must come before ``end``.
        """
        if depth > _MAX_DEPTH:
            raise _Damaged(tag, offset, f"sequences nested more than {_MAX_DEPTH} deep")
        data = self.data
        while offset < end:
            if end - offset < 8:
                raise _Damaged(tag, offset, "the sequence is cut inside an item header")
            group, element, length = self.tag_length.unpack_from(data, offset)
            item = group << 16 | element
            if item == _SEQUENCE_END and not defined:
                return offset + 8
            if item != _ITEM:
                raise _Damaged(tag, offset, f"an element ({item >> 16:04X},{item & 0xFFFF:04X}) where an item "
                                            "belongs")
            offset += 8
            if length == _UNDEFINED:
                offset = self.dataset(offset, end, depth, in_item=True)
            else:
                if length > end - offset:
                    raise _Damaged(tag, offset - 8, f"an item announces {length} bytes, {end - offset} present")
                self.dataset(offset, offset + length, depth, in_item=False)
                offset += length
        if not defined:
            raise _Damaged(tag, offset, "the sequence ends without its delimiter")
        return offset

    def fragments(self, offset: int, end: int, tag: int) -> int:
        """Walk the items of encapsulated pixel data up to its sequence delimiter."""
        data = self.data
        while True:
            if end - offset < 8:
                raise _Damaged(tag, offset, "the encapsulated pixel data is cut inside a fragment header")
            group, element, length = self.tag_length.unpack_from(data, offset)
            item = group << 16 | element
            if item == _SEQUENCE_END:
                return offset + 8
            if item != _ITEM or length == _UNDEFINED:
                raise _Damaged(tag, offset, "the encapsulated pixel data holds something that is not a fragment")
            offset += 8
            if length > end - offset:
                raise _Damaged(tag, offset - 8, f"a fragment announces {length} bytes, {end - offset} present")
            offset += length

    def _implicit(self) -> _Walker:
        walker = _Walker.__new__(_Walker)
        walker.data = self.data
        walker.implicit = True
        walker.tag_length = struct.Struct("<HHL")
        walker.tag_vr_short = self.tag_vr_short
        walker.long_length = struct.Struct("<L")
        return walker

    def _peek_tag(self, offset: int, end: int) -> int:
        if end - offset >= 4:
            group, element = struct.unpack_from("<HH" if self.tag_length.format.startswith("<") else ">HH",
                                                self.data, offset)
            return int(group << 16 | element)
        return 0


def find_damage(buffer: bytes | bytearray | memoryview, *, implicit: bool, little: bool = True) -> DatasetDamage | None:
    """The first element of an encoded dataset that does not fit in the bytes present, or None.

    ``buffer`` holds the dataset without file meta, in a transfer syntax of
    the given VR form and byte order (inflate a deflated one first). Checks
    every element header and length, the items of every sequence (defined or
    undefined length) and the fragments of encapsulated pixel data.

    >>> find_damage(b"\\x10\\x00\\x20\\x00LO\\x08\\x00PAT1", implicit=False)
    DatasetDamage(tag=1048608, offset=0, problem='announces 8 bytes, 4 present')
    """
    walker = _Walker(buffer, implicit, little)
    try:
        walker.dataset(0, len(walker.data), 0, in_item=False)
    except _Damaged as damaged:
        return damaged.damage
    finally:
        walker.data.release()
    return None


_CHARACTER_SET = 0x00080005
#: a buffer up to this size is copied once before its values are cut out of it
_COPY_BELOW = 256 * 1024
#: explicit VRs as written -> (the VR, whether its header has a 4-byte length)
_VRS: dict[bytes, tuple[str, bool]] = {
    name.encode("ascii"): (name, name.encode("ascii") in _LONG_VRS)
    for name in ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL",
                 "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US",
                 "UT", "UV")}
#: pydicom's tag objects, made once per tag (a tag is an int subclass: making one is a Python call)
_TAGS: dict[int, BaseTag] = {}
_TAGS_KEPT = 8192


def tag_of(number: int) -> BaseTag:
    """pydicom's tag for ``number``, made once per tag (up to a few thousand kept)."""
    tag = _TAGS.get(number)
    if tag is None:
        tag = BaseTag(number)
        if len(_TAGS) < _TAGS_KEPT:
            _TAGS[number] = tag
    return tag


def read_elements(buffer: bytes | bytearray | memoryview, *, implicit: bool, little: bool = True,
                  defer_size: int | None = None, keep_before: int | None = None
                  ) -> dict[BaseTag, DataElement | RawDataElement] | None:
    """The top-level elements of a whole encoded dataset, as pydicom's reader makes them; every length checked.

    One walk does :func:`find_damage`'s checks (raising
    :class:`DatasetDamageError` for the first element that does not fit)
    and builds what ``pydicom.filereader.read_dataset`` would: a
    ``RawDataElement`` per element, its value the encoded bytes (converted
    by pydicom when first used), ``value_tell`` its offset in ``buffer``.
    Values longer than ``defer_size`` bytes are left in the buffer (value
    None), as pydicom defers them; elements from tag ``keep_before`` on are
    checked but not returned (a header without its pixel data). A sequence
    of undefined length is returned encoded too (pydicom parses it when it
    is used, not while reading).

    None when the dataset holds what pydicom reads in a way of its own
    (a sequence of unknown VR with an undefined length): use
    :func:`find_damage` and pydicom's reader then.

    >>> element = read_elements(b"\\x10\\x00\\x20\\x00LO\\x04\\x00PAT1", implicit=False)[0x00100020]
    >>> element.VR, element.value, element.value_tell
    ('LO', b'PAT1', 8)
    """
    walker = _Walker(buffer, implicit, little)
    size = len(walker.data)
    # values are copied out as bytes: from a small buffer, slices of one bytes copy of it are cheaper
    data: bytes | memoryview = walker.data.tobytes() if size <= _COPY_BELOW else walker.data
    tag_length = walker.tag_length.unpack_from
    tag_vr_short = walker.tag_vr_short.unpack_from
    long_length = walker.long_length.unpack_from
    make = tuple.__new__
    tags = _TAGS
    vrs = _VRS
    defer = size if defer_size is None else defer_size
    # a plain int: a pydicom tag compares in Python, once per element
    last = 0x100000000 if keep_before is None else int(keep_before)
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    vr: str | None
    offset = 0
    try:
        while offset < size:
            if size - offset < 8:
                raise _Damaged(walker._peek_tag(offset, size), offset,
                               f"{size - offset} byte(s) left, an element header needs 8")
            if implicit:
                group, number, length = tag_length(data, offset)
                vr = None
                value = offset + 8
                if group == 0xFFFE:
                    _delimiter(group, number, offset)
            else:
                group, number, raw_vr, length = tag_vr_short(data, offset)
                if group == 0xFFFE:
                    _delimiter(group, number, offset)
                known = vrs.get(raw_vr)
                if known is None:
                    if not (65 <= raw_vr[0] <= 90 and 65 <= raw_vr[1] <= 90):
                        raise _Damaged(group << 16 | number, offset, "the value representation is not two "
                                                                     f"capital letters ({bytes(raw_vr)!r})")
                    known = raw_vr.decode("ascii"), raw_vr in _LONG_VRS
                vr = known[0]
                if known[1]:
                    if size - offset < 12:
                        raise _Damaged(group << 16 | number, offset,
                                       f"{size - offset} byte(s) left, its header needs 12")
                    (length,) = long_length(data, offset + 8)
                    value = offset + 12
                else:
                    value = offset + 8
            tag = group << 16 | number
            kept: bytes | None
            if length == _UNDEFINED:
                if tag == _PIXEL_DATA and vr != "SQ":
                    end = walker.fragments(value, size, tag)
                elif implicit or vr == "SQ":
                    end = walker.sequence(value, size, 1, tag, defined=False)
                    vr = "SQ"
                elif vr == "UN":
                    return None  # pydicom reads it as a sequence in implicit VR, converting it as it goes
                else:
                    raise _Damaged(tag, offset, f"an undefined length on a {vr} element, which must have a length")
                kept = bytes(data[value:end - 8])  # without the sequence delimiter, as pydicom keeps it
            else:
                end = value + length
                if end > size:
                    raise _Damaged(tag, offset, f"announces {length} bytes, {size - value} present")
                if vr == "SQ" and length:
                    walker.sequence(value, end, 1, tag, defined=True)
                if not length:
                    kept = empty_value_for_VR(vr, raw=True)  # type: ignore[assignment]
                elif length > defer and tag != _CHARACTER_SET:
                    kept = None
                else:
                    kept = bytes(data[value:end])
            if tag < last:
                key = tags.get(tag)
                if key is None:
                    key = tag_of(tag)
                elements[key] = make(RawDataElement, (key, vr, length, kept, value, implicit, little, True, False))
            offset = end
    except _Damaged as damaged:
        raise DatasetDamageError(damaged.damage) from None
    finally:
        walker.data.release()
    return elements


def _delimiter(group: int, number: int, offset: int) -> None:
    if number == 0xE00D:
        raise _Damaged(_ITEM_END, offset, "an item delimiter outside any item")
    raise _Damaged(group << 16 | number, offset, "a sequence delimiter where an element belongs")


class EncodedElement(NamedTuple):
    """Where one element of an encoded dataset is: its header read, its value not."""

    tag: int
    #: the VR as written (explicit VR), None in implicit VR
    vr: str | None
    #: the length as written: 0xFFFFFFFF for an undefined length
    length: int
    #: offset of the first byte of the value
    value_offset: int
    #: offset just past the element (past its delimiter for an undefined length)
    end: int


class DatasetDamageError(ValueError):
    """An encoded dataset is not whole or not well formed; ``damage`` says where and why."""

    def __init__(self, damage: DatasetDamage) -> None:
        super().__init__(str(damage))
        self.damage = damage


def scan_elements(buffer: bytes | bytearray | memoryview, *, implicit: bool, little: bool = True,
                  offset: int = 0, before: int | None = None, keep_tags: Collection[int] | None = None,
                  keep_groups: Collection[int] = (), keep_from: int = 0x7FE00008
                  ) -> tuple[list[EncodedElement], int]:
    """Locate the top-level elements of an encoded dataset from ``offset`` on, without reading their values.

    Returns the elements and the offset where the walk stopped: the end of
    ``buffer``; the first element whose tag is ``before`` or more (when
    given; file meta ends ``before=0x00030000``); or just past an element
    whose defined-length value runs past the end of ``buffer``, which is
    still listed (its ``end`` is then beyond the buffer: the buffer holds
    only the start of a file). A sequence or encapsulated pixel data of
    undefined length is walked to its delimiter, and must end in the buffer.

    ``keep_tags`` (with ``keep_groups``) lists the elements a reader wants:
    the others are walked over but not listed, except that every element
    from tag ``keep_from`` on (the pixel data) is listed.

    Raises :class:`DatasetDamageError` for bytes that are not an element
    header, or a sequence or fragment list that does not end in ``buffer``.

    >>> scan_elements(b"\\x10\\x00\\x20\\x00LO\\x04\\x00PAT1", implicit=False)
    ([EncodedElement(tag=1048608, vr='LO', length=4, value_offset=8, end=12)], 12)
    """
    walker = _Walker(buffer, implicit, little)
    data = walker.data
    size = len(data)
    tag_length = walker.tag_length.unpack_from
    tag_vr_short = walker.tag_vr_short.unpack_from
    long_length = walker.long_length.unpack_from
    elements: list[EncodedElement] = []
    append = elements.append
    make = tuple.__new__
    names: dict[bytes, str] = {}  # VR bytes -> text, decoded once per walk
    try:
        while size - offset >= 8:
            if implicit:
                group, number, length = tag_length(data, offset)
                vr = None
                value = offset + 8
            else:
                group, number, raw_vr, length = tag_vr_short(data, offset)
                if before is not None and (group << 16 | number) >= before:
                    break  # the next part may be in another encoding: its VR is not this walk's to judge
                vr = names.get(raw_vr)
                if vr is None:
                    if not (65 <= raw_vr[0] <= 90 and 65 <= raw_vr[1] <= 90):
                        raise _Damaged(group << 16 | number, offset,
                                       f"the value representation is not two capital letters ({bytes(raw_vr)!r})")
                    vr = names[raw_vr] = raw_vr.decode("ascii")
                if raw_vr in _LONG_VRS:
                    if size - offset < 12:
                        break
                    (length,) = long_length(data, offset + 8)
                    value = offset + 12
                else:
                    value = offset + 8
            tag = group << 16 | number
            if before is not None and tag >= before:
                break
            if group == 0xFFFE:
                raise _Damaged(tag, offset, "a delimiter where an element belongs")
            if length == _UNDEFINED:
                if tag == _PIXEL_DATA and vr != "SQ":
                    end = walker.fragments(value, size, tag)
                elif implicit or vr == "SQ":
                    end = walker.sequence(value, size, 1, tag, defined=False)
                elif vr == "UN":
                    # a sequence of unknown VR: its items are encoded in implicit VR little endian
                    end = walker._implicit().sequence(value, size, 1, tag, defined=False)
                else:
                    raise _Damaged(tag, offset, f"an undefined length on a {vr} element, which must have "
                                                "a length")
            else:
                end = value + length
            if keep_tags is None or tag in keep_tags or group in keep_groups or tag >= keep_from:
                append(make(EncodedElement, (tag, vr, length, value, end)))  # tuple.__new__: no Python-level call
            offset = end
    except _Damaged as damaged:
        raise DatasetDamageError(damaged.damage) from None
    finally:
        data.release()
    return elements, offset


class InflateLimitError(ValueError):
    """A deflated dataset inflates to more than the allowed size."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the deflated dataset inflates to more than {limit} bytes")
        self.limit = limit


#: the inflated output is produced in pieces of this size, so memory never runs ahead of the check
_INFLATE_PIECE = 1 << 20


def inflate(deflated: bytes | bytearray | memoryview, limit: int) -> bytes:
    """The raw-deflate ``deflated`` bytes inflated, refusing to produce more than ``limit`` bytes.

    Raises :class:`InflateLimitError` as soon as the output passes the
    limit, having held at most the limit plus one piece, and
    :class:`zlib.error` for data that is not deflated.
    """
    engine = zlib.decompressobj(-zlib.MAX_WBITS)
    pieces: list[bytes] = []
    produced = 0
    pending: bytes | memoryview = memoryview(deflated).cast("B")
    while True:
        piece = engine.decompress(pending, _INFLATE_PIECE)
        produced += len(piece)
        if produced > limit:
            raise InflateLimitError(limit)
        if piece:
            pieces.append(piece)
        pending = engine.unconsumed_tail
        if not pending and (engine.eof or not piece):
            break
    tail = engine.flush()
    produced += len(tail)
    if produced > limit:
        raise InflateLimitError(limit)
    pieces.append(tail)
    return b"".join(pieces)


# --- making encoded datasets ---------------------------------------------------------------------


def encode_dataset(dataset: Dataset, syntax: UID) -> bytes:
    """``dataset`` encoded as a DIMSE message carries it in ``syntax`` (deflated if the syntax says so)."""
    out = DicomBytesIO()
    out.is_implicit_VR = syntax.is_implicit_VR
    out.is_little_endian = syntax.is_little_endian
    write_dataset(out, dataset)
    encoded = out.getvalue()
    if syntax.is_deflated:
        packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        encoded = packer.compress(encoded) + packer.flush()
    return encoded


def transfer_syntax_of(dataset: Dataset) -> UID:
    """The transfer syntax a dataset is in: its file meta's, else how it was read, else explicit VR LE."""
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        return UID(file_meta.TransferSyntaxUID)
    implicit, little = dataset.original_encoding
    if implicit is None:  # built in memory: any uncompressed syntax encodes it
        return ExplicitVRLittleEndian
    if not little:
        return UID("1.2.840.10008.1.2.2")  # Explicit VR Big Endian
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def split_file(data: bytes) -> tuple[FileMetaDataset, int]:
    """The file meta of a DICOM file's bytes, and where its dataset starts.

    Raises :class:`pydicom.errors.InvalidDicomError` when the bytes have no
    preamble and ``DICM`` prefix, or no transfer syntax in their file meta.
    """
    stream = BytesIO(data)
    read_preamble(stream, False)
    meta = read_dataset(stream, False, True, stop_when=lambda tag, _vr, _length: tag.group != 0x0002)
    file_meta = FileMetaDataset(meta)
    if "TransferSyntaxUID" not in file_meta:
        raise InvalidDicomError("the file meta information has no TransferSyntaxUID")
    return file_meta, stream.tell()


def encoded_instance(item: Dataset | bytes | Path | str) -> tuple[bytes, UID, FileMetaDataset]:
    """A dataset, a DICOM file's bytes or its path as (encoded dataset, transfer syntax, file meta).

    A file's dataset bytes are taken as they are; a dataset is encoded in its
    own transfer syntax (explicit VR little endian when it has none).
    """
    if isinstance(item, Dataset):
        path = getattr(item, "path", None)
        if path is not None and not getattr(item, "is_loaded", True):  # an unread LazyDataset: its file
            return encoded_instance(Path(path))
        syntax = transfer_syntax_of(item)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = item.get("SOPClassUID", "")
        meta.MediaStorageSOPInstanceUID = item.get("SOPInstanceUID", "")
        meta.TransferSyntaxUID = syntax
        return encode_dataset(item, syntax), syntax, meta
    data = item if isinstance(item, bytes) else Path(item).read_bytes()
    file_meta, offset = split_file(data)
    return data[offset:], UID(file_meta.TransferSyntaxUID), file_meta
