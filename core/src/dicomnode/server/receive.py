"""The receive path: association handlers of a node, and the C-STORE statuses it answers.

An association thread only decodes, routes and (with a data directory)
stores; it never grinds or processes. A C-STORE is handled as follows:

1. the encoded dataset is parsed without converting values (pydicom keeps
   elements raw until asked; with ``lazy_storage`` parsing stops before the
   pixel data), so only the tags the routing looks at are decoded;
2. the patient key (``patient_identifier_tag``), the pipeline's
   ``filter(dataset)`` and the inputs' ``required_tags`` /
   ``required_values`` decide whether the image is accepted;
3. with ``data_directory`` the received bytes are written with their file
   meta (temporary file + atomic rename) *before* success is returned;
4. the image joins its patient in the :class:`~dicomnode.server.pipeline_tree.PipelineTree`.

When the association is released (or aborted) the patients it touched are
checked for completeness; ready patients go to the pipeline's workers.

C-STORE statuses
----------------
======  =====================================================================
0x0000  Success: stored (or, with ``rejection_policy = "discard"``, discarded)
0xA700  Refused: out of resources -- the instance could not be written to the
        data directory (disk full, permissions); nothing was kept
0xC001  Error: cannot understand -- the dataset could not be decoded
0xC002  Error: cannot understand -- the dataset lacks the patient identifier
        (``patient_identifier_tag``) or it is empty
0xC003  Error: cannot understand -- the pipeline's ``filter`` rejected it
0xC004  Error: cannot understand -- no input of the pipeline accepts it
0xC005  Error: cannot understand -- ``filter`` or routing raised an exception
======  =====================================================================

Every failure status carries an ErrorComment saying why, and the log line
names the calling AE title and the SOP Instance UID. With
``rejection_policy = "discard"`` the 0xC002-0xC004 cases answer 0x0000 and
the image is dropped (the log still says why).

Sockets: the maximum PDU size is unlimited (0), and every accepted socket
gets ``TCP_NODELAY`` (pynetdicom leaves Nagle's algorithm on, which stalls
small PDUs by ~40 ms), and its two pynetdicom threads wait for data and
for complete messages instead of polling every millisecond
(:mod:`dicomnode.net.waking`).
"""

from __future__ import annotations

import logging
import socket
import threading
import zlib
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileDataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from dicomnode.errors import StorageError
from dicomnode.net.pdata import answer_c_stores_directly
from dicomnode.net.transport import read_in_large_pieces
from dicomnode.net.waking import wake_on_data, wake_on_message

if TYPE_CHECKING:
    from pydicom.dataset import FileMetaDataset
    from pynetdicom.association import Association
    from pynetdicom.events import Event

    from dicomnode.server.nodes import AbstractPipeline

__all__ = [
    "STATUS_CANNOT_DECODE",
    "STATUS_FILTER_ERROR",
    "STATUS_MISSING_PATIENT_ID",
    "STATUS_NOT_ACCEPTED",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_REJECTED_BY_FILTER",
    "STATUS_SUCCESS",
    "AssociationState",
    "Receiver",
]

logger = logging.getLogger("dicomnode.receive")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
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

    def __init__(self, stream: BytesIO, dataset: Dataset, *, implicit: bool, little: bool) -> None:
        super().__init__(stream, dataset, is_implicit_VR=implicit, is_little_endian=little)
        self._deferred = {tag for tag, element in self._dict.items()
                          if isinstance(element, RawDataElement) and element.value is None and element.length}
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


def decode_received(encoded: BytesIO, transfer_syntax: str, *, header_only: bool) -> Dataset:
    """Parse a received dataset without converting its values (pydicom converts on access).

    With ``header_only`` parsing stops before the pixel data. Otherwise the
    result is a dataset over the received bytes whose large values (the pixel
    data) are not copied out of them until first used — on the worker that
    grinds, not on the association thread (pydicom's deferred reading, from
    the buffer instead of a file). Once they are, the dataset drops the
    received bytes, so the pixel data is held once.
    """
    syntax = UID(transfer_syntax)
    encoded.seek(0)
    stream = encoded
    if syntax.is_deflated:
        stream = BytesIO(zlib.decompress(encoded.getvalue(), -zlib.MAX_WBITS))
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    if header_only:
        return read_dataset(stream, implicit, little, stop_when=_before_pixels)
    dataset = read_dataset(stream, implicit, little, defer_size=_DEFER_SIZE)
    return _ReceivedDataset(stream, dataset, implicit=implicit, little=little)


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


class ContextList(list):  # type: ignore[type-arg]
    """The server's supported presentation contexts, copied cheaply for each association.

    pynetdicom deep-copies the server's contexts for every association it
    accepts. With every storage SOP class and every transfer syntax that is
    thousands of UID objects, ~0.1 s of CPU per association; UIDs are immutable
    strings, so a copy of each context with its own transfer syntax list is
    just as independent.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copies = []
        for context in self:
            copy = object.__new__(type(context))
            copy.__dict__.update(context.__dict__)
            copy._transfer_syntax = list(context._transfer_syntax)
            copies.append(copy)
        return copies


def use_cheap_context_copies(server: Any) -> None:
    """Make a pynetdicom server copy its contexts with :class:`ContextList` (if it has them)."""
    contexts = getattr(server, "contexts", None)
    if isinstance(contexts, list) and all(hasattr(c, "_transfer_syntax") for c in contexts):
        server.contexts = ContextList(contexts)


class AssociationState:
    """What one association did: the patients it touched and the files it wrote."""

    def __init__(self, calling_aet: str) -> None:
        self.calling_aet = calling_aet
        self.patients: set[str] = set()
        self.paths: list[Path] = []
        self.received = 0


class Receiver:
    """The association handlers of one pipeline (bound to its pynetdicom server)."""

    def __init__(self, pipeline: AbstractPipeline) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self._states: dict[int, AssociationState] = {}
        self._lock = threading.Lock()
        #: sockets whose TCP_NODELAY was checked after setting it, and how many had it on
        self.nodelay_checked = 0
        self.nodelay_on = 0
        self._ending = 0

    def handlers(self) -> list[Any]:
        """The ``(event, handler)`` pairs for ``AE.start_server(evt_handlers=...)``."""
        from pynetdicom import evt

        return [
            (evt.EVT_CONN_OPEN, self.on_connection),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_RELEASED, self.on_association_end),
            (evt.EVT_ABORTED, self.on_association_end),
            # a peer that drops the connection without release or abort ends it too
            (evt.EVT_CONN_CLOSE, self.on_association_end),
        ]

    # --- events ---------------------------------------------------------------

    def on_connection(self, event: Event) -> None:
        """Switch Nagle's algorithm off on the accepted socket (and check that it took); wait, don't poll.

        The association's threads then read each PDU and serve each
        C-STORE as soon as it arrives, instead of on pynetdicom's 1 ms polls
        (:mod:`dicomnode.net.waking`), and the C-STORE responses are
        written at once by the thread that made them
        (:func:`~dicomnode.net.pdata.answer_c_stores_directly`).
        """
        wake_on_data(event.assoc)
        wake_on_message(event.assoc)
        answer_c_stores_directly(event.assoc)
        read_in_large_pieces(event.assoc)
        sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if sock is None:
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            on = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        except OSError as error:
            logger.debug("cannot set TCP_NODELAY: %s", error)
            return
        with self._lock:
            self.nodelay_checked += 1
            self.nodelay_on += int(on)

    def receiving(self) -> bool:
        """True while an association that sent a C-STORE has not ended (or its end is being handled)."""
        with self._lock:
            return bool(self._states) or self._ending > 0

    def state(self, assoc: Association) -> AssociationState:
        """The state of an association, created on its first C-STORE."""
        key = id(assoc)
        with self._lock:
            state = self._states.get(key)
            if state is None:
                state = AssociationState(str(assoc.requestor.ae_title).strip())
                self._states[key] = state
            return state

    def on_store(self, event: Event) -> int | Dataset:
        """EVT_C_STORE: decode the routing tags, filter, store, add to the tree; answer a status."""
        state = self.state(event.assoc)
        state.received += 1
        encoded = getattr(event.request, "DataSet", None)
        if encoded is None:
            return _status(STATUS_CANNOT_DECODE, "the C-STORE request has no dataset")
        return self.pipeline._receive(state, encoded, event.context.transfer_syntax, event.file_meta)

    def on_association_end(self, event: Event) -> None:
        """EVT_RELEASED / EVT_ABORTED / EVT_CONN_CLOSE (whichever comes first): sync, check the patients."""
        with self._lock:
            state = self._states.pop(id(event.assoc), None)
            if state is None:
                return
            self._ending += 1
        try:
            self.pipeline._association_ended(state)
        finally:
            with self._lock:
                self._ending -= 1

    # --- the C-STORE decision, shared with the threaded pipeline ----------------

    def store(self, state: AssociationState, encoded: BytesIO, transfer_syntax: str,
              file_meta: FileMetaDataset) -> int | Dataset:
        """Route and store one received instance; return the C-STORE status."""
        pipeline = self.pipeline
        config = self.config
        lazy = config.lazy_storage
        try:
            dataset = decode_received(encoded, transfer_syntax, header_only=lazy)
            sop_uid = str(dataset.get("SOPInstanceUID", "") or file_meta.MediaStorageSOPInstanceUID)
            key_element = dataset.get(config.patient_identifier_tag)
            patient_key = "" if key_element is None else str(key_element.value).strip()
        except Exception as error:  # a malformed dataset may fail to parse in many ways
            logger.warning("C-STORE from %s: cannot decode the dataset: %s", state.calling_aet, error)
            return _status(STATUS_CANNOT_DECODE, f"cannot decode: {error}")
        if not patient_key:
            return self._reject(state, "", sop_uid, STATUS_MISSING_PATIENT_ID,
                                f"lacks the patient identifier {Tag(config.patient_identifier_tag)}")
        try:
            if not pipeline.filter(dataset):
                return self._reject(state, patient_key, sop_uid, STATUS_REJECTED_BY_FILTER, "rejected by filter()")
            reason = pipeline.tree.rejection(patient_key, dataset)
        except Exception as error:  # user code: a bug must not take the association down
            logger.exception("[patient %s from %s] C-STORE %s: filter or routing raised", patient_key,
                             state.calling_aet, sop_uid)
            return _status(STATUS_FILTER_ERROR, f"filter raised {type(error).__name__}")
        if reason is not None:
            return self._reject(state, patient_key, sop_uid, STATUS_NOT_ACCEPTED, f"no input accepts it: {reason}")
        path = None
        header = None
        if pipeline.store is not None:
            try:
                path = pipeline.store.write_encoded(patient_key, sop_uid, file_meta, encoded.getbuffer())
            except StorageError as error:
                logger.error("[patient %s from %s] C-STORE %s: %s", patient_key, state.calling_aet, sop_uid, error)
                return _status(STATUS_OUT_OF_RESOURCES, "cannot store the instance")
            state.paths.append(path)
            if lazy:
                from dicomnode.dicom.lazy import LazyDataset

                header, dataset = dataset, LazyDataset(path)
        else:
            dataset.file_meta = file_meta
        names = pipeline.tree.add_image(patient_key, dataset, path, state.calling_aet, header=header)
        if not names:  # an input's state changed between the check and the add
            if path is not None and pipeline.store is not None:
                pipeline.store.remove([path])
            return self._reject(state, patient_key, sop_uid, STATUS_NOT_ACCEPTED, "no input accepts it any more")
        state.patients.add(patient_key)
        return STATUS_SUCCESS

    def _reject(self, state: AssociationState, patient_key: str, sop_uid: str, code: int,
                why: str) -> int | Dataset:
        discard = self.config.rejection_policy == "discard" and code in DISCARDABLE
        logger.warning("[patient %s from %s] C-STORE %s %s: %s", patient_key or "?", state.calling_aet, sop_uid,
                       "discarded" if discard else f"refused with status 0x{code:04X}", why)
        return STATUS_SUCCESS if discard else _status(code, why)
