"""Quarantine: where a patient's data goes when its job did not finish, with the reason and what was delivered.

A failure in a grinder, in ``process`` or in an output never takes the
server down. The patient's files move (or, without stored files, are
written) to::

    data_directory/quarantine/<id>/reason.json   patient key, calling AE, job id, reason, traceback, time,
                                                 the outputs done, the outbox entries still pending
                                  /<instance>.dcm

An entry is also made when every output either delivered or deferred its
work to the outbox (a PACS was down): the job's images wait here until the
outbox has delivered the rest. When the last pending outbox entry of an
entry is delivered (by the maintenance thread or ``dicomnode outbox
retry``), the entry is *closed*: removed, as a job that succeeded.

``dicomnode quarantine list`` and ``show`` read the entries;
``dicomnode quarantine retry ID`` runs the job again, sending only the
outputs that were not delivered, or puts the files back into the data
directory's incoming folder (``--restore``) so the node picks them up at
its next start. The maintenance thread deletes entries older than the
pipeline's ``quarantine_retention_days``.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from pydicom import Dataset, dcmread

from dicomnode.dicom.paths import safe_component
from dicomnode.errors import StorageError
from dicomnode.server.logs import patient_label
from dicomnode.server.storage import written_order

if TYPE_CHECKING:
    from dicomnode.server.events import NodeEvents
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["Quarantine", "QuarantineEntry"]

logger = logging.getLogger("dicomnode.quarantine")

_REASON = "reason.json"


@attrs.frozen
class QuarantineEntry:
    """One job that did not finish: its files, why, and which of its outputs are done.

    ``outputs_done`` holds the keys (``"<index>:<output name>"``) of the
    outputs whose work is done — delivered, or deferred to the outbox — and
    which a retry does not send again; ``pending_outbox`` the outbox entries
    that still hold deferred work of the job. ``failed`` is False for an entry that only
    waits for the outbox (every output delivered or deferred).
    """

    id: str
    directory: Path
    patient_key: str
    calling_aet: str
    reason: str
    traceback: str
    created: float
    job_id: str = ""
    outputs_done: tuple[str, ...] = ()
    pending_outbox: tuple[str, ...] = ()
    failed: bool = True

    @property
    def paths(self) -> list[Path]:
        """The DICOM files of the entry, in the order they arrived at the node."""
        # a retry must see the patient's first image first, as the node did
        return sorted((p for p in self.directory.iterdir() if p.suffix == ".dcm"), key=written_order)

    def datasets(self) -> list[Dataset]:
        """The datasets of the entry, read from disk."""
        return [dcmread(path) for path in self.paths]

    @property
    def state(self) -> str:
        """``"failed"``, or ``"waiting for the outbox"`` when only deferred outputs are left."""
        return "failed" if self.failed else "waiting for the outbox"


def _record(entry: QuarantineEntry) -> dict[str, object]:
    return {"patient_key": entry.patient_key, "calling_aet": entry.calling_aet, "reason": entry.reason,
            "traceback": entry.traceback, "created": entry.created, "job_id": entry.job_id,
            "outputs_done": list(entry.outputs_done), "pending_outbox": list(entry.pending_outbox),
            "failed": entry.failed}


def _write_record(entry: QuarantineEntry) -> None:
    temporary = entry.directory / f".{_REASON}.tmp"
    temporary.write_text(json.dumps(_record(entry), indent=2), encoding="utf-8")
    os.replace(temporary, entry.directory / _REASON)


class Quarantine:
    """The quarantine folder of a data directory (safe for the threads of one process).

    What happens to its entries is reported to ``events`` (the node's, or the
    data directory's own).
    """

    def __init__(self, directory: Path | str, *, events: NodeEvents | None = None) -> None:
        from dicomnode.server.events import NodeEvents

        self.directory = Path(directory)
        self.events = events if events is not None else NodeEvents()
        self._lock = threading.Lock()

    def put(self, patient_key: str, *, reason: str, traceback: str = "", calling_aet: str = "",
            paths: Sequence[Path] = (), datasets: Sequence[Dataset] = (), job_id: str = "",
            outputs_done: Sequence[str] = (), pending_outbox: Sequence[str] = (),
            failed: bool = True) -> QuarantineEntry:
        """Move stored files (``paths``) and write in-memory ``datasets`` into a new entry."""
        label = patient_label(patient_key)  # the id is in log lines: with pseudonyms, the pseudonym
        entry_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{safe_component(label, max_length=32)}-{uuid.uuid4().hex[:8]}"
        folder = self.directory / entry_id
        try:
            folder.mkdir(parents=True)
            for path in paths:
                if path.exists():
                    os.replace(path, folder / path.name)
            for index, dataset in enumerate(datasets):
                uid = dataset.get("SOPInstanceUID", f"instance-{index}")
                dataset.save_as(folder / f"{safe_component(uid)}.dcm", enforce_file_format=True)
            entry = QuarantineEntry(entry_id, folder, patient_key, calling_aet, reason, traceback, time.time(),
                                    job_id, tuple(outputs_done), tuple(pending_outbox), failed)
            _write_record(entry)
        except OSError as error:
            raise StorageError(f"cannot quarantine the data of patient {label} in {folder}: "
                               f"{error.strerror or error}") from error
        if failed:
            logger.error("quarantined patient %s (from %s) as %s: %s", label, calling_aet or "?",
                         entry_id, reason)
        else:
            logger.warning("patient %s (from %s) waits as %s until the outbox delivers %s", label,
                           calling_aet or "?", entry_id, ", ".join(pending_outbox))
        self.events.quarantined(entry)
        return entry

    def _read(self, folder: Path) -> QuarantineEntry:
        data = json.loads((folder / _REASON).read_text(encoding="utf-8"))
        return QuarantineEntry(folder.name, folder, str(data["patient_key"]), str(data.get("calling_aet", "")),
                               str(data["reason"]), str(data.get("traceback", "")), float(data["created"]),
                               str(data.get("job_id", "")), tuple(data.get("outputs_done", ())),
                               tuple(data.get("pending_outbox", ())), bool(data.get("failed", True)))

    def list(self) -> builtins.list[QuarantineEntry]:
        """Every entry, oldest first."""
        if not self.directory.is_dir():
            return []
        entries = []
        for folder in self.directory.iterdir():
            if not (folder / _REASON).is_file():
                continue
            try:
                entries.append(self._read(folder))
            except (OSError, ValueError, KeyError, TypeError) as error:
                logger.error("cannot read quarantine entry %s: %s", folder, error)
        return sorted(entries, key=lambda entry: entry.created)

    def get(self, entry_id: str) -> QuarantineEntry:
        """The entry with this id; LookupError listing the ids there are when there is none."""
        entries = self.list()
        for entry in entries:
            if entry.id == entry_id:
                return entry
        known = ", ".join(e.id for e in entries) or "none"
        raise LookupError(f"no quarantine entry {entry_id!r} in {self.directory} (entries: {known})")

    def update(self, entry: QuarantineEntry, **changes: object) -> QuarantineEntry:
        """Rewrite an entry's record with ``changes`` (reason, traceback, outputs_done, …)."""
        updated = attrs.evolve(entry, **changes)  # type: ignore[arg-type]
        _write_record(updated)
        return updated

    def remove(self, entry: QuarantineEntry) -> None:
        """Delete an entry and its files."""
        shutil.rmtree(entry.directory, ignore_errors=True)

    def outbox_delivered(self, outbox_entry_id: str) -> builtins.list[str]:
        """The outbox delivered ``outbox_entry_id``: update the entries waiting for it; return those closed.

        An entry with nothing pending that had not failed is closed (removed):
        its job is done.
        """
        closed = []
        with self._lock:
            for entry in self.list():
                if outbox_entry_id not in entry.pending_outbox:
                    continue
                pending = tuple(e for e in entry.pending_outbox if e != outbox_entry_id)
                if not pending and not entry.failed:
                    self.remove(entry)
                    closed.append(entry.id)
                    logger.info("quarantine entry %s (patient %s) closed: the outbox delivered the rest",
                                entry.id, patient_label(entry.patient_key))
                    self.events.quarantine_closed(entry)
                else:
                    self.update(entry, pending_outbox=pending)
        return closed

    def retry(self, entry_id: str, pipeline: AbstractPipeline) -> bool:
        """Finish the entry's job now, in this thread; True when nothing is left to do.

        A failed job runs again with ``pipeline`` (grinding, ``process``), and
        only the outputs not done before are sent. An entry that only waits
        for the outbox has its pending outbox entries retried now. When the
        job is done the entry is removed; when what is left is only deferred
        work, the entry waits for the outbox; on a new failure the entry stays
        with the new reason and traceback, and False is returned.
        """
        entry = self.get(entry_id)
        if not entry.failed:
            return self._retry_outbox(entry, pipeline)
        datasets = entry.datasets()
        logger.info("retrying quarantine entry %s (%d instances, %d output(s) done before)", entry_id,
                    len(datasets), len(entry.outputs_done))
        result = pipeline.run_datasets(datasets, calling_aet=entry.calling_aet or "QUARANTINE",
                                       skip=entry.outputs_done)
        done = tuple(dict.fromkeys((*entry.outputs_done, *result.outputs_done)))
        pending = (*entry.pending_outbox, *result.deferred)
        if not result.ok:
            self.update(entry, reason=result.reason, traceback=result.traceback, outputs_done=done,
                        pending_outbox=pending)
            logger.error("quarantine entry %s failed again: %s", entry_id, result.reason)
            self.events.quarantine_retried(entry, False, result.reason)
            return False
        if pending:
            self.update(entry, reason="waiting for the outbox", traceback="", outputs_done=done,
                        pending_outbox=pending, failed=False)
            logger.info("quarantine entry %s processed; it waits for the outbox to deliver %s", entry_id,
                        ", ".join(pending))
            self.events.quarantine_retried(entry, True, "waiting for the outbox")
            return True
        self.remove(entry)
        logger.info("quarantine entry %s processed and removed", entry_id)
        self.events.quarantine_retried(entry, True)
        return True

    def _retry_outbox(self, entry: QuarantineEntry, pipeline: AbstractPipeline) -> bool:
        from dicomnode.plugins import get_registry

        data = pipeline.data
        if data is None:
            raise StorageError("the pipeline has no data_directory: it cannot retry the outbox")
        registry = get_registry()
        for outbox_id in entry.pending_outbox:
            try:
                outbox_entry = data.outbox.get(outbox_id)
            except LookupError:  # delivered meanwhile by another process
                self.outbox_delivered(outbox_id)
                continue
            data.retry_outbox(outbox_entry, registry)
        return not (self.directory / entry.id).exists()

    def restore(self, entry_id: str, data_directory: Path | str) -> int:
        """Move the entry's files back into ``data_directory``'s incoming folder; return how many.

        A node started on that data directory then processes them again
        (every output, those delivered before included: the node has no
        record of them once the entry is gone).
        """
        from dicomnode.server.storage import InstanceStore

        entry = self.get(entry_id)
        store = InstanceStore(data_directory)
        count = 0
        for path in entry.paths:
            dataset = dcmread(path, stop_before_pixels=True)
            target = store.path_for(entry.patient_key, str(dataset.SOPInstanceUID))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            count += 1
        self.remove(entry)
        self.events.quarantine_restored(entry, count)
        return count

    def prune(self, older_than_days: float) -> builtins.list[str]:
        """Delete entries older than the retention; return their ids."""
        limit = time.time() - older_than_days * 86400
        removed = []
        for entry in self.list():
            if entry.created < limit:
                self.remove(entry)
                removed.append(entry.id)
                self.events.quarantine_pruned(entry, older_than_days)
        if removed:
            logger.info("quarantine: pruned %d entr%s older than %g days", len(removed),
                        "y" if len(removed) == 1 else "ies", older_than_days)
        return removed
