"""Ingest: one received instance becomes part of a patient — verified, routed, stored, added — or is refused.

Every instance goes through :meth:`Ingest.encoded`, whatever brought it: a
C-STORE on an association, a C-GET the node made itself, a STOW-RS request,
a quarantine retry, or :meth:`~dicomnode.server.nodes.AbstractPipeline.ingest`.
In order:

1. **whole?** A deflated dataset is inflated (at most
   ``maximum_inflated_size`` bytes); every element's length must fit in the
   bytes received (:func:`dicomnode.dicom.encoded.find_damage`). A truncated
   or lying dataset gets 0xC001 naming the element, and nothing is kept.
2. **routing tags:** the dataset is parsed without converting values
   (pydicom converts on access; with ``lazy_storage`` parsing stops before
   the pixel data), the patient key is read (0xC002 when it is absent), and
   the pipeline's ``filter`` runs (0xC003; 0xC005 when it raises).
3. **under the patient's lock** (:meth:`~dicomnode.server.pipeline_tree.PipelineTree.patient`):
   the inputs decide, once (0xC004 when none takes it); with a data directory
   the received bytes are written with their file meta (temporary file,
   atomic rename; 0xA700 when that fails, and no partial file stays); the
   image joins the inputs that took it.

Only then is success returned: an instance acknowledged is whole and stored
as configured. With ``rejection_policy = "discard"`` (the default) the
0xC002-0xC004 cases answer success and the instance is dropped: a sender
that stops at the first failure status (DCMTK ``storescu`` without
``--no-halt``, Orthanc's store jobs) still delivers the rest of the study.

An instance of a study whose job already started is *late*; the
``late_images`` setting says what it does (:mod:`dicomnode.server.late`).

The log gets one line per series per association for what was not stored
(discarded, refused, late and ignored) or was late, with the count, not one
line per instance; instances that come otherwise than on an association
(``node.ingest``, a C-GET) are logged one by one.

C-STORE statuses
----------------
======  =====================================================================
0x0000  Success: stored (or, with ``rejection_policy = "discard"``, discarded)
0xA700  Refused: out of resources -- the instance could not be written to the
        data directory (disk full, permissions); nothing was kept
0xA701  Refused: out of resources -- a deflated dataset inflates to more than
        ``maximum_inflated_size``
0xC001  Error: cannot understand -- the dataset is not whole (an element's
        length does not fit in the bytes received) or cannot be decoded
0xC002  Error: cannot understand -- the dataset lacks the patient identifier
        (``patient_identifier_tag``) or it is empty
0xC003  Error: cannot understand -- the pipeline's ``filter`` rejected it
0xC004  Error: cannot understand -- no input of the pipeline accepts it
0xC005  Error: cannot understand -- ``filter`` or routing raised an exception
======  =====================================================================

Every failure status carries an ErrorComment that starts with the reason
(the first 64 characters are all a sender shows).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from pydicom import Dataset
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from dicomnode.dicom.encoded import (
    DatasetDamageError,
    InflateLimitError,
    find_damage,
    inflate,
    read_elements,
)
from dicomnode.dicom.lazy import LazyDataset
from dicomnode.errors import StorageError
from dicomnode.extension.handles import IngestResult, Source
from dicomnode.server.logs import patient_label

if TYPE_CHECKING:
    from dicomnode.server.config import PipelineConfig
    from dicomnode.server.events import NodeEvents
    from dicomnode.server.late import RecentJobs
    from dicomnode.server.pipeline_tree import PipelineTree
    from dicomnode.server.storage import InstanceStore

__all__ = [
    "DISCARDABLE",
    "STATUS_CANNOT_DECODE",
    "STATUS_FILTER_ERROR",
    "STATUS_MISSING_PATIENT_ID",
    "STATUS_NOT_ACCEPTED",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_REJECTED_BY_FILTER",
    "STATUS_SUCCESS",
    "STATUS_TOO_LARGE",
    "Examined",
    "Ingest",
    "decode_received",
    "examine",
]

logger = logging.getLogger("dicomnode.receive")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_TOO_LARGE = 0xA701
STATUS_CANNOT_DECODE = 0xC001
STATUS_MISSING_PATIENT_ID = 0xC002
STATUS_REJECTED_BY_FILTER = 0xC003
STATUS_NOT_ACCEPTED = 0xC004
STATUS_FILTER_ERROR = 0xC005

#: the statuses ``rejection_policy = "discard"`` turns into success
DISCARDABLE = (STATUS_MISSING_PATIENT_ID, STATUS_REJECTED_BY_FILTER, STATUS_NOT_ACCEPTED)

_PIXEL_DATA = Tag(0x7FE00010)
#: values at least this long stay in the received bytes until used
_DEFER_SIZE = 64 * 1024


def _before_pixels(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return bool(tag >= _PIXEL_DATA)


class _ReceivedDataset(FileDataset):
    """A dataset over its received bytes that lets go of them once its deferred values are read.

    pydicom copies a deferred value (the pixel data) out of the buffer on
    first use; keeping the buffer after that would hold every slice twice
    (+150 MiB for a 300-slice CT in memory). The tags still to be read are
    noted once, when the dataset is made, so other lookups cost one set test.
    """

    def __init__(self, stream: BytesIO, dataset: Dataset | dict[BaseTag, DataElement | RawDataElement], *,
                 implicit: bool, little: bool, file_meta: FileMetaDataset | None = None) -> None:
        super().__init__(stream, dataset, file_meta=file_meta, is_implicit_VR=implicit, is_little_endian=little)
        # only a value longer than _DEFER_SIZE is deferred: a smaller dataset has none
        self._deferred = {tag for tag, element in self._dict.items()
                          if isinstance(element, RawDataElement) and element.value is None and element.length
                          } if stream.getbuffer().nbytes > _DEFER_SIZE else set()
        if not self._deferred:
            self.buffer = None

    def __getitem__(self, key: Any) -> Any:
        element = super().__getitem__(key)
        deferred = self._deferred
        if deferred and isinstance(element, DataElement) and element.tag in deferred:
            deferred.discard(element.tag)
            if not deferred:  # every value now lives in the dataset itself
                self.buffer = None
        return element


def decode_received(stream: BytesIO, transfer_syntax: str, *, header_only: bool,
                    elements: dict[BaseTag, DataElement | RawDataElement] | None = None,
                    file_meta: FileMetaDataset | None = None) -> Dataset:
    """Parse a received (already inflated) dataset without converting its values.

    With ``header_only`` parsing stops before the pixel data. Otherwise the
    result is a dataset over the received bytes whose large values (the pixel
    data) are not copied out of them until first used — on the job thread
    that grinds, not on the association thread (pydicom's deferred reading,
    from the buffer instead of a file). Once they are, the dataset drops the
    received bytes, so the pixel data is held once.

    ``elements`` are the stream's elements as
    :func:`~dicomnode.dicom.encoded.read_elements` read them (with
    ``defer_size=_DEFER_SIZE``, and stopping at the pixel data for
    ``header_only``); without them pydicom's reader reads the stream.
    ``file_meta`` becomes the dataset's (not for ``header_only``).
    """
    syntax = _syntax(transfer_syntax)
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    if elements is not None:
        dataset = (Dataset(elements) if header_only else
                   _ReceivedDataset(stream, elements, implicit=implicit, little=little, file_meta=file_meta))
        charset = elements.get(_CHARACTER_SET)
        encoding: str | list[str] = default_encoding
        if charset is not None:
            value = charset.value if isinstance(charset, DataElement) else convert_raw_data_element(charset).value
            encoding = convert_encodings(value)
        dataset.set_original_encoding(implicit, little, encoding)
        return dataset
    stream.seek(0)
    if header_only:
        return read_dataset(stream, implicit, little, stop_when=_before_pixels)
    dataset = read_dataset(stream, implicit, little, defer_size=_DEFER_SIZE)
    return _ReceivedDataset(stream, dataset, implicit=implicit, little=little)


_CHARACTER_SET = BaseTag(0x00080005)
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
#: the transfer syntaxes seen, as pydicom UIDs (making a UID validates it, each time)
_SYNTAXES: dict[str, UID] = {}


def _syntax(text: str) -> UID:
    syntax = _SYNTAXES.get(text)
    if syntax is None:
        syntax = UID(text)
        if len(_SYNTAXES) < 64:  # a peer sending made-up syntaxes must not grow it without end
            _SYNTAXES[text] = syntax
    return syntax


def _sop_instance_of(file_meta: FileMetaDataset) -> str:
    """MediaStorageSOPInstanceUID as text, without converting (and validating) the element."""
    try:
        element = file_meta.get_item(_MEDIA_STORAGE_SOP_INSTANCE_UID)
    except KeyError:
        return ""
    value = element.value if element is not None else None
    if isinstance(value, bytes):
        return value.rstrip(b"\x00 ").decode("ascii", "replace")
    return str(value or "")


def _short(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."


class SeriesNotes:
    """What happened to instances that were not simply stored, counted per association and series.

    One line per (patient, series, what happened) when the association
    ends, instead of one per instance: a 300-slice series no input wants is
    one log line.
    """

    def __init__(self) -> None:
        self._notes: dict[int, dict[tuple[str, str, str], list[Any]]] = {}
        self._lock = threading.Lock()

    def note(self, source: Source, patient_key: str, series_uid: str, what: str, why: str, level: int) -> None:
        """Count one instance; the first instance's ``why`` stands for the series."""
        key = (patient_key, series_uid, what)
        with self._lock:
            notes = self._notes.setdefault(source.association, {})
            entry = notes.get(key)
            if entry is None:
                notes[key] = [1, why, level, source.calling_aet]
            else:
                entry[0] += 1

    def flush(self, source: Source) -> int:
        """Log the lines of one association (it ended); return how many."""
        with self._lock:
            notes = self._notes.pop(source.association, {})
        for (patient_key, series_uid, what), (count, why, level, calling_aet) in notes.items():
            logger.log(level, "[patient %s from %s] %d instance%s of series %s %s in this association: %s",
                       patient_label(patient_key) or "?", calling_aet or "?", count, "" if count == 1 else "s",
                       series_uid or "?", what, why)
        return len(notes)


class Ingest:
    """The node's one way in for instances: verify, route, store, add (see the module docstring).

    ``accept`` is the pipeline's ``filter``; ``tree`` the patients held;
    ``store`` the data directory's incoming store, or None to keep images in
    memory only; ``late_jobs`` the jobs started lately (late images), or None.
    """

    def __init__(self, config: PipelineConfig, tree: PipelineTree, store: InstanceStore | None,
                 accept: Callable[[Dataset], bool], late_jobs: RecentJobs | None = None, *,
                 events: NodeEvents | None = None) -> None:
        from dicomnode.server.events import NodeEvents

        self.config = config
        self.tree = tree
        self.store = store
        self.accept = accept
        self.late_jobs = late_jobs
        self.events = events if events is not None else NodeEvents()
        self.notes = SeriesNotes()
        #: called with (source, patient key, series UID, SOPInstanceUID) for every instance with a
        #: patient key, stored or not (the node counts a study's instances for ``completeness = "query"``)
        self.seen: Callable[[Source, Dataset, str], None] | None = None

    def association_ended(self, source: Source) -> None:
        """Log what the association's instances that were not simply stored did, one line per series."""
        self.notes.flush(source)

    def _log(self, source: Source, patient_key: str, dataset: Dataset | None, sop_uid: str, what: str,
             why: str, level: int) -> None:
        series = "" if dataset is None else str(dataset.get("SeriesInstanceUID", "") or "")
        if source.kind == "c-store":
            self.notes.note(source, patient_key, series, what, why, level)
        else:
            logger.log(level, "[patient %s from %s] %s %s: %s", patient_label(patient_key) or "?", source.calling_aet or "?",
                       sop_uid or "?", what, why)

    def encoded(self, encoded: bytes | bytearray | memoryview | BytesIO, transfer_syntax: str,
                file_meta: FileMetaDataset, source: Source) -> IngestResult:
        """Ingest one instance given as its encoded dataset (no file meta) in ``transfer_syntax``.

        ``encoded`` is kept as it is in the data directory (a deflated dataset
        stays deflated on disk). Every outcome is reported to the node's events.
        """
        size = _size(encoded)
        result = self._ingest(encoded, transfer_syntax, file_meta, source)
        self.events.instance(source, result, size)
        return result

    def _ingest(self, encoded: bytes | bytearray | memoryview | BytesIO, transfer_syntax: str,
                file_meta: FileMetaDataset, source: Source) -> IngestResult:
        config = self.config
        lazy = config.lazy_storage and self.store is not None
        examined = examine(encoded, transfer_syntax, file_meta, source, lazy=lazy,
                           maximum_inflated_size=config.maximum_inflated_size,
                           patient_identifier_tag=config.patient_identifier_tag)
        if isinstance(examined, IngestResult):
            return examined
        try:
            return self._decide(examined.dataset, examined.patient_key, examined.sop_uid, source, lazy,
                                raw=examined.raw, file_meta=file_meta)
        finally:
            examined.raw.release()

    def adopt(self, header: Dataset, patient_key: str, sop_uid: str, written: tuple[Path, Path] | None, size: int,
              source: Source) -> IngestResult:
        """Decide on an instance a receiving process examined and wrote aside (lazy storage).

        The same decisions as :meth:`encoded` after its checks (filter,
        routing, late images, rejection policy), on the instance's header.
        ``written`` is (the temporary file, its final path) of
        :meth:`~dicomnode.server.storage.InstanceStore.write_aside` (None
        when it has no patient key): a kept instance is moved into place
        under the patient's lock, any other is removed. Reported to the
        node's events like :meth:`encoded`.
        """
        result = IngestResult(STATUS_OUT_OF_RESOURCES, "the node failed", patient_key, sop_uid)
        try:
            result = self._decide(header, patient_key, sop_uid, source, True, written=written)
        finally:
            if written is not None and not result.stored:
                written[0].unlink(missing_ok=True)
            self.events.instance(source, result, size)
        return result

    def _decide(self, dataset: Dataset, patient_key: str, sop_uid: str, source: Source, lazy: bool, *,
                raw: memoryview | None = None, file_meta: FileMetaDataset | None = None,
                written: tuple[Path, Path] | None = None) -> IngestResult:
        """Patient key, filter, then route, store and add: what follows the checks of a whole instance."""
        if not patient_key:
            return self._reject(source, "", dataset, sop_uid, STATUS_MISSING_PATIENT_ID,
                                f"lacks the patient identifier {Tag(self.config.patient_identifier_tag)}")
        if self.seen is not None:
            self.seen(source, dataset, patient_key)
        try:
            if not self.accept(dataset):
                return self._reject(source, patient_key, dataset, sop_uid, STATUS_REJECTED_BY_FILTER,
                                    "rejected by filter()")
        except Exception as error:  # user code: a bug must not take the association down
            logger.exception("[patient %s from %s] C-STORE %s: filter raised", patient_label(patient_key),
                             source.calling_aet or "?", sop_uid)
            return IngestResult(STATUS_FILTER_ERROR, _short(f"filter raised {type(error).__name__}"), patient_key,
                                sop_uid)
        return self._route_store_add(raw, dataset, patient_key, sop_uid, file_meta, source, lazy, written)

    def _route_store_add(self, raw: memoryview | None, dataset: Dataset, patient_key: str, sop_uid: str,
                         file_meta: FileMetaDataset | None, source: Source, lazy: bool,
                         written: tuple[Path, Path] | None = None) -> IngestResult:
        with self.tree.patient(patient_key) as container:
            late = None
            if self.late_jobs is not None:
                late = self.late_jobs.job_of(str(dataset.get("StudyInstanceUID", "") or ""), patient_key)
            if late is not None and self.config.late_images == "ignore":
                self._log(source, patient_key, dataset, sop_uid, "ignored (late_images 'ignore')",
                          f"their study went to {late.describe()}", logging.WARNING)
                return IngestResult(STATUS_SUCCESS, "", patient_key, sop_uid, stored=False)
            try:
                names, why = container.choose(dataset)
            except Exception as error:  # an input's user code
                logger.exception("[patient %s from %s] C-STORE %s: routing raised", patient_label(patient_key),
                                 source.calling_aet or "?", sop_uid)
                return IngestResult(STATUS_FILTER_ERROR, _short(f"routing raised {type(error).__name__}"),
                                    patient_key, sop_uid)
            if not names:
                return self._reject(source, patient_key, dataset, sop_uid, STATUS_NOT_ACCEPTED,
                                    f"no input accepts it: {why}")
            path: Path | None = None
            header: Dataset | None = None
            kept: Dataset = dataset
            if self.store is not None:
                try:
                    if written is not None:  # written aside by a receiving process
                        path = written[1]
                        self.store.place(written[0], path, patient_key, sop_uid)
                    else:
                        assert raw is not None and file_meta is not None  # encoded() always has them
                        path = self.store.write_encoded(patient_key, sop_uid, file_meta, raw)
                except StorageError as error:
                    logger.error("[patient %s from %s] C-STORE %s: %s", patient_label(patient_key), source.calling_aet or "?",
                                 sop_uid, error)
                    return IngestResult(STATUS_OUT_OF_RESOURCES, "cannot store the instance", patient_key, sop_uid)
                if lazy:
                    header, kept = dataset, LazyDataset(path)
            elif file_meta is not None:
                dataset.file_meta = file_meta
            container.add_chosen(names, kept, path, header=header, calling_aet=source.calling_aet,
                                 known_endpoints=self.tree.known_endpoints)
            restoring = self.tree.restoring
            if restoring is not None and restoring(patient_key):
                # newer than a stored copy the restore has yet to read (server.restore)
                container.received_while_restoring.add(sop_uid)
            if late is not None:
                what = f"late (late_images {self.config.late_images!r})"
                if self.config.late_images == "rerun":
                    if not late.finished or late.retained:
                        container.rerun_of = container.rerun_of or late
                        what += ": the job runs again with them"
                    elif not late.succeeded:
                        what += ": a new job (the earlier job failed; its images are in the quarantine)"
                else:
                    what += ": a new job"
                self._log(source, patient_key, dataset, sop_uid, what, f"their study went to {late.describe()}",
                          logging.WARNING)
        return IngestResult(STATUS_SUCCESS, "", patient_key, sop_uid, stored=True, path=path,
                            series_instance_uid=str(dataset.get("SeriesInstanceUID", "") or ""),
                            modality=str(dataset.get("Modality", "") or ""))

    def _reject(self, source: Source, patient_key: str, dataset: Dataset | None, sop_uid: str, code: int,
                why: str) -> IngestResult:
        discard = self.config.rejection_policy == "discard" and code in DISCARDABLE
        if discard:
            self._log(source, patient_key, dataset, sop_uid, "discarded", why, logging.INFO)
            return IngestResult(STATUS_SUCCESS, "", patient_key, sop_uid, stored=False)
        self._log(source, patient_key, dataset, sop_uid, f"refused with status 0x{code:04X}", why, logging.WARNING)
        return IngestResult(code, _short(why), patient_key, sop_uid)


@attrs.frozen
class Examined:
    """An instance found whole and parsed: its dataset (the header with lazy storage), keys and bytes."""

    dataset: Dataset
    patient_key: str
    sop_uid: str
    #: the received (inflated) bytes; the caller releases the view when done
    raw: memoryview


def examine(encoded: bytes | bytearray | memoryview | BytesIO, transfer_syntax: str, file_meta: FileMetaDataset,
            source: Source, *, lazy: bool, maximum_inflated_size: int,
            patient_identifier_tag: int) -> Examined | IngestResult:
    """The checks every instance passes before any decision: whole? decodable? its patient key.

    Returns what was found, or the refusal (0xA701, 0xC001). Needs nothing
    of the node but its settings, so a receiving process runs it too
    (:mod:`dicomnode.server.processes`).
    """
    if isinstance(encoded, BytesIO):
        received = encoded  # pynetdicom's own buffer: parsed where it is, never copied
    else:
        received = BytesIO(encoded if isinstance(encoded, bytes) else bytes(encoded))
    raw = received.getbuffer()
    sop_uid = _sop_instance_of(file_meta)
    try:
        syntax = _syntax(transfer_syntax)
        stream, elements = _verified(raw, received, syntax, source, sop_uid, lazy, maximum_inflated_size)
    except _Refused as refused:
        raw.release()
        return refused.result
    try:
        dataset = decode_received(stream, syntax, header_only=lazy, elements=elements, file_meta=file_meta)
        sop_uid = str(dataset.get("SOPInstanceUID", "") or sop_uid)
        key_element = dataset.get(patient_identifier_tag)
        patient_key = "" if key_element is None else str(key_element.value).strip()
    except Exception as error:  # a malformed value may fail to parse in many ways
        raw.release()
        logger.warning("C-STORE %s from %s: cannot decode the dataset: %s: %s", sop_uid or "?",
                       source.calling_aet or "?", type(error).__name__, _first_line(error))
        return IngestResult(STATUS_CANNOT_DECODE, _short(f"cannot decode: {type(error).__name__}"),
                            sop_instance_uid=sop_uid)
    return Examined(dataset, patient_key, sop_uid, raw)


def _verified(raw: memoryview, received: BytesIO, syntax: UID, source: Source, sop_uid: str, lazy: bool,
              maximum_inflated_size: int) -> tuple[BytesIO, dict[BaseTag, DataElement | RawDataElement] | None]:
    """The stream to parse (inflated when deflated) and its elements; raises _Refused when it is not whole.

    The elements are None when pydicom's reader must read the stream
    (:func:`~dicomnode.dicom.encoded.read_elements`).
    """
    data: bytes | memoryview = raw
    if syntax.is_deflated:
        try:
            data = inflate(raw, maximum_inflated_size)
        except InflateLimitError as error:
            logger.warning("C-STORE %s from %s refused: %s", sop_uid or "?", source.calling_aet or "?", error)
            raise _Refused(IngestResult(STATUS_TOO_LARGE, _short(
                f"inflates to more than {maximum_inflated_size} bytes"),
                sop_instance_uid=sop_uid)) from None
        except zlib.error as error:
            raise _Refused(IngestResult(STATUS_CANNOT_DECODE, "not deflated data: cannot inflate",
                                        sop_instance_uid=sop_uid)) from error
    damage = None
    elements = None
    try:
        elements = read_elements(data, implicit=syntax.is_implicit_VR, little=syntax.is_little_endian,
                                 defer_size=_DEFER_SIZE, keep_before=_PIXEL_DATA if lazy else None)
    except DatasetDamageError as error:
        damage = error.damage
    if damage is None and elements is None:  # a dataset read_elements leaves to pydicom's reader
        damage = find_damage(data, implicit=syntax.is_implicit_VR, little=syntax.is_little_endian)
    if damage is not None:
        logger.warning("C-STORE %s from %s refused: the dataset is not whole: %s", sop_uid or "?",
                       source.calling_aet or "?", damage)
        raise _Refused(IngestResult(STATUS_CANNOT_DECODE, _short(damage.short), sop_instance_uid=sop_uid))
    return (BytesIO(data) if isinstance(data, bytes) else received), elements


def _size(encoded: bytes | bytearray | memoryview | BytesIO) -> int:
    if isinstance(encoded, BytesIO):
        with encoded.getbuffer() as view:
            return view.nbytes
    return memoryview(encoded).nbytes


class _Refused(Exception):
    def __init__(self, result: IngestResult) -> None:
        super().__init__(result.comment)
        self.result = result


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
