"""Durable storage of received instances: nothing acknowledged is lost.

With a ``data_directory`` every accepted instance is written *before* the
C-STORE success status goes back: its encoded bytes exactly as received,
behind a DICOM preamble and the file meta information, to a temporary file
that is then atomically renamed. Layout::

    data_directory/incoming/<safe patient key>/<safe SOPInstanceUID>.<reception id>.dcm

Folder and file names go through :func:`dicomnode.dicom.paths.safe_component`
(a PatientID of ``../../x`` is data). The fsync policy decides how hard a
crash of the *machine* (not just the process) is guarded against:

``"none"``
    the operating system writes when it likes; a killed process still loses
    nothing (the rename happened), a power cut may;
``"association"``
    files and folders of an association are synced when it is released;
``"instance"``
    each file and its folder are synced before success is returned (slowest).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

from dicomnode.dicom.paths import safe_component
from dicomnode.errors import StorageError
from dicomnode.server.logs import patient_label

__all__ = ["FsyncPolicy", "InstanceStore", "encode_file_meta", "written_order"]

FsyncPolicy = Literal["none", "association", "instance"]
FSYNC_POLICIES: tuple[str, ...] = ("none", "association", "instance")

logger = logging.getLogger("dicomnode.storage")

_PREAMBLE = b"\x00" * 128 + b"DICM"
_TEMPORARY_PREFIX = ".incoming-"


_SHORT_VRS = {"UI": b"\x00", "SH": b" ", "AE": b" ", "UL": b""}
_LONG_VRS = ("OB",)


def encode_file_meta(file_meta: FileMetaDataset) -> bytes:
    """The file meta information group (0002,xxxx) as explicit VR little endian bytes.

    The same bytes pydicom's ``write_file_meta_info`` writes for the elements a
    C-STORE receiver has, without its per-call validation (~1 ms, more than
    the rest of storing an instance); other VRs fall back to pydicom.
    """
    parts = []
    # the elements as they are held: iterating the dataset would convert (and validate) every raw value
    for tag, element in sorted(file_meta._dict.items()):
        if tag >> 16 != 0x0002 or tag & 0xFFFF == 0x0000:
            continue
        vr = element.VR
        if vr is None:
            return _encode_file_meta_with_pydicom(file_meta)
        if vr == "UL":
            if isinstance(element, RawDataElement):
                return _encode_file_meta_with_pydicom(file_meta)
            value = struct.pack("<I", int(element.value))
        elif vr in _SHORT_VRS or vr in _LONG_VRS:
            raw = element.value
            if isinstance(element, RawDataElement) and not element.is_little_endian:
                return _encode_file_meta_with_pydicom(file_meta)
            value = raw if isinstance(raw, bytes) else str(raw).encode("ascii")
            if len(value) % 2:
                value += _SHORT_VRS.get(vr, b"\x00") or b"\x00"
        else:
            return _encode_file_meta_with_pydicom(file_meta)
        header = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
        if vr in _LONG_VRS:
            parts.append(header + b"\x00\x00" + struct.pack("<I", len(value)) + value)
        else:
            parts.append(header + struct.pack("<H", len(value)) + value)
    body = b"".join(parts)
    return b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(body)) + body


def _encode_file_meta_with_pydicom(file_meta: FileMetaDataset) -> bytes:
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, file_meta, enforce_standard=True)
    return buffer.getvalue()


def _write_all(descriptor: int, head: bytes, body: Any) -> None:
    """Write ``head`` then ``body`` with as few system calls as the kernel allows.

    Each system call lets other threads take the interpreter lock, and getting
    it back can take milliseconds while an association thread is busy.
    """
    pending = [memoryview(head), memoryview(body).cast("B")]
    while pending:
        written = os.writev(descriptor, pending)
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if pending and written:
            pending[0] = pending[0][written:]


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _SpareFiles:
    """Empty files created ahead of need by a background thread, in ``incoming/.spare``.

    Creating a file costs far more than writing half a megabyte into it (an
    inode, a directory entry, the journal); a C-STORE waits for its file, so
    the creation happens before the instance arrives. A spare left by a crash
    was never acknowledged and is deleted at the next start.
    """

    def __init__(self, folder: Path, keep: int = 16) -> None:
        self.folder = folder
        self.keep = keep
        self._ready: collections.deque[tuple[Path, int]] = collections.deque()
        self._wanted = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._names = itertools.count()
        self._prefix = os.urandom(4).hex()

    def clean(self) -> None:
        """Delete spares a killed process left (call before this process makes any)."""
        if self.folder.is_dir():
            for leftover in self.folder.iterdir():
                leftover.unlink(missing_ok=True)

    def _create(self) -> tuple[Path, int]:
        path = self.folder / f"{self._prefix}-{next(self._names)}"
        try:
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            self.folder.mkdir(exist_ok=True)
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def take(self) -> tuple[Path, int]:
        """An empty file (path, open descriptor), made now if none is waiting."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(target=self._fill, name="dicomnode-spare-files", daemon=True)
                    self._thread.start()
        try:
            item = self._ready.popleft()
        except IndexError:
            item = self._create()
        if len(self._ready) <= self.keep // 2:  # refill in batches: fewer wake-ups, fewer lock hand-overs
            self._wanted.set()
        return item

    def _fill(self) -> None:
        while not self._closed:
            self._wanted.wait()
            self._wanted.clear()
            try:
                while len(self._ready) < self.keep and not self._closed:
                    self._ready.append(self._create())
            except OSError as error:  # a full disk: the receive path reports it when it writes
                logger.warning("cannot prepare spare files in %s: %s", self.folder, error)
                time.sleep(1.0)

    def close(self) -> None:
        """Stop the thread and delete the spare files (the next ``take`` starts over)."""
        with self._lock:
            self._closed = True
            self._wanted.set()
            if self._thread is not None:
                self._thread.join(5)
            while self._ready:
                path, descriptor = self._ready.popleft()
                os.close(descriptor)
                path.unlink(missing_ok=True)
            self._thread = None
            self._closed = False


def written_order(path: Path) -> tuple[int, str]:
    """Sort key of stored files: the time each was written, then its name."""
    try:
        return path.stat().st_mtime_ns, path.name
    except OSError:  # removed meanwhile
        return 0, path.name


class InstanceStore:
    """The ``incoming`` folder of a data directory: write, list and remove received instances."""

    def __init__(self, data_directory: Path | str, fsync: FsyncPolicy = "none") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        self.data_directory = Path(data_directory)
        self.directory = self.data_directory / "incoming"
        self.fsync = fsync
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._spares = _SpareFiles(self.directory / ".spare")
        except OSError as error:
            raise StorageError(f"cannot create the data directory {self.directory}: {error}") from error
        self._names = itertools.count()
        self._prefix = os.urandom(3).hex()
        self._folders: set[Path] = set()

    def close(self) -> None:
        """Release the spare files (the store can still write afterwards, just slower)."""
        self._spares.close()

    def path_for(self, patient_key: str, sop_instance_uid: str) -> Path:
        """A new file name for an instance of a patient: ``<SOPInstanceUID>.<reception>.dcm``.

        Every reception gets its own file, so an instance sent again while the
        first copy's job runs is not deleted when that job succeeds; the inputs
        keep one image per SOPInstanceUID however many files there are.
        """
        name = f"{safe_component(sop_instance_uid)}.{self._prefix}{next(self._names):x}.dcm"
        return self.directory / safe_component(patient_key) / name

    def write_encoded(self, patient_key: str, sop_instance_uid: str, file_meta: FileMetaDataset,
                      encoded: Any) -> Path:
        """Write the received bytes (``encoded``: bytes or a buffer) with file meta; return the path.

        The file appears under its final name only when complete.
        """
        temporary, path = self.write_aside(patient_key, sop_instance_uid, file_meta, encoded)
        self.place(temporary, path, patient_key, sop_instance_uid)
        return path

    def write_aside(self, patient_key: str, sop_instance_uid: str, file_meta: FileMetaDataset,
                    encoded: Any) -> tuple[Path, Path]:
        """Write the received bytes with file meta to a temporary file; return it and the final path.

        :meth:`place` moves it there. Until then it is not an instance of the
        data directory: a crash leaves only a temporary file, which the next
        start deletes (a receiving process writes so, and the node's process
        decides whether to keep it).
        """
        path = self.path_for(patient_key, sop_instance_uid)
        try:
            temporary, descriptor = self._spares.take()
            try:
                _write_all(descriptor, _PREAMBLE + encode_file_meta(file_meta), encoded)
                if self.fsync == "instance":
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            raise self._cannot_store(sop_instance_uid, patient_key, error) from error
        return temporary, path

    def place(self, temporary: Path, path: Path, patient_key: str, sop_instance_uid: str) -> None:
        """Move a file :meth:`write_aside` wrote to its final path (atomically; synced as ``fsync`` says)."""
        try:
            self._move_into_place(temporary, path)
            if self.fsync == "instance":
                _fsync_path(path.parent)
        except OSError as error:
            raise self._cannot_store(sop_instance_uid, patient_key, error) from error

    def _cannot_store(self, sop_instance_uid: str, patient_key: str, error: OSError) -> StorageError:
        return StorageError(f"cannot store instance {sop_instance_uid} of patient {patient_label(patient_key)} "
                            f"in {self.directory}: {error.strerror or type(error).__name__}")

    def _move_into_place(self, temporary: Path, path: Path) -> None:
        folder = path.parent
        if folder not in self._folders:
            folder.mkdir(exist_ok=True)
            self._folders.add(folder)
        try:
            os.replace(temporary, path)
        except FileNotFoundError:
            # a finished job removed the emptied patient folder just now
            folder.mkdir(exist_ok=True)
            os.replace(temporary, path)

    def write_dataset(self, patient_key: str, dataset: Dataset) -> Path:
        """Write a decoded dataset (one that already has ``file_meta``), atomically."""
        path = self.path_for(patient_key, str(dataset.SOPInstanceUID))
        try:
            path.parent.mkdir(exist_ok=True)
            temporary = path.parent / f"{_TEMPORARY_PREFIX}{uuid.uuid4().hex}"
            dataset.save_as(temporary, enforce_file_format=True)
            os.replace(temporary, path)
        except OSError as error:
            raise StorageError(f"cannot store {dataset.SOPInstanceUID} of patient {patient_label(patient_key)} in "
                               f"{self.directory}: {error.strerror or type(error).__name__}") from error
        return path

    def sync(self, paths: list[Path]) -> None:
        """fsync files and their folders (the ``"association"`` policy calls this on release)."""
        folders = set()
        for path in paths:
            try:
                _fsync_path(path)
            except FileNotFoundError:
                continue  # already dispatched and removed
            folders.add(path.parent)
        for folder in folders:
            try:
                _fsync_path(folder)
            except FileNotFoundError:
                continue

    def files(self) -> Iterator[Path]:
        """Every stored instance, each patient's in the order they were written (see :meth:`listing`)."""
        for folder, names in self.listing().items():
            # in the order they were written: an input's "first image" (the image that
            # started a patient, the series enforce_single_series keeps) stays the same
            yield from sorted((folder / name for name in names), key=written_order)

    def listing(self) -> dict[Path, list[str]]:
        """The file names of every stored instance by patient folder, not sorted; left-over temporary
        files of a crash are deleted.

        Only names are read (no ``stat`` of a file, no ``Path`` made per
        file): a node lists 20,000 held instances in a few hundredths of a
        second before it listens, and sorts each folder with
        :func:`written_order` when it reads it. Only the serving process calls
        this (at start, before it receives).
        """
        listing: dict[Path, list[str]] = {}
        if not self.directory.is_dir():
            return listing
        self._spares.clean()
        for entry in sorted(os.scandir(self.directory), key=lambda entry: entry.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            folder = Path(entry.path)
            names = []
            for name in os.listdir(folder):
                if name.startswith(_TEMPORARY_PREFIX):
                    logger.info("removing a partial file left by an interrupted write: %s", name)
                    (folder / name).unlink(missing_ok=True)
                elif name.endswith(".dcm"):
                    names.append(name)
            if names:
                listing[folder] = names
        return listing

    def remove(self, paths: list[Path]) -> None:
        """Delete instances (after their job succeeded) and the folders they leave empty."""
        folders = set()
        for path in paths:
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in folders:
            self._folders.discard(folder)
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: newer images of the same patient arrived meanwhile
