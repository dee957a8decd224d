"""Late images: instances of a study whose job has already started or finished.

A sender that pauses in the middle of a study (a second association minutes
later, a technologist who sends a forgotten series) delivers images after
the node judged the patient complete. The node remembers, for
``late_images_window`` seconds, which studies its jobs took, and the
``late_images`` setting says what an instance of such a study does:

``"new_job"`` (the default)
    it starts a new patient container, which becomes a job of its own when
    it is complete (the log says the instances are late);
``"ignore"``
    it is acknowledged and dropped, with one log line per series per
    association;
``"rerun"``
    it joins a copy of the earlier job's images (the late instance wins when
    both have the same SOPInstanceUID), and the job runs again once the
    earlier one has finished. The result's UIDs are derived from its source
    instances, so a re-run with more images is a *new* series next to the
    earlier result in the PACS; a re-run with the same images replaces it.

For ``"rerun"`` the images of a finished job are kept for the window:
moved to ``data_directory/retained/<job id>/`` (deleted when the window has
passed), or held in memory without a data directory. A job that failed keeps
its images in the quarantine; late images of it start a new job. The memory
of jobs does not survive a restart: after one, late images start a new job.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.dicom.paths import safe_component

if TYPE_CHECKING:
    from dicomnode.server.pipeline_tree import PatientContainer

__all__ = ["JobRecord", "RecentJobs"]

logger = logging.getLogger("dicomnode.node")

class JobRecord:
    """A job the node started, remembered for the late-images window."""

    def __init__(self, patient_key: str, studies: Sequence[str]) -> None:
        self.patient_key = patient_key
        self.studies = tuple(studies)
        self.job_id = ""
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.succeeded = False
        #: the images a re-run starts from (``"rerun"`` only, once the job succeeded)
        self.retained: list[tuple[Dataset, Path | None]] = []
        self.folder: Path | None = None

    @property
    def finished(self) -> bool:
        """True once the job ended (whatever its outcome)."""
        return self.finished_at is not None

    def describe(self) -> str:
        """``job 20260101T120000-1a2b3c4d (finished 12 s ago)``, for the log."""
        name = f"job {self.job_id}" if self.job_id else "a job"
        if self.finished_at is None:
            return f"{name} (running)"
        return f"{name} (finished {time.monotonic() - self.finished_at:.0f} s ago)"


class RecentJobs:
    """The studies the node's jobs took, for ``late_images_window`` seconds.

    ``retain_in``: the data directory's ``retained`` folder (``"rerun"``
    moves a finished job's files there), or None to keep them in memory.
    ``notify(patient_key)`` is called when a job ends, so a patient whose
    late images wait for it is checked again.
    """

    def __init__(self, policy: str, window: float, retain_in: Path | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        self.policy = policy
        self.window = window
        self.retain_in = retain_in
        self.notify = notify
        self._by_study: dict[str, JobRecord] = {}
        self._by_container: dict[int, JobRecord] = {}
        self._lock = threading.Lock()

    # --- what the ingest asks -------------------------------------------------------

    def job_of(self, study_uid: str, patient_key: str) -> JobRecord | None:
        """The remembered job that took this study of this patient, or None."""
        if not study_uid:
            return None
        with self._lock:
            record = self._by_study.get(study_uid)
        if record is None or record.patient_key != patient_key:
            return None
        if record.finished_at is not None and time.monotonic() - record.finished_at > self.window:
            return None
        return record

    # --- what the job runner tells ---------------------------------------------------

    def taken(self, container: PatientContainer) -> None:
        """A patient became a job: remember its studies."""
        self.prune()
        record = JobRecord(container.patient_key, container.studies)
        with self._lock:
            for study in record.studies:
                self._by_study[study] = record
            self._by_container[id(container)] = record

    def started(self, container: PatientContainer, job_id: str) -> None:
        """The job of ``container`` got its id."""
        with self._lock:
            record = self._by_container.get(id(container))
        if record is not None:
            record.job_id = job_id

    def finished(self, container: PatientContainer, succeeded: bool, remove: Callable[[list[Path]], None]) -> None:
        """The job of ``container`` ended; with ``"rerun"`` a successful job's images are kept.

        ``remove`` deletes stored files (the store's); it is called here for
        the files this does not keep.
        """
        with self._lock:
            record = self._by_container.pop(id(container), None)
        keep = record is not None and succeeded and self.policy == "rerun"
        try:
            if keep:
                assert record is not None
                record.retained = self._retain(record, container)
            elif succeeded:
                remove(container.paths)
        finally:
            if record is not None:
                record.succeeded = succeeded
                record.finished_at = time.monotonic()
                if self.notify is not None:
                    self.notify(record.patient_key)

    def _retain(self, record: JobRecord, container: PatientContainer) -> list[tuple[Dataset, Path | None]]:
        held = container.held_with_paths()
        if self.retain_in is None:
            return [(dataset, None) for dataset, _ in held]
        folder = self.retain_in / safe_component(record.job_id or f"job-{id(record):x}")
        folder.mkdir(parents=True, exist_ok=True)
        record.folder = folder
        kept: list[tuple[Dataset, Path | None]] = []
        for dataset, path in held:
            if path is None:
                kept.append((dataset, None))
                continue
            target = folder / path.name
            os.replace(path, target)
            kept.append((LazyDataset(target), target))
        for parent in {path.parent for _, path in held if path is not None}:
            try:
                parent.rmdir()
            except OSError:
                pass  # newer images of the patient arrived meanwhile
        return kept

    # --- the window -------------------------------------------------------------------

    def prune(self) -> int:
        """Forget jobs that finished more than the window ago (deleting what they kept); return how many."""
        now = time.monotonic()
        with self._lock:
            old = {id(r): r for r in self._by_study.values()
                   if r.finished_at is not None and now - r.finished_at > self.window}
            if old:
                self._by_study = {study: r for study, r in self._by_study.items() if id(r) not in old}
        for record in old.values():
            record.retained = []
            if record.folder is not None:
                shutil.rmtree(record.folder, ignore_errors=True)
        self._prune_folder()
        return len(old)

    def _prune_folder(self) -> None:
        """Delete retained folders older than the window that no record holds (left by an earlier run)."""
        if self.retain_in is None or not self.retain_in.is_dir():
            return
        with self._lock:
            held = {r.folder for r in self._by_study.values() if r.folder is not None}
        limit = time.time() - self.window
        for folder in self.retain_in.iterdir():
            try:
                if folder not in held and folder.stat().st_mtime < limit:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue

    def __len__(self) -> int:
        with self._lock:
            return len({id(r) for r in self._by_study.values()})
