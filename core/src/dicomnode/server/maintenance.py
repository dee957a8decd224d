"""The maintenance thread: the periodic chores of a node that runs for years.

Every ``maintenance_interval`` seconds it

* expires patients whose first image arrived more than
  ``study_expiration_days`` ago and that never became complete (their stored
  files are deleted; the log says so);
* retries the outbox entries that are due — an entry waits
  ``outbox_retry_delay`` seconds after it was stored, and twice as long after
  each failed attempt, at most ``outbox_max_delay``;
* deletes quarantine entries older than ``quarantine_retention_days`` and
  history events older than ``history_retention_days``;
* forgets the jobs that finished more than ``late_images_window`` ago
  (with ``late_images = "rerun"``, deleting the images kept for a re-run);
* with ``release_idle_memory``, when jobs ran since the last pass and none is
  running now, hands the memory the C allocator keeps free back to the
  system (:func:`~dicomnode.server.allocator.release_free_memory`), so an
  idle node does not keep the size of its last job.

With a ``stable_time`` it also checks, a few times per stable time, whether
patients that have not received an image for that long are complete.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from dicomnode.server.allocator import release_free_memory
from dicomnode.server.logs import patient_label

if TYPE_CHECKING:
    from dicomnode.extension.outputs import OutboxEntry
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["MaintenanceThread"]

logger = logging.getLogger("dicomnode.maintenance")


class MaintenanceThread(threading.Thread):
    """A daemon thread doing a pipeline's periodic chores until :meth:`stop`."""

    def __init__(self, pipeline: AbstractPipeline) -> None:
        super().__init__(name=f"{pipeline.config.name}-maintenance", daemon=True)
        self.pipeline = pipeline
        config = pipeline.config
        self.interval = config.maintenance_interval
        stable = config.stable_time
        self.tick = min(self.interval, max(0.05, stable / 4)) if stable is not None else self.interval
        self._stop_event = threading.Event()
        self._jobs_at_release = 0

    def run(self) -> None:
        """Loop: stable checks every tick, the chores every interval."""
        last_chores = time.monotonic()
        while not self._stop_event.wait(self.tick):
            try:
                if self.pipeline.config.stable_time is not None:
                    self.pipeline.check_ready()
                if self.pipeline.config.maintenance_thread and time.monotonic() - last_chores >= self.interval:
                    last_chores = time.monotonic()
                    self.run_chores()
            except Exception:  # the thread must outlive any single failure
                logger.exception("maintenance pass failed")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to end and wait for it."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run_chores(self) -> None:
        """One pass of every chore, now."""
        self.expire_patients()
        self.retry_outbox()
        self.prune_quarantine()
        self.pipeline.late_jobs.prune()
        self.prune_history()
        self.pipeline.events.flush()
        if self.pipeline.config.release_idle_memory:
            self.release_idle_memory()

    def expire_patients(self) -> int:
        """Drop incomplete patients older than ``study_expiration_days``; return how many."""
        pipeline = self.pipeline
        days = pipeline.config.study_expiration_days
        if days is None:
            return 0
        expired = pipeline.tree.take_expired(days * 86400)
        for container in expired:
            logger.warning("[patient %s from %s] expired after %g days incomplete: %d image(s) deleted",
                           patient_label(container.patient_key), container.calling_aet or "?", days, container.images)
            pipeline.events.expired(container, days)
            if pipeline.store is not None:
                pipeline.store.remove(container.paths)
        return len(expired)

    def is_due(self, entry: OutboxEntry, now: float | None = None) -> bool:
        """Whether an outbox entry's backoff has passed."""
        config = self.pipeline.config
        now = time.time() if now is None else now
        delay = min(config.outbox_retry_delay * (2 ** entry.attempts), config.outbox_max_delay)
        last = entry.last_attempt if entry.last_attempt is not None else entry.created
        return bool(now - last >= delay)

    def retry_outbox(self) -> int:
        """Retry the outbox entries that are due; return how many were delivered.

        A delivered entry closes the quarantine entry that waited for it.
        """
        data = self.pipeline.data
        if data is None:
            return 0
        due = [entry for entry in data.outbox.entries() if self.is_due(entry)]
        if not due:
            return 0
        from dicomnode.plugins import get_registry

        registry = get_registry()
        return sum(1 for entry in due if data.retry_outbox(entry, registry))

    def release_idle_memory(self) -> bool:
        """Hand free allocator memory back when jobs ran since the last time and none runs now.

        Not after every job: the next job would pay for the memory again in
        page faults (~0.1 s for a 300-slice CT here), which a backlog of jobs
        should not. True when it released.
        """
        pipeline = self.pipeline
        finished = pipeline.jobs_succeeded + pipeline.jobs_failed
        if finished == self._jobs_at_release or pipeline.jobs_in_flight:
            return False
        self._jobs_at_release = finished
        started = time.monotonic()
        if not release_free_memory():
            return False
        logger.debug("free memory handed back to the system in %.1f ms", (time.monotonic() - started) * 1000)
        return True

    def prune_quarantine(self) -> int:
        """Delete quarantine entries older than the retention; return how many."""
        quarantine = self.pipeline.quarantine
        days = self.pipeline.config.quarantine_retention_days
        if quarantine is None or days is None:
            return 0
        return len(quarantine.prune(days))

    def prune_history(self) -> int:
        """Delete history events older than the retention; return how many."""
        data = self.pipeline.data
        days = self.pipeline.config.history_retention_days
        if data is None or days is None:
            return 0
        return data.history.prune(days)
