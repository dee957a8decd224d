"""Node events: the one place the node's parts report what happened, and who listens.

The ingest, the association handlers, the job runner, the quarantine, the
outbox and the maintenance thread each call one method of the node's
:class:`NodeEvents` where something happens (one line at each place). It
hands the event to its listeners — the history journal
(:mod:`dicomnode.server.history`), the metrics (:mod:`dicomnode.server.metrics`)
and the status board (:mod:`dicomnode.server.status`) — each a
:class:`NodeListener` that overrides the events it cares about.

Two events are gathered here before listeners see them: the instances of one
association are counted as they arrive (:meth:`NodeEvents.instance`), and
when the association ends (:meth:`NodeEvents.association_ended`) the
listeners get one :class:`AssociationSummary`, and the log gets one INFO line
with the peer, the AE titles, the stored and refused counts, the bytes and the
duration, plus a line for each patient the association left incomplete,
naming the rule that holds it back.

A listener that raises is logged and the node goes on: nothing an observer
does may refuse an instance or fail a job.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from dicomnode.server.holds import PatientHold, hold_of
from dicomnode.server.logs import patient_label

if TYPE_CHECKING:
    from dicomnode.extension.handles import IngestResult, Source
    from dicomnode.extension.outputs import OutboxEntry, PipelineOutput
    from dicomnode.server.pipeline_tree import PatientContainer, PipelineTree
    from dicomnode.server.quarantine import QuarantineEntry
    from dicomnode.server.receive import AssociationState
    from dicomnode.server.runner import JobResult

__all__ = ["AssociationSummary", "NodeEvents", "NodeListener", "PatientReceipt", "SeriesCount"]

logger = logging.getLogger("dicomnode.receive")
_node_logger = logging.getLogger("dicomnode.node")


@attrs.frozen
class SeriesCount:
    """How many instances of one series an association stored."""

    series_instance_uid: str
    modality: str
    images: int


@attrs.frozen
class PatientReceipt:
    """What one association did for one patient: instances stored per series, discarded, refused by status."""

    patient_key: str
    stored: int
    discarded: int
    refused: Mapping[int, int]
    series: tuple[SeriesCount, ...]


@attrs.frozen
class AssociationSummary:
    """One association that sent C-STOREs, when it ended.

    ``refused`` counts the failure statuses answered (status -> count),
    ``patients`` what it did per patient (instances without a patient key are
    counted under ``""``), ``held`` the patients it touched that still wait.
    """

    id: str
    calling_aet: str
    called_aet: str
    peer: str
    started: float
    seconds: float
    stored: int
    discarded: int
    refused: Mapping[int, int]
    bytes: int
    patients: tuple[PatientReceipt, ...]
    held: tuple[PatientHold, ...] = ()

    @property
    def refused_count(self) -> int:
        """Every instance answered with a failure status."""
        return sum(self.refused.values())


class NodeListener:
    """An observer of the node's events: override the ones you need (each default does nothing).

    Methods are called on the thread where the event happened (an
    association's, a job's, the maintenance thread): return quickly.
    """

    def instance(self, source: Source, result: IngestResult, size: int) -> None:
        """An instance was ingested (stored, discarded or refused: ``result.status`` says); ``size`` bytes."""

    def association(self, summary: AssociationSummary) -> None:
        """An association that sent C-STOREs ended."""

    def opened(self, address: str) -> None:
        """The node listens at ``address`` (it may still restore its data directory behind: ``restored`` follows)."""

    def restored(self, images: Mapping[str, int]) -> None:
        """After the start, the restore of the stored instances ended: patient key -> images restored."""

    def closing(self) -> None:
        """The node began to close."""

    def closed(self, held: Sequence[PatientHold], kept: bool) -> None:
        """The node closed with these patients incomplete (``kept``: in the data directory)."""

    def job_queued(self, patient_key: str) -> None:
        """A complete patient was handed to the job runner."""

    def job_started(self, job_id: str, container: PatientContainer) -> None:
        """A job started on a job thread."""

    def job_stages(self, job_id: str, patient_key: str, seconds: Mapping[str, float]) -> None:
        """A job's grinding, ``process`` and outputs took these many seconds (stage -> seconds)."""

    def output_done(self, job_id: str, patient_key: str, key: str, output: PipelineOutput,
                    deferred: Sequence[str]) -> None:
        """An output delivered (``deferred`` empty) or put its work in the outbox (those entries)."""

    def job_finished(self, job_id: str, patient_key: str, calling_aet: str, result: JobResult,
                     seconds: float) -> None:
        """A job ended: done, waiting for the outbox, failed or interrupted (``result`` says)."""

    def quarantined(self, entry: QuarantineEntry) -> None:
        """A job's images went to the quarantine (failed, or waiting for the outbox)."""

    def quarantine_closed(self, entry: QuarantineEntry) -> None:
        """The outbox delivered the last pending work of a quarantine entry; the entry is gone."""

    def quarantine_retried(self, entry: QuarantineEntry, ok: bool, reason: str) -> None:
        """A quarantined job ran again."""

    def quarantine_restored(self, entry: QuarantineEntry, images: int) -> None:
        """A quarantine entry's images were put back into the incoming folder."""

    def quarantine_pruned(self, entry: QuarantineEntry, days: float) -> None:
        """A quarantine entry older than the retention was deleted."""

    def outbox_stored(self, entry: OutboxEntry) -> None:
        """An output put undelivered work in the outbox."""

    def outbox_attempt(self, entry: OutboxEntry, delivered: bool, reason: str) -> None:
        """An outbox entry was retried: delivered (and removed), or not (``reason``)."""

    def expired(self, patient_key: str, calling_aet: str, images: int, days: float) -> None:
        """An incomplete patient was dropped after ``days``, with its images."""

    def flush(self) -> None:
        """Write out what is gathered (the maintenance thread calls it every pass, the node at close)."""


class _Tally:
    """The running counts of one association (under NodeEvents' lock)."""

    __slots__ = ("bytes", "discarded", "id", "patients", "refused", "started", "stored")

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.started = time.time()
        self.stored = 0
        self.discarded = 0
        self.bytes = 0
        self.refused: dict[int, int] = {}
        #: patient key -> [stored, discarded, {status: count}, {series uid: [modality, count]}]
        self.patients: dict[str, list[Any]] = {}


class NodeEvents:
    """What the node's parts call; hands each event to every listener (see the module docstring)."""

    def __init__(self, listeners: Sequence[NodeListener] = ()) -> None:
        self.listeners: tuple[NodeListener, ...] = tuple(listeners)
        self._tallies: dict[int, _Tally] = {}
        self._lock = threading.Lock()

    def add(self, listener: NodeListener) -> None:
        """Add a listener (before the node opens: the list is read without a lock)."""
        self.listeners = (*self.listeners, listener)

    def remove(self, listener: NodeListener) -> None:
        """Remove a listener added before."""
        self.listeners = tuple(item for item in self.listeners if item is not listener)

    def _emit(self, event: str, *args: Any) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, event)(*args)
            except Exception:  # an observer must never refuse an instance or fail a job
                _node_logger.exception("the %s listener failed on the %r event", type(listener).__name__, event)

    # --- receiving -----------------------------------------------------------------------------

    def instance(self, source: Source, result: IngestResult, size: int) -> None:
        """One instance's outcome (from :meth:`~dicomnode.server.ingest.Ingest.encoded`)."""
        if source.kind == "c-store":
            with self._lock:
                tally = self._tallies.get(source.association)
                if tally is None:
                    tally = self._tallies[source.association] = _Tally()
                tally.bytes += size
                patient = tally.patients.get(result.patient_key)
                if patient is None:
                    patient = tally.patients[result.patient_key] = [0, 0, {}, {}]
                if result.status != 0:
                    tally.refused[result.status] = tally.refused.get(result.status, 0) + 1
                    patient[2][result.status] = patient[2].get(result.status, 0) + 1
                elif result.stored:
                    tally.stored += 1
                    patient[0] += 1
                    series = patient[3].get(result.series_instance_uid)
                    if series is None:
                        patient[3][result.series_instance_uid] = [result.modality, 1]
                    else:
                        series[1] += 1
                else:
                    tally.discarded += 1
                    patient[1] += 1
        if self.listeners:
            self._emit("instance", source, result, size)

    def association_ended(self, state: AssociationState, tree: PipelineTree, stable_time: float | None) -> None:
        """An association that sent C-STOREs ended and its patients were checked: log it, tell the listeners."""
        with self._lock:
            tally = self._tallies.pop(state.source.association, None)
        if tally is None:
            tally = _Tally()
        held = []
        for key in sorted(state.patients):
            try:
                container = tree[key]
            except KeyError:
                continue  # complete: its job started
            held.append(hold_of(container, stable_time))
        receipts = tuple(
            PatientReceipt(key, stored, discarded, dict(refused),
                           tuple(SeriesCount(uid, modality, count) for uid, (modality, count) in series.items()))
            for key, (stored, discarded, refused, series) in tally.patients.items())
        summary = AssociationSummary(
            tally.id, state.calling_aet, getattr(state, "called_aet", ""), state.source.address, tally.started,
            max(0.0, time.time() - tally.started), tally.stored, tally.discarded, dict(tally.refused), tally.bytes,
            receipts, tuple(held))
        _log_association(summary)
        self._emit("association", summary)

    # --- the node's life -------------------------------------------------------------------------

    def opened(self, address: str) -> None:
        """The node listens (a restore of its data directory may still run behind it)."""
        self._emit("opened", address)

    def restored(self, images: Mapping[str, int]) -> None:
        """The stored instances are back in the tree (at start): patient key -> images restored."""
        if images:
            self._emit("restored", images)

    def closing(self) -> None:
        """The node began to close."""
        self._emit("closing")

    def closed(self, tree: PipelineTree, stable_time: float | None, kept: bool) -> None:
        """The node closed: name the patients it leaves incomplete, and why each waits."""
        held = [hold_of(container, stable_time) for container in tree.containers()]
        if held:
            where = "kept in the data directory" if kept else "dropped (no data_directory)"
            _node_logger.warning("closing with %d incomplete patient(s), %s: %s", len(held), where,
                                 "; ".join(f"{patient_label(hold.patient_key)} ({hold.images} image(s); "
                                           f"{hold.waiting_for})" for hold in held[:20])
                                 + (f"; and {len(held) - 20} more" if len(held) > 20 else ""))
        self._emit("closed", tuple(held), kept)
        self.flush()

    def flush(self) -> None:
        """Ask the listeners to write out what they gather."""
        self._emit("flush")

    # --- jobs ----------------------------------------------------------------------------------------

    def job_queued(self, container: PatientContainer) -> None:
        """A complete patient was handed to the job runner."""
        self._emit("job_queued", container.patient_key)

    def job_started(self, job_id: str, container: PatientContainer) -> None:
        """A job started."""
        self._emit("job_started", job_id, container)

    def job_stages(self, job_id: str, patient_key: str, grind: float, process: float, outputs: float) -> None:
        """A job's stage times, in seconds."""
        self._emit("job_stages", job_id, patient_key, {"grind": grind, "process": process, "outputs": outputs})

    def output_done(self, job_id: str, patient_key: str, key: str, output: PipelineOutput,
                    deferred: Sequence[str] = ()) -> None:
        """An output delivered, or deferred its work to these outbox entries."""
        self._emit("output_done", job_id, patient_key, key, output, tuple(deferred))

    def job_finished(self, container: PatientContainer, result: JobResult, seconds: float) -> None:
        """A job ended (``result`` says how)."""
        self._emit("job_finished", result.job_id, container.patient_key, container.calling_aet, result, seconds)

    # --- the quarantine and the outbox ------------------------------------------------------------------

    def quarantined(self, entry: QuarantineEntry) -> None:
        """A job's images went to the quarantine."""
        self._emit("quarantined", entry)

    def quarantine_closed(self, entry: QuarantineEntry) -> None:
        """A quarantine entry's pending outbox work was delivered; the entry is gone."""
        self._emit("quarantine_closed", entry)

    def quarantine_retried(self, entry: QuarantineEntry, ok: bool, reason: str = "") -> None:
        """A quarantined job ran again."""
        self._emit("quarantine_retried", entry, ok, reason)

    def quarantine_restored(self, entry: QuarantineEntry, images: int) -> None:
        """A quarantine entry's images went back to the incoming folder."""
        self._emit("quarantine_restored", entry, images)

    def quarantine_pruned(self, entry: QuarantineEntry, days: float) -> None:
        """A quarantine entry older than the retention was deleted."""
        self._emit("quarantine_pruned", entry, days)

    def outbox_stored(self, entry: OutboxEntry) -> None:
        """An output put undelivered work in the outbox."""
        self._emit("outbox_stored", entry)

    def outbox_attempt(self, entry: OutboxEntry, delivered: bool, reason: str = "") -> None:
        """An outbox entry was retried."""
        self._emit("outbox_attempt", entry, delivered, reason)

    def expired(self, container: PatientContainer, days: float) -> None:
        """An incomplete patient was dropped with its images."""
        self._emit("expired", container.patient_key, container.calling_aet, container.images, days)


def _statuses(refused: Mapping[int, int]) -> str:
    return ", ".join(f"0x{status:04X}: {count}" for status, count in sorted(refused.items()))


def _log_association(summary: AssociationSummary) -> None:
    refused = summary.refused_count
    parts = [f"{summary.stored} stored"]
    if summary.discarded:
        parts.append(f"{summary.discarded} discarded")
    parts.append(f"{refused} refused" + (f" ({_statuses(summary.refused)})" if refused else ""))
    patients = sorted({receipt.patient_key for receipt in summary.patients if receipt.patient_key})
    logger.info("association %s from %s (%s) to %s ended: %s; %d patient(s), %.1f MB in %.2f s", summary.id,
                summary.calling_aet or "?", summary.peer or "?", summary.called_aet or "?", ", ".join(parts),
                len(patients), summary.bytes / 1e6, summary.seconds)
    for hold in summary.held:
        logger.info("[patient %s from %s] %s after association %s: %d image(s); waiting for %s",
                    patient_label(hold.patient_key), summary.calling_aet or "?",
                    "complete, not started" if hold.complete else "incomplete", summary.id, hold.images,
                    hold.waiting_for)
