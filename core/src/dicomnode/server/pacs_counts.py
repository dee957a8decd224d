"""``completeness = "query"``: ask the PACS how many instances each series of a study has.

An input with ``completeness = "query"`` is complete when the node has
received every instance a known endpoint (its ``query_endpoint``, or the
PACS that sent the images) holds of each study the input holds. The node
counts what it receives of every study (accepted, discarded or refused:
what matters is that the sender has sent it), and asks the endpoint with a
C-FIND at SERIES level for NumberOfSeriesRelatedInstances of every series
of the study.

Asking is bounded in rate: a study is asked about again only when
instances of it arrived after the last answer, and at most once per
``query_interval`` seconds; the questions run on a thread of their own, and
when an answer comes the patient is checked again. While a question is
pending the input counts as incomplete; when the endpoint cannot be asked
(no endpoint, it does not answer, it does not know the study) the content
cannot tell, and the input falls back to ``validate()`` with
``stable_time``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs
from pydicom import Dataset

from dicomnode.extension.completeness import Completion
from dicomnode.net import Address, find
from dicomnode.server.logs import patient_label

if TYPE_CHECKING:
    from dicomnode.extension.handles import Source
    from dicomnode.extension.inputs import AbstractInput
    from dicomnode.server.pipeline_tree import PatientContainer

__all__ = ["PacsCounts"]

logger = logging.getLogger("dicomnode.inputs")

#: how long the node remembers what it received of a study nobody asked about
_FORGET_AFTER = 86400.0


@attrs.frozen
class _Answer:
    asked: float
    counts: Mapping[str, int] = attrs.field(factory=dict)
    error: str = ""


class _Received:
    def __init__(self, patient_key: str) -> None:
        self.patient_key = patient_key
        self.series: dict[str, set[str]] = {}
        self.last = time.monotonic()


def _plural(count: int) -> str:
    return "" if count == 1 else "s"


class PacsCounts:
    """What the node received of each study, and what the endpoints said they hold.

    ``ae_title`` is the node's own (the calling AE title of its C-FINDs);
    ``known_endpoints`` resolves a ``query_endpoint`` given by AE title;
    ``notify(patient_key)`` is called when an answer arrives; ``ask`` is
    the C-FIND (``find`` at SERIES level; replaceable for a test of the
    bookkeeping).
    """

    def __init__(self, ae_title: str, known_endpoints: Mapping[str, Address],
                 notify: Callable[[str], None] | None = None, timeout: float = 10.0,
                 ask: Callable[[Address, str], dict[str, int]] | None = None) -> None:
        self.ae_title = ae_title
        self.known_endpoints = dict(known_endpoints)
        self.notify = notify
        self.timeout = timeout
        self._ask = ask or self._find
        self._received: dict[str, _Received] = {}
        self._answers: dict[tuple[Address, str], _Answer] = {}
        self._pending: dict[tuple[Address, str], threading.Timer | threading.Thread] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.questions = 0

    # --- what arrives -----------------------------------------------------------------

    def seen(self, source: Source, dataset: Dataset, patient_key: str) -> None:
        """Count one received instance of a study (whatever becomes of it)."""
        study = str(dataset.get("StudyInstanceUID", "") or "")
        if not study:
            return
        series = str(dataset.get("SeriesInstanceUID", "") or "")
        sop = str(dataset.get("SOPInstanceUID", "") or "")
        with self._lock:
            received = self._received.get(study)
            if received is None:
                received = self._received[study] = _Received(patient_key)
            received.series.setdefault(series, set()).add(sop)
            received.last = time.monotonic()

    def forget(self, studies: list[str]) -> None:
        """A job took these studies: what was received of them no longer counts."""
        now = time.monotonic()
        with self._lock:
            for study in studies:
                self._received.pop(study, None)
                for key in [key for key in self._answers if key[1] == study]:
                    del self._answers[key]
            for study in [s for s, r in self._received.items() if now - r.last > _FORGET_AFTER]:
                del self._received[study]

    # --- the verdict -------------------------------------------------------------------

    def endpoint(self, container: PatientContainer, inp: AbstractInput) -> Address | None:
        """The endpoint an input's questions go to: its ``query_endpoint``, or the sender when known."""
        wanted = inp.query_endpoint
        if isinstance(wanted, Address):
            return wanted
        if isinstance(wanted, str):
            return self.known_endpoints.get(wanted)
        return container.responding_address

    def completion(self, container: PatientContainer, name: str, inp: AbstractInput) -> Completion:
        """Whether the node received all the endpoint holds of every study the input holds."""
        address = self.endpoint(container, inp)
        if address is None:
            sender = container.calling_aet or "the sender"
            return Completion("unknown", f"no endpoint to ask ({sender} is not a known endpoint)")
        studies = inp.studies()
        if not studies:
            return Completion("incomplete", "no images yet")
        for study in studies:
            verdict = self._study(container.patient_key, address, study, float(inp.query_interval))
            if verdict.state != "complete":
                return verdict
        return Completion("complete", f"every instance {address.ae_title} holds of {len(studies)} "
                                      f"stud{'y' if len(studies) == 1 else 'ies'}")

    def _study(self, patient_key: str, address: Address, study: str, interval: float) -> Completion:
        key = (address, study)
        now = time.monotonic()
        with self._lock:
            answer = self._answers.get(key)
            received = self._received.get(study)
            last = received.last if received is not None else 0.0
            held = {series: len(uids) for series, uids in (received.series.items() if received else ())}
            fresh = answer is not None and answer.asked >= last
            if not fresh and key not in self._pending and not self._closed:
                delay = 0.0 if answer is None else max(0.0, answer.asked + interval - now)
                self._schedule(key, patient_key, delay)
        if answer is None:
            return Completion("incomplete", f"asking {address.ae_title} how many instances study {study} has")
        if answer.error:
            return Completion("unknown", answer.error)
        if not answer.counts:
            return Completion("unknown", f"{address.ae_title} does not know study {study}")
        for series, count in answer.counts.items():
            if held.get(series, 0) < count:
                return Completion("incomplete", f"{held.get(series, 0)} of {count} instance{_plural(count)} "
                                                f"of series {series} at {address.ae_title}")
        if not fresh:
            return Completion("incomplete", f"asking {address.ae_title} again: instances arrived since it "
                                            "answered")
        return Completion("complete")

    # --- asking --------------------------------------------------------------------------

    def _schedule(self, key: tuple[Address, str], patient_key: str, delay: float) -> None:
        """Ask about ``key`` after ``delay`` seconds (called with the lock held)."""
        worker: threading.Timer | threading.Thread
        if delay > 0:
            worker = threading.Timer(delay, self._run, (key, patient_key))
        else:
            worker = threading.Thread(target=self._run, args=(key, patient_key))
        worker.name = f"dicomnode-query-{key[0].ae_title}"
        worker.daemon = True
        self._pending[key] = worker
        worker.start()

    def _run(self, key: tuple[Address, str], patient_key: str) -> None:
        address, study = key
        asked = time.monotonic()
        try:
            counts = self._ask(address, study)
            answer = _Answer(asked, counts)
            logger.info("[patient %s] %s holds %d instance(s) in %d series of study %s", patient_label(patient_key),
                        address.ae_title, sum(counts.values()), len(counts), study)
        except Exception as error:  # DimseError, a refused association, a malformed answer: not a verdict
            answer = _Answer(asked, error=f"{address.ae_title} did not answer the C-FIND: {error}")
            logger.warning("[patient %s] completeness 'query': %s", patient_label(patient_key), answer.error)
        with self._lock:
            self.questions += 1
            self._pending.pop(key, None)
            if self._closed:
                return
            self._answers[key] = answer
        if self.notify is not None:
            self.notify(patient_key)

    def _find(self, address: Address, study: str) -> dict[str, int]:
        query = Dataset()
        query.StudyInstanceUID = study
        query.SeriesInstanceUID = ""
        query.NumberOfSeriesRelatedInstances = ""
        counts: dict[str, int] = {}
        for match in find(address, query, level="SERIES", ae_title=self.ae_title, timeout=self.timeout):
            uid = str(match.get("SeriesInstanceUID", "") or "")
            value = match.get("NumberOfSeriesRelatedInstances")
            if uid and value not in (None, ""):
                counts[uid] = int(value)
        return counts

    def close(self) -> None:
        """Cancel the questions not asked yet; answers that come later are dropped."""
        with self._lock:
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
        for worker in pending:
            if isinstance(worker, threading.Timer):
                worker.cancel()

    def open(self) -> None:
        """Ask again after :meth:`close` (a node opened once more)."""
        with self._lock:
            self._closed = False
