"""DICOM files: read eagerly with clear errors, lazily with :class:`LazyDataset`, written safely.

A node that holds a whole study waiting for its last series cannot keep every
slice in memory: 2,000 CT slices of 512x512 are a gigabyte of pixel data. A
:class:`LazyDataset` is a :class:`pydicom.Dataset` that knows only its path
until something asks for its contents, reads the file's header then (its
pixel data only when they are asked for), and can forget the contents again
with :meth:`LazyDataset.unload`::

    >>> from dicomnode.dicom.lazy import LazyDataset
    >>> ds = LazyDataset("slice-001.dcm")     # nothing is read yet
    >>> ds.is_loaded
    False
"""

from __future__ import annotations

import copy
import os
import struct
import threading
from collections.abc import Callable, Collection, MutableMapping
from pathlib import Path, PosixPath, WindowsPath
from typing import Any, TypeGuard, overload

import attrs
from pydicom import Dataset, dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator, read_deferred_data_element
from pydicom.tag import BaseTag, Tag, TagType
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from dicomnode.dicom.encoded import DatasetDamageError, EncodedElement, scan_elements
from dicomnode.errors import InvalidDatasetError

__all__ = ["LazyDataset", "ScannedFile", "read_dataset", "read_value_range", "scan_file", "write_dataset"]

_UNDEFINED_LENGTH = 0xFFFFFFFF

# attributes of a LazyDataset itself, which must never trigger a load
_OWN = ("_lazy_path", "_lazy_lock", "_lazy_names")


def read_dataset(
    path: str | os.PathLike[str], *, stop_before_pixels: bool = False, force: bool = False
) -> FileDataset:
    """Read the DICOM file at ``path``; a file that is not DICOM gives one clear error.

    Raises :class:`~dicomnode.errors.InvalidDatasetError` (a ``ValueError``)
    naming the file when it is not a DICOM Part 10 file, cannot be parsed or
    is cut short (pydicom itself reads a truncated file without complaint),
    and the usual ``OSError`` (``FileNotFoundError`` …) when it cannot be
    opened. ``force`` also reads a bare dataset without the Part 10 header
    (no preamble, no file meta), as some older systems write them.
    """
    name = os.fspath(path)
    dataset = _parsed(name, lambda: dcmread(path, stop_before_pixels=stop_before_pixels, force=force))
    if force and not any(tag.group > 0x0002 for tag, _ in dataset.items()):
        raise InvalidDatasetError(f"{name} is not a DICOM file: no data element could be read from it")
    _check_complete(dataset, name)
    return dataset


def _parsed(name: str, read: Callable[[], FileDataset]) -> FileDataset:
    """``read()``, with pydicom's many ways of refusing a damaged file turned into one clear error."""
    try:
        return read()
    except OSError:
        raise
    except InvalidDicomError as error:
        raise InvalidDatasetError(
            f"{name} is not a DICOM file: it lacks the 'DICM' marker after the 128-byte preamble"
        ) from error
    except Exception as error:
        # pydicom reports a damaged file with many different exception types;
        # a caller only needs to know that this file is unusable and why
        raise InvalidDatasetError(f"{name} is not a readable DICOM file: {_first_line(error)}") from error


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _truncated(name: str, tag: int, expected: int, found: int) -> InvalidDatasetError:
    return InvalidDatasetError(
        f"{name} is truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) should hold "
        f"{expected} bytes but the file ends after {max(found, 0)}"
    )


def _check_complete(dataset: Dataset, name: str) -> None:
    """Refuse a file whose last element holds fewer bytes than its header announced."""
    elements = dataset._dict
    if not elements:
        return
    # plain int comparisons: pydicom's tags compare in Python, 50 times per file
    last = elements[max(elements, key=int)]
    if (
        isinstance(last, RawDataElement)
        and last.length != _UNDEFINED_LENGTH
        and last.value is not None
        and len(last.value) < last.length
    ):
        raise _truncated(name, last.tag, last.length, len(last.value))


def _read_header(path: Path) -> FileDataset:
    """The file's elements up to its pixel data, read; the pixel data and what follows, only located.

    The elements from PixelData (or FloatPixelData, DoubleFloatPixelData) on
    are pydicom's deferred elements: their place in the file without their
    value, which :func:`_read_value` reads. A deflated file is one compressed
    stream with no place to come back to, so it is read whole.

    An ordinary Part 10 file is located with one read and
    :func:`~dicomnode.dicom.encoded.scan_elements` (:func:`scan_file`);
    anything else, and anything that scan finds odd, goes through pydicom's
    reader, which also gives the errors.
    """
    scanned = scan_file(path)
    if scanned is not None:
        return scanned.header()
    name = os.fspath(path)
    with open(path, "rb") as file:
        dataset = _parsed(name, lambda: dcmread(file, stop_before_pixels=True))
        _check_complete(dataset, name)
        if dataset.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            return read_dataset(path)
        size = os.fstat(file.fileno()).st_size
        implicit, little = dataset.original_encoding  # both known for a dataset read from a file
        # defer_size 0: every value is skipped over, not read (an encapsulated
        # one is scanned for its end, not kept)
        try:
            tail = list(data_element_generator(file, bool(implicit), bool(little), defer_size=0))
        except Exception as error:
            raise InvalidDatasetError(f"{name} is not a readable DICOM file: {_first_line(error)}") from error
    for element in tail:
        if _is_deferred(element) and element.length != _UNDEFINED_LENGTH \
                and element.value_tell + element.length > size:
            raise _truncated(name, element.tag, element.length, size - element.value_tell)
        dataset._dict[element.tag] = element
    return dataset


#: bytes of a file read at once to find its header; a longer header is read on
_HEADER_READ = 64 * 1024
#: transfer syntaxes whose encoding the scan knows: (implicit VR, little endian)
_SCANNED_SYNTAXES = {
    ImplicitVRLittleEndian: (True, True),
    ExplicitVRLittleEndian: (False, True),
    ExplicitVRBigEndian: (False, False),
}
#: where pydicom's header read stops (stop_before_pixels)
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_VR_LETTERS = frozenset(range(65, 91))


@attrs.frozen(eq=False)
class ScannedFile:
    """The elements of a DICOM file as :func:`scan_file` found them, as pydicom's raw elements.

    ``elements`` holds every element of the dataset: those before the pixel
    data with their encoded value, the pixel data (PixelData, FloatPixelData
    or DoubleFloatPixelData) and what follows deferred (value None, located
    by ``value_tell``), as pydicom's reader leaves them with
    ``defer_size=0``; values are converted when first used.
    """

    path: Path
    preamble: bytes
    meta: dict[BaseTag, DataElement | RawDataElement]
    elements: dict[BaseTag, DataElement | RawDataElement]
    transfer_syntax: UID
    implicit: bool
    little: bool

    def header(self) -> FileDataset:
        """The file as a :class:`~pydicom.dataset.FileDataset`, exactly what pydicom's header read gives."""
        file_meta = FileMetaDataset(self.meta)
        file_meta.set_original_encoding(False, True, default_encoding)
        charset = self.elements.get(BaseTag(0x00080005))
        encoding: str | list[str] = default_encoding
        if isinstance(charset, RawDataElement):
            encoding = convert_encodings(convert_raw_data_element(charset).value)
        dataset = Dataset(self.elements)
        dataset.set_original_encoding(self.implicit, self.little, encoding)
        result = FileDataset(os.fspath(self.path), dataset, self.preamble, file_meta, self.implicit, self.little)
        result.set_original_encoding(self.implicit, self.little, dataset._character_set)
        return result


def scan_file(path: str | os.PathLike[str], *, keep_tags: Collection[int] | None = None,
              keep_groups: Collection[int] = ()) -> ScannedFile | None:
    """The elements of an ordinary DICOM Part 10 file, located with one read; None for anything unusual.

    ``keep_tags`` and ``keep_groups`` choose the elements to return, when a
    reader needs only some (the pixel data and what follows are always
    returned); the others are still walked over.

    pydicom reads a header element by element through a file object and
    parses every sequence as it goes (about 8 µs per element: 0.4 ms for a
    small MR slice, most of the time a 2,000-file series takes to grind).
    Here the file's first 64 KiB (more when the header is longer) are read
    at once and the elements located by one walk over their headers
    (:func:`~dicomnode.dicom.encoded.scan_elements`); the pixel data are
    located, not kept.

    None — use pydicom's reader (:func:`read_dataset`, :class:`LazyDataset`),
    which also gives the errors — without the preamble and 'DICM', for a
    transfer syntax other than implicit or explicit VR little endian,
    explicit VR big endian or an encapsulated one, for anything the walk
    finds damaged or cut short, for elements after the pixel data beyond
    the first read, and for an implicit VR dataset that looks explicit.
    """
    path = path if isinstance(path, Path) else Path(path)
    with open(path, "rb", buffering=0) as file:
        data = file.read(_HEADER_READ)
        size = os.fstat(file.fileno()).st_size
        try:
            located = _located(data, size, keep_tags, keep_groups)
            if located is None and len(data) < size:
                data += file.read()
                located = _located(data, size, keep_tags, keep_groups)
        except DatasetDamageError:
            return None
    if located is None:
        return None
    meta_elements, elements, syntax, implicit, little = located
    return ScannedFile(path, bytes(data[:128]), _raw_elements(data, meta_elements, False, True),
                       _raw_elements(data, elements, implicit, little), syntax, implicit, little)


def _located(data: bytes, size: int, keep_tags: Collection[int] | None = None, keep_groups: Collection[int] = ()
             ) -> tuple[list[EncodedElement], list[EncodedElement], UID, bool, bool] | None:
    """File meta and dataset elements of a file whose first ``len(data)`` of ``size`` bytes are ``data``.

    None when ``data`` does not hold the whole header (or the file is one the
    scan leaves to pydicom). Raises :class:`DatasetDamageError` for bytes the
    walk cannot follow.
    """
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    meta, start = scan_elements(data, implicit=False, offset=132, before=0x00030000)
    if not meta or meta[0].tag >> 16 != 2 or start > len(data):
        return None
    syntax = next((e for e in meta if e.tag == 0x00020010), None)
    if syntax is None:
        return None
    uid = UID(data[syntax.value_offset:syntax.end].decode("ascii", "replace").strip(" \0"))
    encoding = _SCANNED_SYNTAXES.get(uid)
    if encoding is None:
        if not uid.is_encapsulated or uid == DeflatedExplicitVRLittleEndian:
            return None
        encoding = (False, True)
    implicit, little = encoding
    if implicit and len(data) - start >= 6 and data[start + 4] in _VR_LETTERS \
            and data[start + 5] in _VR_LETTERS:
        return None  # perhaps explicit VR under an implicit VR syntax: pydicom's reader checks
    elements, _ = scan_elements(data, implicit=implicit, little=little, offset=start, keep_tags=keep_tags,
                                keep_groups=keep_groups)
    pixels = False
    for element in elements:
        pixels = pixels or element.tag in _PIXEL_TAGS
        if element.length == _UNDEFINED_LENGTH and element.vr == "UN":
            return None  # pydicom decides how to read a sequence of unknown VR
        if element.end > len(data) and not (pixels and element.end <= size):
            return None  # a header element not all read yet, or an element cut short
        if pixels and element.end > len(data) and element.end < size:
            return None  # elements after the pixel data that the first read did not reach
    return meta, elements, uid, implicit, little


def _raw_elements(data: bytes, elements: list[EncodedElement], implicit: bool, little: bool
                  ) -> dict[BaseTag, DataElement | RawDataElement]:
    """The RawDataElements pydicom's reader makes for ``elements``: values from the pixel data on deferred.

    Written as one loop without calls per element: a header has a hundred
    elements and a series thousands of files.
    """
    make = tuple.__new__
    raw: dict[BaseTag, DataElement | RawDataElement] = {}
    deferred = False
    for tag, vr, length, value_offset, end in elements:
        if not deferred and tag in _PIXEL_TAGS:
            deferred = True
        if length == _UNDEFINED_LENGTH and vr is None and tag not in _PIXEL_TAGS:
            vr = "SQ"  # an undefined length in implicit VR: a sequence, as pydicom reads it
        if not length:
            value: bytes | None = empty_value_for_VR(vr, raw=True)  # type: ignore[assignment]
        elif deferred:
            value = None
        else:
            value = data[value_offset:end]
        key = BaseTag(tag)
        raw[key] = make(RawDataElement, (key, vr, length, value, value_offset, implicit, little, True, False))
    return raw


def _is_deferred(element: object) -> TypeGuard[RawDataElement]:
    """True for an element whose value is still in the file."""
    return isinstance(element, RawDataElement) and element.value is None and element.length != 0


def _read_value(path: Path, element: RawDataElement) -> RawDataElement:
    """``element`` (located by :func:`_read_header`) with its value read from the file."""
    name = os.fspath(path)
    try:
        read = read_deferred_data_element(open, name, None, element)
    except OSError:
        raise
    except Exception as error:
        raise InvalidDatasetError(
            f"{name} changed on disk after its header was read ({_first_line(error)}); "
            "unload() the dataset to read the file again"
        ) from error
    found = len(read.value) if read.value is not None else 0
    if element.length != _UNDEFINED_LENGTH and found < element.length:
        raise _truncated(name, element.tag, element.length, found)
    return read


def _element_header(element: RawDataElement) -> bytes:
    """The bytes that precede ``element``'s value in its file: its tag and length (and VR)."""
    order = "<" if element.is_little_endian else ">"
    tag = struct.pack(f"{order}HH", element.tag >> 16, element.tag & 0xFFFF)
    if element.is_implicit_VR:
        return tag + struct.pack(f"{order}L", element.length)
    vr = str(element.VR).encode("ascii")
    if element.VR in EXPLICIT_VR_LENGTH_32:
        return tag + vr + b"\0\0" + struct.pack(f"{order}L", element.length)
    return tag + vr + struct.pack(f"{order}H", element.length)


def read_value_range(path: str | os.PathLike[str], element: RawDataElement, view: memoryview,
                     offset: int = 0) -> None:
    """Fill ``view`` with the bytes of ``element``'s value from ``offset`` on, read from ``path``.

    ``element`` is a deferred element of that file (from :func:`scan_file`
    or a lazy dataset's header).

    The element's header is read first and compared with what the header
    read found, so a file replaced by another since then is an error rather
    than somebody else's pixels.
    """
    name = os.fspath(path)
    expected = _element_header(element)
    check = bytearray(len(expected))
    target = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    descriptor = os.open(name, os.O_RDONLY)
    try:
        # one system call for the element's header and its value when they are adjacent (offset 0):
        # a series of small files reads thousands of these
        header_at = element.value_tell - len(expected)
        if offset == 0:
            done = os.preadv(descriptor, [check, target], header_at) - len(expected)
            if done < 0:
                raise _truncated(name, element.tag, element.length, 0)
        else:
            if os.preadv(descriptor, [check], header_at) != len(expected):
                raise _truncated(name, element.tag, element.length, 0)
            done = 0
        if check != expected:
            raise InvalidDatasetError(
                f"{name} changed on disk after its header was read: element {element.tag} is no "
                "longer where it was; unload() the dataset to read the file again"
            )
        while done < target.nbytes:
            count = os.preadv(descriptor, [target[done:]], element.value_tell + offset + done)
            if not count:
                raise _truncated(name, element.tag, element.length, offset + done)
            done += count
    finally:
        os.close(descriptor)


def with_file_meta(dataset: Dataset) -> Dataset:
    """``dataset`` itself if its file meta names a transfer syntax, else a shallow copy that does.

    Datasets built in memory often have no file meta, and a file needs one. The
    copy shares the caller's elements and the caller's dataset is not changed;
    its transfer syntax is Implicit VR Little Endian when the dataset was read
    that way, Explicit VR Little Endian otherwise.
    """
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return dataset
    new_meta = FileMetaDataset(meta) if meta is not None else FileMetaDataset()
    implicit = getattr(dataset, "original_encoding", (None, None))[0]
    new_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    carrier = copy.copy(dataset)
    carrier.file_meta = new_meta
    return carrier


def write_dataset(dataset: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` as a DICOM file at ``path`` and return the path; never leaves half a file.

    The file is written beside its destination and renamed into place, and
    the folders are created. A dataset built in memory without a transfer
    syntax is written as :func:`with_file_meta` describes.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with_file_meta(dataset).save_as(temporary, enforce_file_format=True)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


class LazyDataset(Dataset):
    """A DICOM file on disk that acts as a :class:`pydicom.Dataset`, read on first use.

    Everything a ``Dataset`` offers works and reads the file the first time it
    is needed: ``ds.PatientID``, ``ds[0x00100020]``, ``ds["PatientID"]``,
    ``"PatientID" in ds``, iteration, ``len``, ``.get()``, ``.file_meta``,
    ``.pixel_array`` (with numpy installed), ``save_as``. ``isinstance(ds,
    pydicom.Dataset)`` is true, so it can go wherever a dataset goes (a C-STORE,
    a grinder, an image tree).

    The first use reads only the header: every element before the pixel data.
    The pixel data (PixelData, FloatPixelData or DoubleFloatPixelData, and
    any element after it) are only located then, and read when their value is
    asked for: ``ds.PixelData``, ``ds[tag]``, ``ds.pixel_array``, ``==``,
    ``save_as``. They are elements like the others, so ``"PixelData" in ds``,
    ``len(ds)`` and ``ds.keys()`` count them without reading them, and
    iterating over the dataset yields them, read when the iteration reaches
    them. ``ds.get_item(tag, keep_deferred=True)`` gives an unread one as a
    ``RawDataElement`` whose value is None. :meth:`load` reads the whole file
    at once.

    :meth:`unload` forgets the contents, header and pixel data; the next use
    reads the file again. Changes made to a loaded dataset are lost by
    :meth:`unload` — save them first (``ds.save_as(ds.path)``) if they must
    last. Reading is thread-safe: threads that ask at the same time share one
    read of the header, and one of the pixel data.

    Pickling (to hand a job to another process) sends only the path while the
    dataset is not loaded, and the contents once it is (pixel data that were
    not read yet stay in the file and are read from there).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # Dataset.__init__ is deliberately not called: every attribute it would
        # set comes from the file, on first use (see __getattr__)
        state = self.__dict__
        # Path(a_path) parses it again (~20 µs): a folder of 2,000 files makes 2,000 of these
        state["_lazy_path"] = path if type(path) is PosixPath or type(path) is WindowsPath else Path(path)
        # reentrant: converting a value that was just read looks up other elements
        state["_lazy_lock"] = threading.RLock()
        state["_lazy_names"] = None

    @property
    def path(self) -> Path:
        """The file this dataset is read from."""
        path: Path = self.__dict__["_lazy_path"]
        return path

    @property
    def is_loaded(self) -> bool:
        """True while the file's header is in memory (its pixel data may not be: :attr:`pixels_loaded`)."""
        return self.__dict__.get("_lazy_names") is not None

    @property
    def pixels_loaded(self) -> bool:
        """True while the whole file is in memory: the header and every element after it."""
        if not self.is_loaded:
            return False
        elements: MutableMapping[BaseTag, Any] = self.__dict__["_dict"]
        return not any(_is_deferred(element) for element in elements.values())

    def load(self) -> LazyDataset:
        """Read the whole file now, pixel data included, and return this dataset.

        What is already in memory is kept. Afterwards the dataset no longer
        needs its file (until :meth:`unload`).
        """
        elements = self._lazy_state()["_dict"]
        for tag in [tag for tag, element in list(elements.items()) if _is_deferred(element)]:
            self._read_deferred(tag)
        return self

    def unload(self) -> None:
        """Forget the contents, pixel data included, and any change made to them.

        The next use reads the file again.
        """
        with self.__dict__["_lazy_lock"]:
            names = self.__dict__["_lazy_names"]
            if names is None:
                return
            for name in names:
                self.__dict__.pop(name, None)
            self.__dict__["_lazy_names"] = None

    def unload_pixels(self) -> None:
        """Forget the pixel data (and any change made to them) but keep the header.

        The next ask for the pixel data reads them from the file again. A
        deflated file, read whole, keeps them until :meth:`unload`.
        """
        with self.__dict__["_lazy_lock"]:
            if self.__dict__["_lazy_names"] is None:
                return
            elements: MutableMapping[BaseTag, Any] = self.__dict__["_dict"]
            elements.update(self.__dict__["_lazy_tail"])
            # pydicom keeps the last decoded pixel_array beside the elements
            self.__dict__["_pixel_array"] = None
            self.__dict__["_pixel_id"] = {}

    def read_value_into(self, key: TagType, buffer: memoryview | bytearray, offset: int = 0) -> bool:
        """Read part of an element's value from the file straight into ``buffer``; True if it did.

        Bytes ``offset`` to ``offset + len(buffer)`` of the value of the
        element at ``key`` (in bytes; ``buffer`` is writable and contiguous,
        e.g. a memoryview of a numpy array) are copied from the file into
        ``buffer``. The dataset keeps nothing: a reader can put pixel data
        where it wants them, frame by frame, with no copy in between and
        without the whole value ever being held in memory.

        Returns False, reading nothing, when the value is not waiting in the
        file with a defined length: it was read already, the element is
        encapsulated (compressed pixel data) or the file is deflated. Use
        ``ds[key].value`` then.

        Raises ``KeyError`` when the dataset has no such element,
        ``ValueError`` when the bytes asked for are not all inside the value,
        and :class:`~dicomnode.errors.InvalidDatasetError` when the file was
        changed since its header was read or is cut short.

        >>> frame = numpy.empty((rows, columns), dtype="<u2")
        >>> ds.read_value_into("PixelData", memoryview(frame), offset=k * frame.nbytes)
        True
        """
        tag = Tag(key)
        with self.__dict__["_lazy_lock"]:  # not while another thread unloads the header
            element = self._lazy_state()["_dict"].get(tag)
        if element is None:
            raise KeyError(tag)
        if not _is_deferred(element) or element.length == _UNDEFINED_LENGTH:
            return False
        view = memoryview(buffer).cast("B")
        if offset < 0 or offset + view.nbytes > element.length:
            raise ValueError(
                f"bytes {offset} to {offset + view.nbytes} of element {tag} were asked for; "
                f"its value holds {element.length} bytes"
            )
        read_value_range(self.path, element, view, offset)
        return True

    def _lazy_state(self) -> dict[str, Any]:
        """The attributes read from the file, reading its header if needed (one reader at a time)."""
        with self.__dict__["_lazy_lock"]:
            if self.__dict__["_lazy_names"] is not None:
                return self.__dict__
            loaded = _read_header(self.__dict__["_lazy_path"])
            state = dict(loaded.__dict__)
            # private blocks cache a reference to the dataset they were made for
            state["_private_blocks"] = {}
            # where the pixel data are, for unload_pixels to forget them again
            state["_lazy_tail"] = {tag: element for tag, element in loaded._dict.items()
                                   if _is_deferred(element)}
            self.__dict__.update(state)
            self.__dict__["_lazy_names"] = tuple(state)
            return self.__dict__

    def _read_deferred(self, key: TagType) -> None:
        """Read the value of the element at ``key`` if it is still in the file (pixel data)."""
        try:
            tag = Tag(key)
        except Exception:
            return  # Dataset.__getitem__ gives the KeyError
        if not _is_deferred(self._lazy_state()["_dict"].get(tag)):
            return
        with self.__dict__["_lazy_lock"]:
            elements = self._lazy_state()["_dict"]
            element = elements.get(tag)
            if _is_deferred(element):
                elements[tag] = _read_value(self.path, element)
                # converted under the lock too, so every thread gets the same value
                Dataset.__getitem__(self, tag)

    @overload
    def __getitem__(self, key: slice) -> Dataset: ...

    @overload
    def __getitem__(self, key: TagType) -> DataElement: ...

    def __getitem__(self, key: slice | TagType) -> Dataset | DataElement:
        # every way to a value (attribute, get, get_item, iteration, pixel_array,
        # save_as) comes here: the one place a deferred value is read, under the lock
        if not isinstance(key, slice):
            self._read_deferred(key)
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup failed: the name is a DICOM keyword or
        # an attribute that exists once the file is read
        if name in _OWN or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        state = self._lazy_state()
        if name in state:
            return state[name]
        return super().__getattr__(name)

    def __eq__(self, other: object) -> bool:
        # pydicom compares only datasets of the same class; a LazyDataset is
        # equal to any dataset with the same elements (pixel data read to compare)
        if other is self:
            return True
        if not isinstance(other, Dataset):
            return NotImplemented
        return len(self) == len(other) and all(
            tag in other and self[tag] == other[tag] for tag in self.keys()
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like every Dataset

    def __repr__(self) -> str:
        status = "loaded" if self.is_loaded else "not loaded"
        return f"<LazyDataset {str(self.path)!r} ({status})>"

    def __reduce__(self) -> tuple[Any, ...]:
        with self.__dict__["_lazy_lock"]:
            names = self.__dict__["_lazy_names"]
            if names is None:
                return (LazyDataset, (self.path,))
            state = {name: self.__dict__[name] for name in self.__dict__ if name not in _OWN}
        state["_private_blocks"] = {}
        return (_loaded_lazy_dataset, (self.path, state))


def _loaded_lazy_dataset(path: Path, state: dict[str, Any]) -> LazyDataset:
    """Rebuild a loaded :class:`LazyDataset` (pickle, copy) from its path and contents."""
    dataset = LazyDataset(path)
    dataset.__dict__.update(state)
    dataset.__dict__["_lazy_names"] = tuple(state)
    return dataset
