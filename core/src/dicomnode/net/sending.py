"""C-STORE client: send datasets or files to another node, and say exactly what arrived.

Import the public names from :mod:`dicomnode.net`; this module holds
the C-STORE half so that each module keeps to one idea.

How an association is planned: for every SOP class being sent, one
presentation context per transfer syntax present (so the peer can accept
each as it is) plus one fallback context offering whichever of Explicit and
Implicit VR Little Endian is not already proposed, when the data is
uncompressed little endian and so can be re-encoded. When more than 128
contexts would be needed, the SOP classes are spread over several
associations, one after the other.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config as _pynetdicom_config
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from dicomnode.dicom.encoded import encode_dataset, transfer_syntax_of
from dicomnode.dicom.lazy import LazyDataset
from dicomnode.errors import AssociationError, DimseError
from dicomnode.net.adapter import parked_reactor, read_pdus, wake_on_data
from dicomnode.net.pdata import direct_socket, send_c_store
from dicomnode.net.tls import TlsSettings, client_context
from dicomnode.net.transport import (
    application_entity,
    associate,
    end,
    no_response_kind,
    no_response_reason,
)

if TYPE_CHECKING:
    from pynetdicom import AE
    from pynetdicom.association import Association

    from dicomnode.net.address import Address

__all__ = ["FailedInstance", "SendResult", "send_datasets"]

logger = logging.getLogger("dicomnode.dimse")

#: the most presentation contexts one association may propose (PS3.8 9.3.2.2: odd IDs 1..255)
MAX_CONTEXTS = 128
_UNCOMPRESSED_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@attrs.frozen
class FailedInstance:
    """One instance the peer did not store, and why.

    ``status`` is the C-STORE response status (``0xA700`` …), or None when no
    response came (unreadable file, no acceptable presentation context,
    association lost). ``path`` is the file it came from, if any.
    """

    sop_instance_uid: str
    status: int | None
    reason: str
    path: Path | None = None


@attrs.frozen
class SendResult:
    """What :func:`send_datasets` achieved. It never raises for peer or network trouble.

    ``accepted`` holds the SOPInstanceUIDs the peer stored (warning statuses
    included), ``failed`` what it refused or what could not be sent,
    ``error`` why an association could not be made or broke off, and
    ``not_sent`` the SOPInstanceUIDs never attempted because of that.
    """

    address: Address
    accepted: tuple[str, ...] = ()
    failed: tuple[FailedInstance, ...] = ()
    error: str | None = None
    not_sent: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every instance was stored (possibly with a warning status)."""
        return self.error is None and not self.failed and not self.not_sent

    def __str__(self) -> str:
        text = f"{len(self.accepted)} sent, {len(self.failed)} failed"
        if self.not_sent:
            text += f", {len(self.not_sent)} not sent"
        if self.error:
            return f"{text}; {self.error}"
        return f"{self.address}: {text}"


@attrs.frozen(eq=False)
class _Item:
    """One thing to send, as planned from its header."""

    index: int
    source: Dataset | Path
    sop_class: UID
    sop_instance: str
    transfer_syntax: UID

    @property
    def path(self) -> Path | None:
        """The file it comes from, if it comes from one (for the failure reports)."""
        return self.source if isinstance(self.source, Path) else None


def _plan(index: int, source: Dataset | Path | str) -> _Item | FailedInstance:
    """Read what is needed to propose a context: SOP class, SOP instance, transfer syntax."""
    if isinstance(source, LazyDataset) and not source.is_loaded:
        source = source.path  # its file, as it is on disk: nothing is loaded into memory
    if isinstance(source, Dataset):
        missing = [kw for kw in ("SOPClassUID", "SOPInstanceUID") if kw not in source]
        if missing:
            return FailedInstance(str(source.get("SOPInstanceUID", "")), None,
                                  f"the dataset lacks {' and '.join(missing)}, which C-STORE needs")
        return _Item(index, source, UID(source.SOPClassUID), str(source.SOPInstanceUID),
                     transfer_syntax_of(source))
    path = Path(source)
    try:
        meta = read_file_meta_info(path)
    except InvalidDicomError:
        return FailedInstance("", None, f"{path}: not a DICOM file (no 'DICM' prefix after the preamble)",
                              path)
    except Exception as error:  # pydicom reports a damaged file with many exception types
        return FailedInstance("", None, f"{path}: cannot read: {_first_line(error)}", path)
    missing = [kw for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
               if kw not in meta]
    if missing:
        return FailedInstance(str(meta.get("MediaStorageSOPInstanceUID", "")), None,
                              f"{path}: the file meta information lacks {', '.join(missing)}", path)
    return _Item(index, path, UID(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                 UID(meta.TransferSyntaxUID))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _convertible(syntax: UID) -> bool:
    """Whether the data can be re-encoded in another uncompressed little-endian syntax."""
    return syntax.is_little_endian and not syntax.is_encapsulated


def _contexts_for(sop_class: UID, syntaxes: list[UID]) -> list[PresentationContext]:
    contexts = [build_context(sop_class, syntax) for syntax in syntaxes]
    if any(_convertible(syntax) for syntax in syntaxes):
        fallback: list[str | UID] = [syntax for syntax in _UNCOMPRESSED_LE if syntax not in syntaxes]
        if fallback:
            contexts.append(build_context(sop_class, fallback))
    return contexts


def _associations(items: list[_Item]) -> Iterator[tuple[list[PresentationContext], list[_Item]]]:
    """Group the items by SOP class into associations of at most MAX_CONTEXTS contexts."""
    by_class: dict[UID, list[_Item]] = {}
    for item in items:
        by_class.setdefault(item.sop_class, []).append(item)
    contexts: list[PresentationContext] = []
    classes: set[UID] = set()
    for sop_class, members in by_class.items():
        syntaxes = list(dict.fromkeys(item.transfer_syntax for item in members))
        needed = _contexts_for(sop_class, syntaxes)
        if contexts and len(contexts) + len(needed) > MAX_CONTEXTS:
            yield contexts, [item for item in items if item.sop_class in classes]
            contexts, classes = [], set()
        contexts.extend(needed)
        classes.add(sop_class)
    if contexts:
        yield contexts, [item for item in items if item.sop_class in classes]


def _status_text(code: int) -> str:
    category, description = STORAGE_SERVICE_CLASS_STATUS.get(code, (code_to_category(code), "unknown status"))
    return f"status 0x{code:04X} {category}: {description}"


def _no_context_reason(assoc: Association, item: _Item, address: Address) -> str | None:
    """Why no accepted context can carry the item, or None when one can."""
    accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == item.sop_class]
    syntaxes = [UID(cx.transfer_syntax[0]) for cx in accepted]
    if item.transfer_syntax in syntaxes:
        return None
    if _convertible(item.transfer_syntax) and any(_convertible(s) for s in syntaxes):
        logger.debug("%s: %s refused %s, re-encoding in %s", item.sop_instance, address,
                     item.transfer_syntax.name, [s.name for s in syntaxes])
        return None
    if not accepted:
        return f"{address} refused the SOP class {item.sop_class.name} ({item.sop_class})"
    detail = ("compressed data is not converted: decompress it before sending"
              if item.transfer_syntax.is_encapsulated else "big endian data is not converted")
    return (f"{address} accepted {item.sop_class.name} only as {', '.join(s.name for s in syntaxes)}, "
            f"not as {item.transfer_syntax.name}; {detail}")


def _accepted_as_is(assoc: Association, item: _Item) -> bool:
    """Whether the peer accepted the item's SOP class in the item's own transfer syntax."""
    return any(cx.abstract_syntax == item.sop_class and cx.transfer_syntax[0] == item.transfer_syntax
               for cx in assoc.accepted_contexts)


_streaming_lock = threading.Lock()
_streaming_users = 0
_streaming_before = False


@contextmanager
def _file_streaming() -> Iterator[None]:
    """Let pynetdicom send files from disk as they are encoded while we send.

    With pynetdicom's ``STORE_SEND_CHUNKED_DATASET`` a file given by path is
    streamed in chunks instead of decoded and encoded again (about a third of
    the time a C-STORE takes). We give pynetdicom a path only when the peer
    accepted the file's own transfer syntax, so the flag never changes what
    arrives. It is process-wide, hence counted: its earlier value comes back
    when the last send ends.
    """
    global _streaming_users, _streaming_before
    with _streaming_lock:
        if _streaming_users == 0:
            _streaming_before = _pynetdicom_config.STORE_SEND_CHUNKED_DATASET
            _pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
        _streaming_users += 1
    try:
        yield
    finally:
        with _streaming_lock:
            _streaming_users -= 1
            if _streaming_users == 0:
                _pynetdicom_config.STORE_SEND_CHUNKED_DATASET = _streaming_before


def _context_for(assoc: Association, item: _Item) -> PresentationContext:
    """The accepted context to send the item on: its own transfer syntax, else one it converts to.

    Call only when :func:`_no_context_reason` found none missing.
    """
    accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == item.sop_class]
    for context in accepted:
        if context.transfer_syntax[0] == item.transfer_syntax:
            return context
    return next(cx for cx in accepted if _convertible(UID(cx.transfer_syntax[0])))


def _encoded(item: _Item, syntax: UID) -> bytes:
    """The item's dataset encoded in ``syntax``: a file's own bytes when it is already in it."""
    dataset: Dataset
    if isinstance(item.source, Path):
        if item.transfer_syntax == syntax:
            _, offset = split_dataset(item.source)
            with open(item.source, "rb") as file:
                file.seek(offset)
                return file.read()
        dataset = dcmread(item.source)
    else:
        dataset = item.source
    return encode_dataset(dataset, syntax)


@attrs.frozen
class _Ready:
    """An item ready to go: the context it goes on and what is written (encoded bytes, or a carrier)."""

    context_id: int
    payload: bytes | Dataset | Path


def _prepare(assoc: Association, item: _Item, address: Address, *, encode: bool) -> _Ready | FailedInstance:
    """What the item goes as: its encoded dataset (``encode``), else what pynetdicom's send takes."""
    path = item.path
    reason = _no_context_reason(assoc, item, address)
    if reason is not None:
        return FailedInstance(item.sop_instance, None, reason, path)
    context = _context_for(assoc, item)
    try:
        payload = _encoded(item, UID(context.transfer_syntax[0])) if encode else _carrier(assoc, item)
    except Exception as error:  # pydicom reports a damaged file or dataset with many exception types
        what = f"{path}: cannot read" if path is not None else "cannot encode the dataset"
        return FailedInstance(item.sop_instance, None, f"{what}: {_first_line(error)}", path)
    assert context.context_id is not None  # every accepted context has its ID
    return _Ready(context.context_id, payload)


#: instances read and encoded ahead of the one being sent (each held in memory until sent)
PREPARED_AHEAD = 4


class _Prepared:
    """Reads (and encodes) the items on a thread of its own, at most :data:`PREPARED_AHEAD` ahead.

    Encoding an instance (pydicom, ~1 ms for a 512x512 slice) then overlaps
    the time the peer takes to store the one before it. Iterate it inside
    ``with``: leaving early stops the thread.
    """

    def __init__(self, assoc: Association, items: list[_Item], address: Address, *, encode: bool) -> None:
        self._assoc = assoc
        self._encode = encode
        self._items = items
        self._address = address
        self._queue: queue.Queue[tuple[_Item, _Ready | FailedInstance] | None] = queue.Queue(PREPARED_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dicomnode-encode", daemon=True)

    def _run(self) -> None:
        for item in self._items:
            ready = _prepare(self._assoc, item, self._address, encode=self._encode)
            while not self._stop.is_set():
                try:
                    self._queue.put((item, ready), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set():
                return
        self._queue.put(None)

    def __enter__(self) -> Iterator[tuple[_Item, _Ready | FailedInstance]]:
        self._thread.start()
        return iter(self._queue.get, None)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _carrier(assoc: Association, item: _Item) -> Dataset | Path:
    """What to hand to pynetdicom: the file itself when it can go as it is, else a dataset.

    A dataset always carries the file meta pynetdicom needs to pick a context.
    """
    if isinstance(item.source, Path):
        if _accepted_as_is(assoc, item):
            return item.source
        return dcmread(item.source)
    dataset = item.source
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        return dataset
    # a shallow copy: the caller's dataset is not changed, its elements are shared
    carrier = dataset.copy()
    carrier.file_meta = FileMetaDataset()
    carrier.file_meta.TransferSyntaxUID = item.transfer_syntax
    return carrier


class _Outcome:
    """What happened so far, across the associations of one send."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None) -> None:
        self.accepted: list[str] = []
        self.failed: list[FailedInstance] = []
        self.attempted: set[int] = set()
        self.message_id = 0
        self.total = total
        self.progress = progress

    def _step(self) -> None:
        if self.progress is not None:
            self.progress(len(self.accepted) + len(self.failed), self.total)

    def accept(self, sop_instance_uid: str) -> None:
        self.accepted.append(sop_instance_uid)
        self._step()

    def fail(self, failure: FailedInstance) -> None:
        self.failed.append(failure)
        self._step()


@attrs.frozen
class _Break:
    """Why an association ended before all its items were sent."""

    reason: str
    #: the peer aborted or closed the connection (a new association may go on); not a timeout
    abrupt: bool


def _record(code: int, item: _Item, address: Address, outcome: _Outcome, comment: str | None = None) -> None:
    """Count one C-STORE response status: accepted (success or warning) or failed."""
    if code_to_category(code) in ("Success", "Warning"):
        if code != 0:
            logger.info("%s stored %s with %s", address, item.sop_instance, _status_text(code))
        outcome.accept(item.sop_instance)
    else:
        reason = _status_text(code) + (f" ({comment})" if comment else "")
        outcome.fail(FailedInstance(item.sop_instance, code, reason, item.path))


def _no_response(assoc: Association, item: _Item, address: Address, timeout: float,
                 outcome: _Outcome) -> _Break:
    error_text = no_response_reason(assoc, address, "C-STORE", timeout)
    outcome.fail(FailedInstance(item.sop_instance, None, error_text, item.path))
    return _Break(error_text, abrupt=no_response_kind(assoc) != "timeout")


class _DirectWriter:
    """Writes each C-STORE request on the socket itself (:func:`~dicomnode.net.pdata.send_c_store`)."""

    encode = True

    def __init__(self, assoc: Association, sock: socket.socket) -> None:
        self.assoc = assoc
        self.sock = sock

    def store(self, item: _Item, ready: _Ready, message_id: int) -> tuple[int, str | None] | None:
        assert isinstance(ready.payload, bytes)
        response = send_c_store(self.assoc, self.sock, ready.context_id, str(item.sop_class), item.sop_instance,
                                ready.payload, message_id)
        if response is None:
            return None
        assert response.Status is not None  # send_c_store returns only valid responses, which carry one
        return int(response.Status), response.ErrorComment


class _PynetdicomWriter:
    """Leaves each C-STORE to pynetdicom's ``send_c_store``: over TLS, and when the speed patches are off."""

    encode = False

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc

    def store(self, item: _Item, ready: _Ready, message_id: int) -> tuple[int, str | None] | None:
        try:
            status = self.assoc.send_c_store(ready.payload, msg_id=message_id)  # type: ignore[arg-type]
        except (ValueError, AttributeError, OSError) as error:  # pynetdicom could not read, encode or place it
            raise _Unsendable(f"cannot send: {error}") from None
        code = status.get("Status") if status else None
        return None if code is None else (int(code), status.get("ErrorComment"))


class _Unsendable(Exception):
    """pynetdicom could not send this one instance; the association goes on."""


def _send_on(assoc: Association, writer: _DirectWriter | _PynetdicomWriter, items: list[_Item],
             address: Address, timeout: float, outcome: _Outcome) -> _Break | None:
    """C-STORE the items on one association, plain or TLS; say why it broke off.

    The next instances are read (and encoded) on another thread while the
    peer stores the current one (:class:`_Prepared`).
    """
    with _Prepared(assoc, items, address, encode=writer.encode) as prepared:
        for item, ready in prepared:
            outcome.attempted.add(item.index)
            if isinstance(ready, FailedInstance):
                outcome.fail(ready)
                continue
            outcome.message_id = outcome.message_id % 65535 + 1
            try:
                response = writer.store(item, ready, outcome.message_id)
            except _Unsendable as error:
                outcome.fail(FailedInstance(item.sop_instance, None, str(error), item.path))
                continue
            except DimseError as unexpected:
                outcome.fail(FailedInstance(item.sop_instance, None, str(unexpected), item.path))
                return _Break(str(unexpected), abrupt=True)
            if response is None:
                return _no_response(assoc, item, address, timeout, outcome)
            _record(response[0], item, address, outcome, response[1])
            if not assoc.is_established:
                return _Break(f"{address} ended the association during the transfer", abrupt=True)
    return None


def _send_group(ae: AE, address: Address, contexts: list[PresentationContext], members: list[_Item],
                timeout: float, tls: ssl.SSLContext | None, outcome: _Outcome) -> str | None:
    """Send items that share one set of contexts; return the error that stopped it, if any.

    A peer that aborts or drops the association after storing some
    instances (DCMTK does so on a file it cannot parse) is asked again on a
    new association for the rest, so one damaged file never holds back a
    whole batch. Two broken associations in a row that stored nothing, or a
    peer that stops answering, end the send.
    """
    fruitless = 0
    while True:
        pending = [item for item in members if item.index not in outcome.attempted]
        if not pending:
            return None
        try:
            assoc = associate(ae, address, contexts, timeout=timeout, tls=tls)
        except AssociationError as refused:
            return str(refused)
        stored_before = len(outcome.accepted)
        try:
            # the DUL thread waits for the peer's responses instead of polling for them
            wake_on_data(assoc)
            read_pdus(assoc, timeout)
            with parked_reactor(assoc):
                sock = direct_socket(assoc)
                if sock is not None:
                    broken = _send_on(assoc, _DirectWriter(assoc, sock), pending, address, timeout, outcome)
                else:
                    with _file_streaming():
                        broken = _send_on(assoc, _PynetdicomWriter(assoc), pending, address, timeout, outcome)
        finally:
            end(assoc)
        if broken is None:
            return None
        fruitless = 0 if len(outcome.accepted) > stored_before else fruitless + 1
        if not broken.abrupt or fruitless >= 2:
            return broken.reason
        logger.warning("%s; going on with the remaining instance(s) on a new association", broken.reason)


def send_datasets(address: Address, datasets: Iterable[Dataset | Path | str], *,
                  ae_title: str = "DICOMNODE", timeout: float = 30.0,
                  tls: TlsSettings | ssl.SSLContext | None = None,
                  progress: Callable[[int, int], None] | None = None) -> SendResult:
    """C-STORE datasets (pydicom ``Dataset`` objects or DICOM files) to ``address``.

    Proposes exactly the (SOP class, transfer syntax) pairs present, with an
    uncompressed fallback per SOP class; an instance is re-encoded only when
    the peer refused its own transfer syntax, and only between uncompressed
    little-endian syntaxes. Files (and LazyDatasets not loaded yet) are read
    while sending, a few instances ahead, and sent as they are when the peer
    accepted their transfer syntax.
    Every response status is checked. Peer and network failures never raise:
    they are in the returned :class:`SendResult`. ``progress(done, total)``
    is called after each instance. ``timeout`` bounds every network step
    (connect, association, each response).

    >>> result = send_datasets(Address("127.0.0.1", 11112, "PACS"), paths)  # doctest: +SKIP
    >>> result.ok, result.failed  # doctest: +SKIP
    (True, ())
    """
    ae = application_entity(ae_title, timeout)
    context = client_context(tls)
    planned = [_plan(index, source) for index, source in enumerate(datasets)]
    items = [entry for entry in planned if isinstance(entry, _Item)]
    outcome = _Outcome(len(planned), progress)
    for entry in planned:
        if isinstance(entry, FailedInstance):
            outcome.fail(entry)
    error: str | None = None
    for contexts, members in _associations(items):
        error = _send_group(ae, address, contexts, members, timeout, context, outcome)
        if error is not None:
            break
    not_sent = tuple(item.sop_instance for item in items if item.index not in outcome.attempted)
    if error is None:
        logger.info("sent %d instance(s) to %s, %d failed", len(outcome.accepted), address,
                    len(outcome.failed))
    else:
        logger.warning("sending to %s stopped: %s; %d instance(s) not sent", address, error, len(not_sent))
    return SendResult(address, tuple(outcome.accepted), tuple(outcome.failed), error, not_sent)
