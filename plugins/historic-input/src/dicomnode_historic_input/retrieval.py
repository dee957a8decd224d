"""The retrieval of one patient's priors, on its own thread.

Started by :meth:`HistoricAbstractInput.patient_started` (on the
association thread, which it never holds up), a :class:`PriorRetrieval`:

1. waits until the node listens (after a restart the tree is rebuilt before
   the server opens, and a C-MOVE needs our SCP), then for its turn at the
   PACS (``max_concurrent_retrievals``);
2. walks the PACS with its source's searches (C-FIND, or QIDO-RS;
   :func:`~dicomnode_historic_input.query.walk`);
3. retrieves each target through the source: C-MOVE to the node's own AE
   title, or C-GET or WADO-RS, whose instances it hands to the node's
   receive path itself (:mod:`~dicomnode_historic_input.source`);
4. on a failure, tries again after ``retry_interval`` when ``on_failure`` is
   ``"retry"`` (up to ``max_attempts``), else gives up;
5. records a :class:`~dicomnode_historic_input.ground.RetrievalReport`
   and asks the node to check whether the patient is now complete.

Every network step is bounded by the input's ``timeout``, so the thread
always ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs
from pydicom import Dataset

from dicomnode.extension.labels import patient_label
from dicomnode_historic_input.ground import RetrievalReport
from dicomnode_historic_input.query import walk

if TYPE_CHECKING:
    from dicomnode.extension.handles import NodeHandle
    from dicomnode_historic_input.input import HistoricAbstractInput
    from dicomnode_historic_input.source import PriorSource

__all__ = ["PriorRetrieval"]

logger = logging.getLogger("dicomnode.historic")

_turns: dict[tuple[Hashable, int], threading.BoundedSemaphore] = {}
_turns_lock = threading.Lock()


def _turns_at(pacs: Hashable, limit: int) -> threading.BoundedSemaphore:
    """The turns at one PACS shared by every retrieval with the same limit, in this process."""
    key = (pacs, limit)
    with _turns_lock:
        return _turns.setdefault(key, threading.BoundedSemaphore(limit))


#: how long to wait, after the last retrieve, for instances the node acknowledged
#: before storing them (AbstractThreadedPipeline) to reach the input
_SETTLE_LIMIT = 10.0


class PriorRetrieval:
    """Finds and retrieves one patient's priors for ``owner`` on a daemon thread."""

    def __init__(self, owner: HistoricAbstractInput, trigger: Dataset, patient_key: str,
                 node: NodeHandle, source: PriorSource) -> None:
        self.owner = owner
        self.trigger = trigger
        self.patient_key = patient_key
        #: how log lines name the patient (its key, or its pseudonym)
        self.label = patient_label(patient_key)
        self.node = node
        self.source = source
        self.thread = threading.Thread(target=self.run, name=f"historic-{self.label}", daemon=True)

    def start(self) -> None:
        """Start the retrieval thread."""
        self.thread.start()

    # --- the thread -----------------------------------------------------------------

    def run(self) -> None:
        """Attempt, retry as configured, record the report, then let the node check the patient."""
        owner = self.owner
        report = RetrievalReport()
        try:
            if not self._wait_until_open(owner.timeout):
                report = RetrievalReport(error=f"the node did not listen within {owner.timeout:g} s")
            else:
                report = self._attempts()
        except Exception as error:  # the thread must always end in a report
            logger.exception("[patient %s] retrieving priors from %s failed", self.label, self.source)
            report = attrs.evolve(report, error=f"{type(error).__name__}: {error}")
        report = attrs.evolve(report, finished=True)
        self.owner._finish(report)
        if report.ok:
            logger.info("[patient %s] priors retrieved from %s: %d instance(s) of %d target(s)",
                        self.label, self.source, report.completed, len(report.targets))
        else:
            logger.error("[patient %s] priors from %s not (all) retrieved after %d attempt(s): %s; "
                         "the job runs with what arrived", self.label, self.source, report.attempts,
                         report.error or f"{report.failed} sub-operation(s) failed")
        self.node.check(self.patient_key)

    def _attempts(self) -> RetrievalReport:
        owner = self.owner
        attempt = 0
        while True:
            attempt += 1
            with self._turn() as ours:
                if not ours:
                    return RetrievalReport(error="the node closed while waiting for a turn at the PACS",
                                           attempts=attempt - 1)
                report = self._attempt(attempt)
            if report.error is None and report.failed == 0:
                return report
            retry = owner.on_failure == "retry" and (owner.max_attempts is None or attempt < owner.max_attempts)
            if not retry:
                return report
            logger.warning("[patient %s] attempt %d to retrieve priors from %s failed: %s; again in %g s",
                           self.label, attempt, self.source,
                           report.error or f"{report.failed} sub-operation(s) failed", owner.retry_interval)
            if not self._sleep(owner.retry_interval):
                return attrs.evolve(report, error=f"{report.error}; the node closed before the next attempt")
            if not self._patient_waiting():
                return attrs.evolve(report, error=f"{report.error}; the patient left the node (expired?) "
                                                  "before the next attempt")

    def _attempt(self, attempt: int) -> RetrievalReport:
        source = self.source
        try:
            targets = walk(source.search, self.trigger, self.owner.query_dataset(self.trigger), self.owner.level,
                           self.owner.check_query_dataset)
        except ConnectionError as find_error:  # DimseError is one; so are the other sources' errors
            return RetrievalReport(error=f"{source.search_name}: {find_error}", attempts=attempt)
        logger.info("[patient %s] %d prior target(s) at %s: %s", self.label, len(targets), self.source,
                    ", ".join(map(str, targets)) or "none")
        completed = failed = warning = 0
        error: str | None = None
        for target in targets:
            self.owner._expect(target.identifier)
            result = source.retrieve(target, self.node)
            completed += result.completed
            failed += result.failed
            warning += result.warning
            if result.error is not None:
                error = result.error
                break
        self._settle(completed + warning)
        return RetrievalReport(error=error, attempts=attempt, targets=tuple(map(str, targets)),
                               completed=completed, failed=failed, warning=warning)

    # --- waiting, bounded ------------------------------------------------------------

    @contextmanager
    def _turn(self) -> Iterator[bool]:
        """Hold one of the PACS's ``max_concurrent_retrievals`` turns; yield False if the node closed first."""
        limit = self.owner.max_concurrent_retrievals
        if limit is None:
            yield True
            return
        turns = _turns_at(self.source.turn_key, limit)
        if not turns.acquire(blocking=False):
            logger.info("[patient %s] %d retrieval(s) from %s already running: waiting for a turn",
                        self.label, limit, self.source)
            while not turns.acquire(timeout=0.1):
                if not self.node.is_open:
                    yield False
                    return
        try:
            yield True
        finally:
            turns.release()

    def _wait_until_open(self, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while not self.node.is_open:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early when the node closes; False when it did."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.node.is_open:
                return False
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.node.is_open

    def _patient_waiting(self) -> bool:
        """True while this input's patient is still in the node (not expired or dropped)."""
        return self.node.holds(self.patient_key, self.owner)

    def _settle(self, expected: int) -> None:
        # the PACS counts an instance as sent once we acknowledged it; a pipeline that
        # acknowledges before storing may still be adding it to the input
        deadline = time.monotonic() + min(_SETTLE_LIMIT, self.owner.timeout)
        while self.owner.images < expected and time.monotonic() < deadline:
            time.sleep(0.02)

