"""Quarantine: where a patient's data goes when its job failed, with the reason and traceback.

A failure in a grinder, in ``process`` or in an output never takes the
server down. The patient's files move (or, without stored files, are
written) to::

    data_directory/quarantine/<id>/reason.json   patient key, calling AE, reason, traceback, time
                                  /<instance>.dcm

``dicomnode quarantine list`` shows the entries (:meth:`Quarantine.list`);
``dicomnode quarantine retry ID`` runs the job again with a pipeline
(:meth:`Quarantine.retry`) or puts the files back into the data directory's
incoming folder so the node picks them up at its next start
(:meth:`Quarantine.restore`). The maintenance thread deletes entries older
than the pipeline's ``quarantine_retention_days``.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from pydicom import Dataset, dcmread

from dicomnode.dicom.paths import safe_component
from dicomnode.errors import StorageError
from dicomnode.server.storage import written_order

if TYPE_CHECKING:
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["Quarantine", "QuarantineEntry"]

logger = logging.getLogger("dicomnode.quarantine")

_REASON = "reason.json"


@attrs.frozen
class QuarantineEntry:
    """One failed job: its files and why it failed."""

    id: str
    directory: Path
    patient_key: str
    calling_aet: str
    reason: str
    traceback: str
    created: float

    @property
    def paths(self) -> list[Path]:
        """The DICOM files of the entry, in the order they arrived at the node."""
        # a retry must see the patient's first image first, as the node did
        return sorted((p for p in self.directory.iterdir() if p.suffix == ".dcm"), key=written_order)

    def datasets(self) -> list[Dataset]:
        """The datasets of the entry, read from disk."""
        return [dcmread(path) for path in self.paths]


class Quarantine:
    """The quarantine folder of a data directory."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def put(self, patient_key: str, *, reason: str, traceback: str = "", calling_aet: str = "",
            paths: Sequence[Path] = (), datasets: Sequence[Dataset] = ()) -> QuarantineEntry:
        """Move stored files (``paths``) and write in-memory ``datasets`` into a new entry."""
        entry_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{safe_component(patient_key, max_length=32)}-{uuid.uuid4().hex[:8]}"
        folder = self.directory / entry_id
        try:
            folder.mkdir(parents=True)
            for path in paths:
                if path.exists():
                    os.replace(path, folder / path.name)
            for index, dataset in enumerate(datasets):
                uid = dataset.get("SOPInstanceUID", f"instance-{index}")
                dataset.save_as(folder / f"{safe_component(uid)}.dcm", enforce_file_format=True)
            entry = QuarantineEntry(entry_id, folder, patient_key, calling_aet, reason, traceback, time.time())
            record = {"patient_key": patient_key, "calling_aet": calling_aet, "reason": reason,
                      "traceback": traceback, "created": entry.created}
            (folder / _REASON).write_text(json.dumps(record, indent=2), encoding="utf-8")
        except OSError as error:
            raise StorageError(f"cannot quarantine the data of {patient_key!r} in {folder}: {error}") from error
        logger.error("quarantined patient %s (from %s) as %s: %s", patient_key, calling_aet or "?",
                     entry_id, reason)
        return entry

    def list(self) -> builtins.list[QuarantineEntry]:
        """Every entry, oldest first."""
        if not self.directory.is_dir():
            return []
        entries = []
        for folder in self.directory.iterdir():
            if not (folder / _REASON).is_file():
                continue
            try:
                data = json.loads((folder / _REASON).read_text(encoding="utf-8"))
                entries.append(QuarantineEntry(folder.name, folder, str(data["patient_key"]),
                                               str(data.get("calling_aet", "")), str(data["reason"]),
                                               str(data.get("traceback", "")), float(data["created"])))
            except (OSError, ValueError, KeyError) as error:
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

    def remove(self, entry: QuarantineEntry) -> None:
        """Delete an entry and its files."""
        shutil.rmtree(entry.directory, ignore_errors=True)

    def retry(self, entry_id: str, pipeline: AbstractPipeline) -> bool:
        """Run the entry's job again with ``pipeline``, now, in this thread.

        On success the entry is removed and True returned. On failure the
        entry stays, its reason and traceback replaced by the new ones, and
        False is returned.
        """
        entry = self.get(entry_id)
        datasets = entry.datasets()
        logger.info("retrying quarantine entry %s (%d instances)", entry_id, len(datasets))
        result = pipeline.run_datasets(datasets, calling_aet=entry.calling_aet or "QUARANTINE")
        if result.ok:
            self.remove(entry)
            logger.info("quarantine entry %s processed and removed", entry_id)
            return True
        record = {"patient_key": entry.patient_key, "calling_aet": entry.calling_aet,
                  "reason": result.reason, "traceback": result.traceback, "created": entry.created}
        (entry.directory / _REASON).write_text(json.dumps(record, indent=2), encoding="utf-8")
        logger.error("quarantine entry %s failed again: %s", entry_id, result.reason)
        return False

    def restore(self, entry_id: str, data_directory: Path | str) -> int:
        """Move the entry's files back into ``data_directory``'s incoming folder; return how many.

        A node started on that data directory then processes them again.
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
        return count

    def prune(self, older_than_days: float) -> builtins.list[str]:
        """Delete entries older than the retention; return their ids."""
        limit = time.time() - older_than_days * 86400
        removed = []
        for entry in self.list():
            if entry.created < limit:
                self.remove(entry)
                removed.append(entry.id)
        if removed:
            logger.info("quarantine: pruned %d entr%s older than %g days", len(removed),
                        "y" if len(removed) == 1 else "ies", older_than_days)
        return removed
