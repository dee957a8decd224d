"""The patient history: an append-only journal of what the node did, in the data directory.

::

    data_directory/history.sqlite3     one row per event: time, patient key, kind, job id, summary, details

Every row is one thing that happened to a patient (or to the node): images
received on an association (calling AE title, peer address, the counts per
series), a patient left incomplete and the rule that holds it back, a job
started, its stage times, each output delivered (destination, count) or put
in the outbox, the job done, failed or quarantined, an outbox or quarantine
retry, an expiry. :class:`HistoryRecorder` turns the node's events
(:mod:`dicomnode.server.events`) into rows; :class:`History` stores them with
SQLite from the standard library and reads them back for
``dicomnode history``. Rows are only ever added, and deleted by the
maintenance thread once older than ``history_retention_days``.

The journal never holds a value of a dataset: the patient key, the UIDs of
series, counts, AE titles, addresses, ids and reasons. Writing it never stops
the node: when the file cannot be written, one error is logged and the node
goes on without it until it can again.

The database uses SQLite's write-ahead log, so ``dicomnode history`` reads it
while the node writes, from another process.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from dicomnode.server.events import AssociationSummary, NodeListener

if TYPE_CHECKING:
    from dicomnode.extension.handles import IngestResult, Source
    from dicomnode.extension.outputs import OutboxEntry, PipelineOutput
    from dicomnode.server.holds import PatientHold
    from dicomnode.server.pipeline_tree import PatientContainer
    from dicomnode.server.quarantine import QuarantineEntry
    from dicomnode.server.runner import JobResult

__all__ = ["FILE_NAME", "History", "HistoryEvent", "HistoryRecorder", "RecentEvents", "parse_since"]

logger = logging.getLogger("dicomnode.history")

FILE_NAME = "history.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    patient_key TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    job_id TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_by_patient ON events (patient_key, time);
CREATE INDEX IF NOT EXISTS events_by_time ON events (time);
"""


@attrs.frozen
class HistoryEvent:
    """One row of the history: when, whose (``""`` for the node itself), what kind, which job, what happened."""

    time: float
    patient_key: str
    kind: str
    summary: str
    job_id: str = ""
    details: Mapping[str, Any] = attrs.field(factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The event as a JSON-able mapping (the time also as ISO 8601, UTC)."""
        return {"time": self.time, "at": datetime.fromtimestamp(self.time, timezone.utc).isoformat(),
                "patient_key": self.patient_key, "kind": self.kind, "job_id": self.job_id,
                "summary": self.summary, "details": dict(self.details)}


class EventSink(Protocol):
    """Where a recorder writes events."""

    def append(self, events: Sequence[HistoryEvent]) -> None:
        """Keep these events."""


class History:
    """The journal file of a data directory: add events, read a timeline, prune old rows.

    Safe for the threads of one process; other processes may read (and
    write) the same file at the same time.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._failing = False

    @property
    def exists(self) -> bool:
        """True when the file exists (a node with this data directory wrote at least once)."""
        return self.path.is_file()

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL: a commit is durable at the next checkpoint; a power cut may lose the
            # last rows, never the file. The images themselves are guarded by the fsync setting.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
            self._connection = connection
        return self._connection

    def append(self, events: Sequence[HistoryEvent]) -> None:
        """Add events (one transaction). Failing to write is logged once; the events are lost, the node goes on."""
        if not events:
            return
        rows = [(event.time, event.patient_key, event.kind, event.job_id, event.summary,
                 json.dumps(dict(event.details), default=str)) for event in events]
        with self._lock:
            try:
                connection = self._connect()
                with connection:  # one transaction
                    connection.execute("BEGIN")
                    connection.executemany("INSERT INTO events (time, patient_key, kind, job_id, summary, details) "
                                           "VALUES (?, ?, ?, ?, ?, ?)", rows)
            except (sqlite3.Error, OSError) as error:
                if not self._failing:
                    logger.error("cannot write the history %s: %s; the node goes on without it until it can",
                                 self.path, error)
                self._failing = True
                self._reset()
                return
            if self._failing:
                logger.warning("the history %s is written again", self.path)
                self._failing = False

    def _reset(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except sqlite3.Error:
                pass
            self._connection = None

    def events(self, patient_key: str | None = None, *, since: float | None = None, until: float | None = None,
               kinds: Iterable[str] = (), limit: int | None = None, newest_first: bool = False,
               ) -> list[HistoryEvent]:
        """The events (of one patient, since a time, of some kinds), oldest first; none without a file."""
        if not self.exists:
            return []
        clauses: list[str] = []
        parameters: list[Any] = []
        if patient_key is not None:
            clauses.append("patient_key = ?")
            parameters.append(patient_key)
        if since is not None:
            clauses.append("time >= ?")
            parameters.append(since)
        if until is not None:
            clauses.append("time < ?")
            parameters.append(until)
        kinds = list(kinds)
        if kinds:
            clauses.append(f"kind IN ({', '.join('?' for _ in kinds)})")
            parameters.extend(kinds)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        query = (f"SELECT time, patient_key, kind, summary, job_id, details FROM events {where} "
                 f"ORDER BY time {order}, id {order}{tail}")
        with self._lock:
            rows = self._connect().execute(query, parameters).fetchall()
        return [HistoryEvent(row[0], row[1], row[2], row[3], row[4], json.loads(row[5] or "{}")) for row in rows]

    def patients(self) -> list[str]:
        """Every patient key the history names."""
        if not self.exists:
            return []
        with self._lock:
            rows = self._connect().execute(
                "SELECT DISTINCT patient_key FROM events WHERE patient_key != '' ORDER BY patient_key").fetchall()
        return [row[0] for row in rows]

    def prune(self, older_than_days: float) -> int:
        """Delete rows older than the retention; return how many."""
        if not self.exists:
            return 0
        limit = time.time() - older_than_days * 86400
        with self._lock:
            try:
                connection = self._connect()
                with connection:
                    connection.execute("BEGIN")
                    deleted = connection.execute("DELETE FROM events WHERE time < ?", (limit,)).rowcount
            except sqlite3.Error as error:
                logger.error("cannot prune the history %s: %s", self.path, error)
                return 0
        if deleted:
            logger.info("history: deleted %d event(s) older than %g days", deleted, older_than_days)
        return int(deleted)

    def close(self) -> None:
        """Close the file (it is opened again on the next use)."""
        with self._lock:
            self._reset()


class RecentEvents:
    """The last events in memory, newest last (the status page shows them, with or without a data directory)."""

    def __init__(self, size: int = 50) -> None:
        self._events: collections.deque[HistoryEvent] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def append(self, events: Sequence[HistoryEvent]) -> None:
        """Keep these events (the oldest fall out)."""
        with self._lock:
            self._events.extend(events)

    def latest(self, count: int = 20) -> list[HistoryEvent]:
        """The newest ``count`` events, newest first."""
        with self._lock:
            return list(reversed(self._events))[:count]


def _plural(count: int, word: str) -> str:
    if count == 1 or word.endswith(("series", "s")):
        return f"{count} {word}"
    return f"{count} {word[:-1]}ies" if word.endswith("y") else f"{count} {word}s"


def _statuses(refused: Mapping[int, int]) -> str:
    return ", ".join(f"0x{status:04X}: {count}" for status, count in sorted(refused.items()))


class HistoryRecorder(NodeListener):
    """Turns the node's events into history rows, written to every sink (the journal, the recent events).

    Instances that did not come on an association of their own (fetched with
    C-GET, given to ``node.ingest``) are gathered per patient and written as
    one row before the patient's next event, or at the next flush.
    """

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = tuple(sinks)
        self._lock = threading.Lock()
        #: (patient, kind, calling AE) -> [first time, stored, refused {status: count}, series {uid: [modality, n]}]
        self._gathered: dict[tuple[str, str, str], list[Any]] = {}
        self._stages: dict[str, Mapping[str, float]] = {}

    def _write(self, *events: HistoryEvent) -> None:
        pending = self._take_gathered({event.patient_key for event in events})
        for sink in self.sinks:
            sink.append([*pending, *events])

    def _take_gathered(self, patients: set[str] | None) -> list[HistoryEvent]:
        with self._lock:
            if not self._gathered:
                return []
            keys = [key for key in self._gathered if patients is None or key[0] in patients]
            taken = [(key, self._gathered.pop(key)) for key in keys]
        events = []
        for (patient, kind, calling_aet), (first, stored, refused, series) in taken:
            text = f"{_plural(stored, 'image')} received by {kind} from {calling_aet or '?'}"
            if refused:
                text += f"; {sum(refused.values())} refused ({_statuses(refused)})"
            events.append(HistoryEvent(first, patient, "received", text, details={
                "source": kind, "calling_aet": calling_aet, "stored": stored,
                "refused": {f"0x{status:04X}": count for status, count in refused.items()},
                "series": [{"series_instance_uid": uid, "modality": modality, "images": count}
                           for uid, (modality, count) in series.items()]}))
        return events

    # --- receiving -----------------------------------------------------------------------------

    def instance(self, source: Source, result: IngestResult, size: int) -> None:
        """Gather instances that came without an association of their own."""
        if source.kind == "c-store" or not result.patient_key:
            return
        with self._lock:
            key = (result.patient_key, source.kind, source.calling_aet)
            gathered = self._gathered.get(key)
            if gathered is None:
                gathered = self._gathered[key] = [time.time(), 0, {}, {}]
            if result.status != 0:
                gathered[2][result.status] = gathered[2].get(result.status, 0) + 1
            elif result.stored:
                gathered[1] += 1
                series = gathered[3].setdefault(result.series_instance_uid, [result.modality, 0])
                series[1] += 1

    def association(self, summary: AssociationSummary) -> None:
        """One row per patient the association sent, and one per patient it left incomplete."""
        base = {"association": summary.id, "calling_aet": summary.calling_aet, "called_aet": summary.called_aet,
                "peer": summary.peer}
        events = []
        for receipt in summary.patients:
            series_text = ", ".join(f"{item.modality or '?'} {item.images}" for item in receipt.series)
            text = (f"{_plural(receipt.stored, 'image')} in {_plural(len(receipt.series), 'series')} received "
                    f"from {summary.calling_aet or '?'} ({summary.peer or '?'}) on association {summary.id}")
            if series_text:
                text += f": {series_text}"
            refused = sum(receipt.refused.values())
            if refused:
                text += f"; {refused} refused ({_statuses(receipt.refused)})"
            if receipt.discarded:
                text += f"; {receipt.discarded} discarded"
            events.append(HistoryEvent(summary.started, receipt.patient_key, "received", text, details={
                **base, "stored": receipt.stored, "discarded": receipt.discarded,
                "refused": {f"0x{status:04X}": count for status, count in receipt.refused.items()},
                "series": [{"series_instance_uid": item.series_instance_uid, "modality": item.modality,
                            "images": item.images} for item in receipt.series],
                "association_seconds": round(summary.seconds, 3), "association_bytes": summary.bytes}))
        now = time.time()
        for hold in summary.held:
            state = "complete, not started" if hold.complete else "incomplete"
            events.append(HistoryEvent(now, hold.patient_key, "held",
                                       f"{state}: {_plural(hold.images, 'image')}; waiting for {hold.waiting_for}",
                                       details={**base, **_hold_details(hold)}))
        self._write(*events)

    def restored(self, images: Mapping[str, int]) -> None:
        """One row per patient put back into the tree at start."""
        now = time.time()
        self._write(*(HistoryEvent(now, key, "restored", f"{_plural(count, 'image')} restored from the data "
                                                          "directory at start", details={"images": count})
                      for key, count in images.items()))

    def opened(self, address: str) -> None:
        """The node's own row: it listens."""
        self._write(HistoryEvent(time.time(), "", "node", f"listening on {address}"))

    def closed(self, held: Sequence[PatientHold], kept: bool) -> None:
        """The node's own row, and one per patient left incomplete."""
        now = time.time()
        where = "kept in the data directory" if kept else "dropped (no data directory)"
        self._write(HistoryEvent(now, "", "node", f"closed with {_plural(len(held), 'incomplete patient')}"),
                    *(HistoryEvent(now, hold.patient_key, "held",
                                   f"incomplete at close, {where}: {_plural(hold.images, 'image')}; waiting for "
                                   f"{hold.waiting_for}", details=_hold_details(hold)) for hold in held))

    def flush(self) -> None:
        """Write out the gathered instances."""
        pending = self._take_gathered(None)
        if pending:
            for sink in self.sinks:
                sink.append(pending)

    # --- jobs ----------------------------------------------------------------------------------------

    def job_started(self, job_id: str, container: PatientContainer) -> None:
        """The patient is complete and its job started."""
        inputs = {name: inp.images for name, inp in container.inputs.items()}
        text = f"complete; job {job_id} started with {_plural(container.images, 'image')} (" + ", ".join(
            f"{name} {count}" for name, count in inputs.items()) + ")"
        self._write(HistoryEvent(time.time(), container.patient_key, "job started", text, job_id,
                                 {"images": container.images, "inputs": inputs,
                                  "calling_aet": container.calling_aet}))

    def job_stages(self, job_id: str, patient_key: str, seconds: Mapping[str, float]) -> None:
        """Kept until the job's end, whose row carries them."""
        with self._lock:
            self._stages[job_id] = dict(seconds)

    def output_done(self, job_id: str, patient_key: str, key: str, output: PipelineOutput,
                    deferred: Sequence[str]) -> None:
        """An output delivered (where, how many) or went to the outbox."""
        count = _count(output)
        where = _destination(output)
        details = {"output": key, "destination": where, "instances": count}
        if deferred:
            text = f"output {key} could not deliver to {where or '?'}: put in the outbox as {', '.join(deferred)}"
            self._write(HistoryEvent(time.time(), patient_key, "deferred", text, job_id,
                                     {**details, "outbox": list(deferred)}))
            return
        text = f"output {key} delivered {_plural(count, 'instance')}" + (f" to {where}" if where else "")
        self._write(HistoryEvent(time.time(), patient_key, "delivered", text, job_id, details))

    def job_finished(self, job_id: str, patient_key: str, calling_aet: str, result: JobResult,
                     seconds: float) -> None:
        """The job's end: done, waiting for the outbox, failed (where, why) or interrupted."""
        with self._lock:
            stages = self._stages.pop(job_id, {})
        times = ", ".join(f"{name} {value:.2f} s" for name, value in stages.items())
        details: dict[str, Any] = {"seconds": round(seconds, 3), "stages": {k: round(v, 3) for k, v in stages.items()}}
        if result.interrupted:
            kind, text = "job interrupted", f"job {job_id} interrupted by the node's close: runs again at the next start"
        elif not result.ok:
            kind = "job failed"
            text = f"job {job_id} failed at {result.stage or '?'} after {seconds:.2f} s: {result.reason}"
            details.update(stage=result.stage, reason=result.reason)
        elif result.deferred:
            kind = "job done"
            text = (f"job {job_id} done in {seconds:.2f} s ({times}); "
                    f"{_plural(len(result.deferred), 'outbox entry')} still to deliver")
            details["outbox"] = list(result.deferred)
        else:
            kind, text = "job done", f"job {job_id} done in {seconds:.2f} s ({times}); its images are deleted"
        self._write(HistoryEvent(time.time(), patient_key, kind, text, job_id, details))

    # --- the quarantine and the outbox ---------------------------------------------------------------

    def quarantined(self, entry: QuarantineEntry) -> None:
        """A job's images went to the quarantine."""
        if entry.failed:
            text = f"quarantined as {entry.id}: {entry.reason}"
        else:
            text = f"images wait as quarantine entry {entry.id} until the outbox delivers {', '.join(entry.pending_outbox)}"
        self._write(HistoryEvent(time.time(), entry.patient_key, "quarantined", text, entry.job_id,
                                 {"entry": entry.id, "failed": entry.failed, "reason": entry.reason,
                                  "outputs_done": list(entry.outputs_done),
                                  "pending_outbox": list(entry.pending_outbox)}))

    def quarantine_closed(self, entry: QuarantineEntry) -> None:
        """The outbox delivered the rest: the entry is closed."""
        self._write(HistoryEvent(time.time(), entry.patient_key, "quarantine closed",
                                 f"quarantine entry {entry.id} closed: the outbox delivered the rest; its images "
                                 "are deleted", entry.job_id, {"entry": entry.id}))

    def quarantine_retried(self, entry: QuarantineEntry, ok: bool, reason: str) -> None:
        """A quarantined job ran again."""
        text = f"quarantine entry {entry.id} retried: " + ("done" if ok else f"failed again: {reason}")
        self._write(HistoryEvent(time.time(), entry.patient_key, "retried", text, entry.job_id,
                                 {"entry": entry.id, "ok": ok, "reason": reason}))

    def quarantine_restored(self, entry: QuarantineEntry, images: int) -> None:
        """A quarantine entry went back to the incoming folder."""
        self._write(HistoryEvent(time.time(), entry.patient_key, "retried",
                                 f"{_plural(images, 'image')} of quarantine entry {entry.id} put back into the "
                                 "incoming folder for the next start", entry.job_id,
                                 {"entry": entry.id, "images": images}))

    def quarantine_pruned(self, entry: QuarantineEntry, days: float) -> None:
        """A quarantine entry older than the retention was deleted."""
        self._write(HistoryEvent(time.time(), entry.patient_key, "expired",
                                 f"quarantine entry {entry.id} deleted after {days:g} days", entry.job_id,
                                 {"entry": entry.id}))

    def outbox_stored(self, entry: OutboxEntry) -> None:
        """An output's undelivered work went to the outbox (the output's own row says which)."""

    def outbox_attempt(self, entry: OutboxEntry, delivered: bool, reason: str) -> None:
        """An outbox entry was retried."""
        if delivered:
            text = f"outbox entry {entry.id} delivered by output {entry.output_name!r}"
        else:
            text = f"outbox entry {entry.id} still undelivered after attempt {entry.attempts + 1}: {reason}"
        self._write(HistoryEvent(time.time(), entry.patient_key, "outbox retried", text, entry.job_id,
                                 {"entry": entry.id, "delivered": delivered, "reason": reason,
                                  "attempt": entry.attempts + 1}))

    def expired(self, patient_key: str, calling_aet: str, images: int, days: float) -> None:
        """An incomplete patient was dropped."""
        self._write(HistoryEvent(time.time(), patient_key, "expired",
                                 f"expired after {days:g} days incomplete: {_plural(images, 'image')} deleted",
                                 details={"images": images, "calling_aet": calling_aet}))


def _hold_details(hold: PatientHold) -> dict[str, Any]:
    return {"images": hold.images, "waiting_for": hold.waiting_for, "first_image": hold.first_image,
            "inputs": [{"name": item.name, "images": item.images, "complete": item.complete, "rule": item.rule}
                       for item in hold.inputs]}


def _count(output: PipelineOutput) -> int:
    try:
        return len(output.outgoing_datasets())
    except Exception:  # an output's own code
        return 0


def _destination(output: PipelineOutput) -> str:
    try:
        return str(output.describe_destination())
    except Exception:  # an output's own code
        return ""


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|d|w)\s*$", re.I)
_UNITS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """A ``--since`` value as a time: ``30min``, ``12h``, ``7d`` ago, ``today``, ``yesterday``, or ISO 8601.

    ISO dates and times without a zone are local time. ValueError says what is allowed.
    """
    now = time.time() if now is None else now
    value = text.strip().lower()
    match = _RELATIVE.match(value)
    if match:
        return now - float(match[1]) * _UNITS[match[2].lower()]
    midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if value == "today":
        return midnight.timestamp()
    if value == "yesterday":
        return (midnight - timedelta(days=1)).timestamp()
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"--since must be a duration ago (30min, 12h, 7d), 'today', 'yesterday' or a date and "
                         f"time (2026-12-01 or 2026-12-01T08:00), got {text!r}") from None
