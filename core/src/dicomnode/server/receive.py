"""The node's association handlers: what each association sent, handed to the ingest, and its end.

Each C-STORE request is handed to :class:`~dicomnode.server.ingest.Ingest`
(verify, route, store, add; its docstring lists the statuses), and the
status it returns is the C-STORE response. :class:`AssociationState` keeps
what one association did: the patients it touched and the files it wrote.
When the association ends — released, aborted, or its connection lost —
the files are synced (``fsync = "association"``) and the patients it
touched are checked for completeness; ready patients go to the job runner.

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
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import Dataset

from dicomnode.extension.handles import Source
from dicomnode.net.pdata import answer_c_stores_directly
from dicomnode.net.transport import read_in_large_pieces
from dicomnode.net.waking import wake_on_data, wake_on_message
from dicomnode.server.ingest import STATUS_CANNOT_DECODE, STATUS_SUCCESS

if TYPE_CHECKING:
    from pydicom.dataset import FileMetaDataset
    from pynetdicom.association import Association
    from pynetdicom.events import Event

    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["AssociationState", "Receiver"]

logger = logging.getLogger("dicomnode.receive")


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

    def __init__(self, calling_aet: str, address: str = "", kind: str = "c-store") -> None:
        self.calling_aet = calling_aet
        self.called_aet = ""
        self.source = Source(calling_aet, address, kind, id(self))
        self.patients: set[str] = set()
        self.paths: list[Path] = []
        self.received = 0


def _called_aet(assoc: Association) -> str:
    """The AE title the peer called (from its association request)."""
    primitive = getattr(assoc.requestor, "primitive", None)
    return str(getattr(primitive, "called_ae_title", "") or "").strip()


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
                requestor = assoc.requestor
                state = AssociationState(str(requestor.ae_title).strip(), f"{requestor.address}:{requestor.port}")
                state.called_aet = _called_aet(assoc)
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
        """Hand one received instance to the ingest; note what it did; return the C-STORE status."""
        result = self.pipeline.ingestion.encoded(encoded, transfer_syntax, file_meta, state.source)
        if result.stored:
            state.patients.add(result.patient_key)
            if result.path is not None:
                state.paths.append(result.path)
        if result.status == STATUS_SUCCESS:
            return STATUS_SUCCESS
        return _status(result.status, result.comment)
