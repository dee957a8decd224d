"""The node's association handlers: what each association sent, handed to the ingest, and its end.

Each C-STORE request is handed to :class:`~dicomnode.server.ingest.Ingest`
(verify, route, store, add; its docstring lists the statuses), and the
status it returns is the C-STORE response. :class:`AssociationState` keeps
what one association did: the patients it touched and the files it wrote.
When the association ends — released, aborted, its connection lost, timed
out, or failed while reading — the files are synced (``fsync =
"association"``) and the patients it touched are checked for completeness;
ready patients go to the job runner.

The network side (sockets, limits, pynetdicom) is
:class:`dicomnode.net.server.DicomServer`; :class:`Receiver` is the
:class:`~dicomnode.net.sink.InstanceSink` it feeds.
"""

from __future__ import annotations

import logging
import threading
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset

from dicomnode.extension.handles import IngestResult, Source
from dicomnode.net.sink import Peer, ReceivedInstance
from dicomnode.server.ingest import STATUS_SUCCESS

if TYPE_CHECKING:
    from pydicom.dataset import FileMetaDataset

    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["AssociationState", "Receiver"]

logger = logging.getLogger("dicomnode.receive")


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


class AssociationState:
    """What one association did: the patients it touched and the files it wrote."""

    def __init__(self, calling_aet: str, address: str = "", kind: str = "c-store") -> None:
        self.calling_aet = calling_aet
        self.called_aet = ""
        self.source = Source(calling_aet, address, kind, id(self))
        self.patients: set[str] = set()
        self.paths: list[Path] = []
        self.received = 0


class Receiver:
    """The node's :class:`~dicomnode.net.sink.InstanceSink`: what its DICOM server hands each instance to."""

    def __init__(self, pipeline: AbstractPipeline) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self._states: dict[int, AssociationState] = {}
        self._lock = threading.Lock()
        self._ending = 0

    # --- the sink ---------------------------------------------------------------

    def receiving(self) -> bool:
        """True while an association that sent a C-STORE has not ended (or its end is being handled)."""
        with self._lock:
            return bool(self._states) or self._ending > 0

    def state(self, peer: Peer) -> AssociationState:
        """The state of an association, created on its first C-STORE."""
        with self._lock:
            state = self._states.get(peer.id)
            if state is None:
                state = AssociationState(peer.calling_ae_title, f"{peer.address[0]}:{peer.address[1]}")
                state.called_aet = peer.called_ae_title
                self._states[peer.id] = state
            return state

    def on_instance(self, instance: ReceivedInstance, peer: Peer) -> int | tuple[int, str]:
        """Hand the instance to the ingest (verify, route, store, add); answer its status."""
        state = self.state(peer)
        state.received += 1
        status = self.pipeline._receive(state, instance.encoded, instance.transfer_syntax, instance.file_meta)
        if isinstance(status, Dataset):
            return int(status.Status), str(status.get("ErrorComment", ""))
        return status

    def on_examined(self, peer: Peer, header: Dataset, patient_key: str, sop_uid: str,
                    written: tuple[Path, Path] | None, size: int) -> tuple[int, str]:
        """An instance a receiving process found whole and wrote aside (``written``: the temporary file and
        its final path): decide on it; answer its status.

        (:mod:`dicomnode.server.processes`; the decisions are the ingest's, :meth:`~dicomnode.server.ingest.Ingest.adopt`.)
        """
        state = self.state(peer)
        state.received += 1
        result = self.pipeline.ingestion.adopt(header, patient_key, sop_uid, written, size, state.source)
        _note(state, result)
        return result.status, result.comment

    def on_examined_refusal(self, peer: Peer, result: IngestResult, size: int) -> None:
        """A receiving process refused an instance by its checks (not whole, cannot decode, cannot write)."""
        state = self.state(peer)
        state.received += 1
        self.pipeline.events.instance(state.source, result, size)

    def on_refused(self, peer: Peer, sop_instance_uid: str, size: int, status: int, comment: str) -> None:
        """The server refused a C-STORE itself: the association's summary, the metrics and the history count it."""
        self.on_examined_refusal(peer, IngestResult(status, comment, sop_instance_uid=sop_instance_uid), size)

    def on_association_end(self, peer: Peer) -> None:
        """The association ended (release, abort, timeout, lost connection…): sync, check the patients."""
        with self._lock:
            state = self._states.pop(peer.id, None)
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
        _note(state, result)
        if result.status == STATUS_SUCCESS:
            return STATUS_SUCCESS
        return _status(result.status, result.comment)


def _note(state: AssociationState, result: IngestResult) -> None:
    """What a stored instance adds to its association's state: its patient, its file."""
    if result.stored:
        state.patients.add(result.patient_key)
        if result.path is not None:
            state.paths.append(result.path)
