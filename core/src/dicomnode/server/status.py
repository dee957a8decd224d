"""The status of a node: the patients it holds and why each waits, its jobs, its outbox and quarantine.

:func:`node_status` answers for a running node (``GET /status`` of the admin
endpoint, ``node.status()``); :func:`offline_status` for a data directory
whose node may be stopped (``dicomnode status -d DIR``), from its files and
its history. Both return the same shape of JSON-able mapping, described in
``docs/run-in-production.md``; :func:`format_status` prints it for a person.

Patients are named as log lines name them (:func:`~dicomnode.server.logs.patient_label`:
the key, or its pseudonym).
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from dicomnode.__about__ import __version__
from dicomnode.server.events import NodeListener
from dicomnode.server.holds import PatientHold, hold_of
from dicomnode.server.logs import patient_label

if TYPE_CHECKING:
    from dicomnode.extension.handles import IngestResult, Source
    from dicomnode.server.events import AssociationSummary
    from dicomnode.server.nodes import AbstractPipeline
    from dicomnode.server.pipeline_tree import PatientContainer
    from dicomnode.server.runner import JobResult
    from dicomnode.server.stores import DataDirectory

__all__ = ["DirectoryCounts", "StatusBoard", "format_status", "iso", "node_state", "node_status", "offline_status"]

#: patients listed in a status at most, those waiting longest (the counts always cover all of them);
#: ``?limit=N`` lists more
DEFAULT_LIMIT = 100


def iso(moment: float | None) -> str | None:
    """A time as ISO 8601 in UTC, to the second (None stays None)."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define
class RunningJob:
    """A job the node runs now."""

    job_id: str
    patient_key: str
    calling_aet: str
    images: int
    started: float


class StatusBoard(NodeListener):
    """What the status needs that the node's parts do not keep: its life, the jobs running, the last receipt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start counting again (the node opens)."""
        self.started = time.time()
        self.ready = False
        self.shutting_down = False
        self.address = ""
        self.last_received: float | None = None
        self.associations = 0
        with self._lock:
            self._running: dict[str, RunningJob] = {}

    def opened(self, address: str) -> None:
        """The node listens: it is healthy from now on, once its restore (if any) ended (``node.restoring``)."""
        self.address = address
        self.shutting_down = False
        self.ready = True

    def closing(self) -> None:
        """The node began to close: no longer healthy."""
        self.ready = False
        self.shutting_down = True

    def instance(self, source: Source, result: IngestResult, size: int) -> None:
        """Note when the last instance came."""
        if result.stored:
            self.last_received = time.time()

    def association(self, summary: AssociationSummary) -> None:
        """Count the associations."""
        self.associations += 1

    def job_started(self, job_id: str, container: PatientContainer) -> None:
        """A job runs."""
        with self._lock:
            self._running[job_id] = RunningJob(job_id, container.patient_key, container.calling_aet,
                                               container.images, time.time())

    def job_finished(self, job_id: str, patient_key: str, calling_aet: str, result: JobResult,
                     seconds: float) -> None:
        """A job no longer runs."""
        with self._lock:
            self._running.pop(job_id, None)

    def running(self) -> list[RunningJob]:
        """The jobs running now, oldest first."""
        with self._lock:
            return sorted(self._running.values(), key=lambda job: job.started)


class DirectoryCounts:
    """Counts of the outbox and quarantine entries, cheap enough to take every second.

    Entry folders are listed each time; a quarantine entry's state (failed,
    or waiting for the outbox) is read from its record only when the record
    changed since the last count.
    """

    def __init__(self, data: DataDirectory) -> None:
        self.data = data
        self._states: dict[str, tuple[int, bool]] = {}
        self._lock = threading.Lock()

    def outbox(self) -> tuple[int, float | None]:
        """How many outbox entries, and when the oldest was made."""
        times = [_entry_time(name) for name in _entry_names(self.data.outbox.directory, "manifest.json")]
        return len(times), (min(times) if times else None)

    def quarantine(self) -> tuple[int, int, float | None]:
        """How many quarantine entries, how many of them failed jobs, and when the oldest was made."""
        directory = self.data.quarantine.directory
        names = _entry_names(directory, "reason.json")
        failed = 0
        with self._lock:
            seen = {}
            for name in names:
                record = directory / name / "reason.json"
                try:
                    stamp = record.stat().st_mtime_ns
                except OSError:
                    continue
                known = self._states.get(name)
                if known is None or known[0] != stamp:
                    known = (stamp, _failed(record))
                seen[name] = known
                failed += known[1]
            self._states = seen
        times = [_entry_time(name) for name in names]
        return len(names), failed, (min(times) if times else None)


def _entry_names(directory: Path, record: str) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return [entry.name for entry in entries if entry.is_dir() and not entry.name.startswith(".")
                    and os.path.exists(os.path.join(entry.path, record))]
    except OSError:
        return []


def _entry_time(name: str) -> float:
    """When an entry was made, from the time its id starts with (``20261205T080102-…``)."""
    try:
        return time.mktime(time.strptime(name[:15], "%Y%m%dT%H%M%S"))
    except ValueError:
        return time.time()


def _failed(record: Path) -> bool:
    import json

    try:
        return bool(json.loads(record.read_text(encoding="utf-8")).get("failed", True))
    except (OSError, ValueError):
        return True


def _hold_json(hold: PatientHold) -> dict[str, Any]:
    return {
        "patient": patient_label(hold.patient_key), "calling_aet": hold.calling_aet, "images": hold.images,
        "first_image": iso(hold.first_image), "last_image": iso(hold.last_image),
        "waiting_seconds": round(time.time() - hold.first_image, 1), "waiting_for": hold.waiting_for,
        "inputs": [{"name": item.name, "images": item.images, "complete": item.complete, "rule": item.rule}
                   for item in hold.inputs],
    }


def node_status(node: AbstractPipeline, board: StatusBoard, counts: DirectoryCounts | None, *,
                limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """The status of a running node (see the module docstring); at most ``limit`` patients are listed.

    They are the patients waiting longest, oldest first.
    """
    config = node.config
    containers = node.tree.containers()
    # every patient is counted; only the listed ones (those waiting longest) are sorted and described
    # (their inputs' rules, under their lock), so a node holding thousands of patients still answers at once
    images = sum(container.images for container in containers)
    listed = heapq.nsmallest(limit, containers, key=attrgetter("created"))
    holds = [hold_of(container, config.stable_time) for container in listed]
    queued, running = node.runner.load()
    restoring = node.restoring
    now = time.time()
    status: dict[str, Any] = {
        "time": iso(now),
        "node": {
            "name": config.name, "ae_title": config.ae_title, "address": board.address or None,
            "listening": node.is_open, "ready": board.ready and node.is_open and restoring is None,
            "closing": board.shutting_down,
            "restoring": None if restoring is None else {"restored": restoring[0], "of": restoring[1]},
            "version": __version__, "started": iso(board.started), "uptime_seconds": round(now - board.started, 1),
            "data_directory": str(config.data_directory) if config.data_directory is not None else None,
            "last_instance_received": iso(board.last_received), "associations": board.associations,
        },
        "patients": {
            "count": len(containers), "images": images, "held": [_hold_json(hold) for hold in holds],
            "not_listed": max(0, len(containers) - limit),
        },
        "jobs": {
            "queued": queued, "running": running, "succeeded": node.runner.succeeded,
            "failed": node.runner.failed, "interrupted": node.runner.interrupted,
            "running_jobs": [{"job_id": job.job_id, "patient": patient_label(job.patient_key),
                              "calling_aet": job.calling_aet, "images": job.images, "started": iso(job.started),
                              "seconds": round(now - job.started, 1)} for job in board.running()],
        },
    }
    receiving = node.receiving
    if receiving is not None:
        status["node"]["receiving_processes"] = {"ready": receiving[0], "configured": receiving[1]}
    status.update(_stores(counts))
    return status


def _stores(counts: DirectoryCounts | None) -> dict[str, Any]:
    if counts is None:
        return {"outbox": None, "quarantine": None}
    entries, oldest = counts.outbox()
    quarantined, failed, oldest_quarantined = counts.quarantine()
    return {
        "outbox": {"entries": entries, "oldest": iso(oldest)},
        "quarantine": {"entries": quarantined, "failed": failed, "waiting_for_outbox": quarantined - failed,
                       "oldest": iso(oldest_quarantined)},
    }


def offline_status(data: DataDirectory, *, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """The status of a data directory from its files and history (its node may be stopped).

    A patient is named by its folder under ``incoming/`` (the key, made safe
    for a file name); what it waits for is what the node last recorded.
    """
    incoming = data.path / "incoming"
    patients = []
    try:
        folders = [entry for entry in os.scandir(incoming) if entry.is_dir() and not entry.name.startswith(".")]
    except OSError:
        folders = []
    for folder in folders:
        times = []
        with os.scandir(folder.path) as files:
            for item in files:
                if item.name.endswith(".dcm") and not item.name.startswith("."):
                    try:
                        times.append(item.stat().st_mtime)
                    except OSError:
                        continue
        if times:
            patients.append((folder.name, len(times), min(times), max(times)))
    patients.sort(key=lambda item: item[2])
    waiting: dict[str, Mapping[str, Any]] = {}
    if data.history.exists:
        for event in data.history.events(kinds=("held",), since=min((p[2] for p in patients), default=None)):
            waiting[event.patient_key] = {"waiting_for": event.details.get("waiting_for", ""),
                                          "inputs": event.details.get("inputs", []), "recorded": iso(event.time)}
    listed = []
    for name, images, first, last in patients[:limit]:
        recorded = waiting.get(name, {})
        listed.append({"patient": patient_label(name), "images": images, "first_image": iso(first),
                       "last_image": iso(last), "waiting_seconds": round(time.time() - first, 1),
                       "waiting_for": recorded.get("waiting_for", "") or "(not recorded)",
                       "inputs": list(recorded.get("inputs", [])), "recorded": recorded.get("recorded")})
    last_events = data.history.events(limit=1, newest_first=True) if data.history.exists else []
    status: dict[str, Any] = {
        "time": iso(time.time()),
        "node": {"data_directory": str(data.path), "offline": True,
                 "last_event": iso(last_events[0].time) if last_events else None},
        "patients": {"count": len(patients), "images": sum(p[1] for p in patients), "held": listed,
                     "not_listed": max(0, len(patients) - limit)},
        "jobs": None,
    }
    status.update(_stores(DirectoryCounts(data)))
    return status


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def node_state(node: Mapping[str, Any]) -> str:
    """A running node's state in words: ready, closing, restoring (n of N instances) or starting."""
    if node["ready"]:
        return "ready"
    if node["closing"]:
        return "closing"
    restoring = node.get("restoring")
    if restoring:
        return f"restoring ({restoring['restored']} of {restoring['of']} instances)"
    return "starting"


def format_status(status: Mapping[str, Any]) -> str:
    """A status as text for a terminal."""
    node: Mapping[str, Any] = status["node"]
    lines = []
    if node.get("offline"):
        lines.append(f"data directory {node['data_directory']} (read from its files; last event "
                     f"{node.get('last_event') or 'never'})")
    else:
        lines.append(f"{node['name']} ({node['ae_title']}) on {node['address'] or '?'}: {node_state(node)}, up "
                     f"{_age(node['uptime_seconds'])}, dicomnode {node['version']}")
    receiving = node.get("receiving_processes")
    if receiving is not None:
        lines.append(f"receiving processes: {receiving['ready']} of {receiving['configured']} ready"
                     + ("" if receiving["ready"] == receiving["configured"] else
                        " (the node receives the rest itself; its log says why)"))
    patients = status["patients"]
    lines.append(f"patients held: {patients['count']} ({patients['images']} image(s))")
    for held in patients["held"]:
        lines.append(f"  {held['patient']}: {held['images']} image(s) since {held['first_image']} "
                     f"({_age(held['waiting_seconds'])}); waiting for {held['waiting_for']}")
        for item in held.get("inputs", []):
            lines.append(f"      {item['name']}: {item['images']} image(s), {item['rule']} — "
                         f"{'holds' if item['complete'] else 'not yet'}")
    if patients["not_listed"]:
        lines.append(f"  … and {patients['not_listed']} more")
    jobs = status.get("jobs")
    if jobs is not None:
        lines.append(f"jobs: {jobs['queued']} queued, {jobs['running']} running; since start "
                     f"{jobs['succeeded']} succeeded, {jobs['failed']} failed")
        for job in jobs["running_jobs"]:
            lines.append(f"  {job['job_id']}: patient {job['patient']}, {job['images']} image(s), "
                         f"running {_age(job['seconds'])}")
    outbox, quarantine = status.get("outbox"), status.get("quarantine")
    if outbox is None or quarantine is None:
        lines.append("outbox, quarantine: none (no data directory)")
    else:
        lines.append(f"outbox: {outbox['entries']} entr{'y' if outbox['entries'] == 1 else 'ies'}"
                     + (f", the oldest from {outbox['oldest']}" if outbox["oldest"] else ""))
        lines.append(f"quarantine: {quarantine['entries']} entr{'y' if quarantine['entries'] == 1 else 'ies'} "
                     f"({quarantine['failed']} failed, {quarantine['waiting_for_outbox']} waiting for the outbox)")
    return "\n".join(lines)
