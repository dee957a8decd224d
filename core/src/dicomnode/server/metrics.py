"""Prometheus metrics of a node, served as ``GET /metrics`` by the admin endpoint.

Counted as the node's events happen (:class:`NodeMetrics` is a
:class:`~dicomnode.server.events.NodeListener`): instances stored, discarded
and refused (by status), bytes received, associations, jobs by outcome, the
time of each job stage, outputs delivered or deferred, outbox attempts,
expired patients. Read when scraped: patients and instances held, the age of
the oldest, jobs queued and running, outbox and quarantine entries, whether
the node is ready. Every name starts with ``dicomnode_``;
``docs/run-in-production.md`` lists them.

Uses prometheus-client (the ``dicomnode[metrics]`` extra); without it the
rest of the admin endpoint works and ``/metrics`` says what to install.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dicomnode.__about__ import __version__
from dicomnode.server.events import NodeListener

if TYPE_CHECKING:
    from dicomnode.extension.handles import IngestResult, Source
    from dicomnode.extension.outputs import OutboxEntry, PipelineOutput
    from dicomnode.server.events import AssociationSummary
    from dicomnode.server.nodes import AbstractPipeline
    from dicomnode.server.runner import JobResult
    from dicomnode.server.status import DirectoryCounts, StatusBoard

__all__ = ["INSTALL_HINT", "NodeMetrics", "metrics_available"]

INSTALL_HINT = "the metrics need prometheus-client: pip install 'dicomnode[metrics]'"

#: job stages take from milliseconds (a small grind) to many minutes (a model on a CPU)
_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def metrics_available() -> bool:
    """True when prometheus-client can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class NodeMetrics(NodeListener):
    """The node's Prometheus registry: counters fed by its events, gauges read when scraped."""

    def __init__(self, node: AbstractPipeline, board: StatusBoard, counts: DirectoryCounts | None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.node = node
        self.board = board
        self.counts = counts
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self._stored = Counter("dicomnode_instances_stored", "Instances stored (acknowledged with success)",
                               ["source"], registry=registry)
        self._discarded = Counter("dicomnode_instances_discarded",
                                  "Instances answered with success and dropped (rejection_policy = discard)",
                                  ["source"], registry=registry)
        self._refused = Counter("dicomnode_instances_refused", "Instances refused, by the C-STORE status answered",
                                ["status"], registry=registry)
        self._bytes = Counter("dicomnode_received_bytes", "Bytes of datasets received", registry=registry)
        self._associations = Counter("dicomnode_associations", "Associations that sent C-STOREs, when they ended",
                                     registry=registry)
        self._jobs = Counter("dicomnode_jobs", "Jobs ended, by outcome (done, waiting_for_outbox, failed, "
                             "interrupted)", ["outcome"], registry=registry)
        self._stages = Histogram("dicomnode_job_stage_seconds", "Seconds a job spent in each stage",
                                 ["stage"], buckets=_STAGE_BUCKETS, registry=registry)
        self._job_seconds = Histogram("dicomnode_job_seconds", "Seconds from a job's start to its end",
                                      buckets=_STAGE_BUCKETS, registry=registry)
        self._outputs = Counter("dicomnode_outputs", "Outputs sent, by registered name and outcome "
                                "(delivered, deferred to the outbox)", ["output", "outcome"], registry=registry)
        self._outbox = Counter("dicomnode_outbox_attempts", "Outbox retries, by outcome", ["outcome"],
                               registry=registry)
        self._expired = Counter("dicomnode_patients_expired", "Incomplete patients dropped after "
                                "study_expiration_days", registry=registry)
        self._children: dict[tuple[str, str], Any] = {}
        registry.register(_StateCollector(self))

    def _child(self, metric: Any, label: str) -> Any:
        # labels() takes a lock and builds a key on each call; the receive path asks once per label
        key = (str(id(metric)), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(label)
        return child

    def text(self) -> tuple[bytes, str]:
        """The exposition (Prometheus text format) and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # --- events --------------------------------------------------------------------------------

    def instance(self, source: Source, result: IngestResult, size: int) -> None:
        """Count one instance and its bytes."""
        self._bytes.inc(size)
        if result.status != 0:
            self._child(self._refused, f"0x{result.status:04X}").inc()
        elif result.stored:
            self._child(self._stored, source.kind).inc()
        else:
            self._child(self._discarded, source.kind).inc()

    def association(self, summary: AssociationSummary) -> None:
        """Count the association."""
        self._associations.inc()

    def job_stages(self, job_id: str, patient_key: str, seconds: Mapping[str, float]) -> None:
        """Observe each stage's time."""
        for stage, value in seconds.items():
            self._child(self._stages, stage).observe(value)

    def output_done(self, job_id: str, patient_key: str, key: str, output: PipelineOutput,
                    deferred: Sequence[str]) -> None:
        """Count the output by its registered name."""
        name = key.partition(":")[2] or key
        self._outputs.labels(name, "deferred" if deferred else "delivered").inc()

    def job_finished(self, job_id: str, patient_key: str, calling_aet: str, result: JobResult,
                     seconds: float) -> None:
        """Count the job by outcome; observe its time."""
        if result.interrupted:
            outcome = "interrupted"
        elif not result.ok:
            outcome = "failed"
        elif result.deferred:
            outcome = "waiting_for_outbox"
        else:
            outcome = "done"
        self._child(self._jobs, outcome).inc()
        self._job_seconds.observe(seconds)

    def outbox_attempt(self, entry: OutboxEntry, delivered: bool, reason: str) -> None:
        """Count the retry."""
        self._child(self._outbox, "delivered" if delivered else "failed").inc()

    def expired(self, patient_key: str, calling_aet: str, images: int, days: float) -> None:
        """Count the expiry."""
        self._expired.inc()


class _StateCollector:
    """The gauges read from the node when scraped."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        node, board, counts = self.metrics.node, self.metrics.board, self.metrics.counts
        config = node.config
        yield InfoMetricFamily("dicomnode_node", "The node: pipeline name, AE title, dicomnode version",
                               value={"pipeline": config.name, "ae_title": config.ae_title, "version": __version__})
        restoring = node.restoring
        yield GaugeMetricFamily("dicomnode_ready", "1 when the node listens and has restored its data",
                                value=1.0 if board.ready and node.is_open and restoring is None else 0.0)
        yield GaugeMetricFamily("dicomnode_restore_pending_instances",
                                "Stored instances the node has yet to read back after its start (0: none)",
                                value=0.0 if restoring is None else float(restoring[1] - restoring[0]))
        yield GaugeMetricFamily("dicomnode_start_time_seconds", "When the node started (Unix time)",
                                value=board.started)
        receiving = node.receiving
        if receiving is not None:
            yield GaugeMetricFamily("dicomnode_receiving_processes_ready",
                                    "Receiving processes taking associations (receiving_processes)",
                                    value=receiving[0])
        patients = images = 0
        oldest: float | None = None
        for container in node.tree.containers():
            images += container.images
            created = container.created
            patients += 1
            oldest = created if oldest is None else min(oldest, created)
        yield GaugeMetricFamily("dicomnode_patients_held", "Patients waiting until their inputs are complete",
                                value=patients)
        yield GaugeMetricFamily("dicomnode_instances_held", "Instances of the patients held", value=images)
        yield GaugeMetricFamily("dicomnode_oldest_patient_age_seconds",
                                "Seconds since the first image of the patient held longest (0: none held)",
                                value=0.0 if oldest is None else max(0.0, time.time() - oldest))
        queued, running = node.runner.load()
        yield GaugeMetricFamily("dicomnode_jobs_queued", "Jobs waiting for a job thread", value=queued)
        yield GaugeMetricFamily("dicomnode_jobs_running", "Jobs running", value=running)
        if counts is not None:
            entries, first = counts.outbox()
            yield GaugeMetricFamily("dicomnode_outbox_entries", "Results waiting in the outbox", value=entries)
            yield GaugeMetricFamily("dicomnode_outbox_oldest_age_seconds",
                                    "Seconds since the oldest outbox entry was made (0: empty)",
                                    value=0.0 if first is None else max(0.0, time.time() - first))
            quarantined, failed, _ = counts.quarantine()
            family = GaugeMetricFamily("dicomnode_quarantine_entries",
                                       "Quarantine entries, by state (failed, waiting_for_outbox)", labels=["state"])
            family.add_metric(["failed"], failed)
            family.add_metric(["waiting_for_outbox"], quarantined - failed)
            yield family
