"""The executor ``dask``: each job's ``process`` runs on a worker of a Dask distributed cluster.

The node stays the single source of truth: it keeps the images in its data
directory until a job's outputs are delivered, grinds the inputs, and sends
the outputs itself. The cluster only runs ``process``. A job crosses as two
things: the ground :class:`~dicomnode.extension.containers.InputContainer`,
scattered straight to a worker (numpy volumes travel as arrays, never
through the scheduler), and the pipeline's importable identity, from which
each worker process builds its own copy of the pipeline once and calls its
``setup_worker()`` once (see :mod:`dicomnode_dask.worker`).

Settings (``executor_settings``):

``address``
    the scheduler, ``"tcp://host:8786"`` or ``"tls://host:8786"``. Absent: an
    embedded ``LocalCluster`` on this machine with ``n_workers`` worker
    processes of ``threads_per_worker`` threads (``processes = false``: the
    workers are threads of the node's own process).
``resources``
    what each job needs of a worker, e.g. ``{GPU = 1}``: a job runs only on a
    worker started with at least that (``dask worker --resources GPU=1``),
    and holds it while it runs. Workers of the embedded cluster each offer
    these resources.
``retries``
    how many times a job is submitted again when the worker that held it
    was lost (killed, crashed, out of memory) before it goes to the
    quarantine. Default 2.
``connect_timeout``
    seconds one attempt to reach the scheduler may take (default 10). While
    the scheduler cannot be reached the node keeps receiving and the jobs
    wait, for as long as it takes; they are submitted again when a
    scheduler answers at the address.
``resource_timeout``
    seconds a job may wait while no worker of the cluster has the
    ``resources`` it asks for (default 600); then it goes to the quarantine.
``submit_timeout``
    seconds handing a job's inputs to the workers may take (default 60);
    past it (no scheduler or no worker answers) the job is handed over again.
``direct_to_workers``
    the node sends the input containers to the workers and fetches the
    outputs from them directly (default true); false sends them through the
    scheduler, for workers the node cannot reach.
``pixel_data``
    false: ``input_container.datasets`` travel without their pixel data
    (``process`` takes the pixels from the ground values, a numpy volume):
    a 300-slice CT crosses in half the time. Default true.
``shared_memory``
    ``"auto"`` (the default), true or false: the large buffers of a job's
    inputs (numpy volumes, the datasets' pixel data) reach the worker
    through POSIX shared memory instead of a socket (see
    :mod:`dicomnode_dask.shared`). ``"auto"`` uses it for the embedded
    cluster's worker processes; true also for workers at an ``address``,
    which must then all run on the node's machine. The outputs come back
    through Dask.
``shared_memory_keep``
    seconds a shared memory segment is kept for the next job once its own
    has ended (default 30; 0: removed at once). Writing into a kept
    segment is a plain copy; a new one makes the kernel allocate its pages
    first (0.15-0.22 s against 0.09-0.13 s for a 300-slice CT's job, ``benchmarks/RESULTS.md``).
``tls_ca``, ``tls_certificate``, ``tls_key``
    for a ``tls://`` address: the CA that signed the cluster's certificates,
    and the node's own certificate and key (Dask's TLS, which the scheduler
    and workers are started with).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import cloudpickle
from distributed import Future, KilledWorker
from distributed.client import FutureCancelledError

from dicomnode.errors import ConfigurationError, JobInterruptedError, ProcessingError
from dicomnode.extension.executors import Executor, ExecutorHost, Job, PipelineIdentity, failure_of
from dicomnode.extension.labels import patient_label
from dicomnode_dask import shared
from dicomnode_dask.connection import Connection
from dicomnode_dask.shared import Parcel
from dicomnode_dask.travel import travelling
from dicomnode_dask.worker import run_job

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

    from dicomnode.extension.containers import InputContainer
    from dicomnode.extension.outputs import PipelineOutput

__all__ = ["DaskExecutor"]

logger = logging.getLogger("dicomnode.dask")

SETTINGS = ("address", "n_workers", "threads_per_worker", "processes", "resources", "retries", "connect_timeout",
            "resource_timeout", "submit_timeout", "direct_to_workers", "pixel_data", "shared_memory",
            "shared_memory_keep", "tls_ca", "tls_certificate", "tls_key")
#: seconds between two looks at a job that waits on the cluster (closing, resources)
POLL = 0.25
#: seconds between two looks at the cluster's workers for a job that asks for resources
RESOURCE_LOOK = 1.0
#: seconds between two attempts to hand over a job that the cluster could not take
RETRY_DELAY = 1.0
#: seconds between two log lines of a job that keeps waiting (for the scheduler, for resources)
REPEAT_LOG = 60.0


def _positive(value: Any) -> bool:
    return bool(value > 0)


def _resources(value: Any) -> bool:
    return all(isinstance(key, str) and key and isinstance(amount, (int, float)) and not isinstance(amount, bool)
               and amount > 0 for key, amount in value.items())


class _Lost(Exception):
    """A job's submission was lost with the scheduler or with the worker that held its inputs."""

    def __init__(self, why: str, *, scheduler: bool) -> None:
        super().__init__(why)
        self.why = why
        self.scheduler = scheduler


class DaskExecutor(Executor):
    """Runs each job's ``process`` on a Dask distributed cluster; see the module docstring for its settings."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.reject_unknown(settings, SETTINGS)
        self.address: str | None = self.take(settings, "address", str, None,
                                             check=lambda value: "://" in value,
                                             allowed='a scheduler address such as "tcp://127.0.0.1:8786"')
        self.n_workers = self.take(settings, "n_workers", int, 1, check=_positive, allowed="an integer >= 1")
        self.threads_per_worker = self.take(settings, "threads_per_worker", int, 1, check=_positive,
                                            allowed="an integer >= 1")
        self.processes = self.take(settings, "processes", bool, True)
        self.resources: dict[str, float] = dict(self.take(
            settings, "resources", Mapping, {}, check=_resources,
            allowed="a table of resource name -> a positive amount, such as {GPU = 1}"))
        self.retries = self.take(settings, "retries", int, 2, check=lambda value: value >= 0,
                                 allowed="an integer >= 0")
        self.connect_timeout = float(self.take(settings, "connect_timeout", (int, float), 10.0, check=_positive,
                                               allowed="a number of seconds > 0"))
        self.resource_timeout = float(self.take(settings, "resource_timeout", (int, float), 600.0,
                                                check=_positive, allowed="a number of seconds > 0"))
        self.submit_timeout = float(self.take(settings, "submit_timeout", (int, float), 60.0, check=_positive,
                                              allowed="a number of seconds > 0"))
        self.direct_to_workers = self.take(settings, "direct_to_workers", bool, True)
        self.pixel_data = self.take(settings, "pixel_data", bool, True)
        shared_memory: object = self.take(settings, "shared_memory", (bool, str), "auto",
                                  check=lambda value: isinstance(value, bool) or value == "auto",
                                  allowed='true, false or "auto"')
        #: whether the inputs' large buffers travel through shared memory (see dicomnode_dask.shared)
        self.shared_memory: bool = shared_memory is True or (
            shared_memory == "auto" and self.address is None and self.processes and shared.AVAILABLE)
        if self.shared_memory and not shared.AVAILABLE:
            raise ConfigurationError("executor_settings 'shared_memory' of the executor dask: this system has no "
                                     "POSIX shared memory; allowed here: false or \"auto\"")
        keep = float(self.take(settings, "shared_memory_keep", (int, float), shared.KEEP,
                               check=lambda value: value >= 0, allowed="a number of seconds >= 0"))
        self._segments = shared.Segments(keep)
        self.tls = {key: self.take(settings, key, (str, Path), "", allowed="a file path")
                    for key in ("tls_ca", "tls_certificate", "tls_key")}
        self._check_placement(settings)
        self._connection: Connection | None = None
        self._cluster: LocalCluster | None = None
        self._fingerprint = ""

    def _check_placement(self, settings: Mapping[str, Any]) -> None:
        tls_given = [key for key, value in self.tls.items() if value]
        if self.address is None:
            for key in ("connect_timeout", *tls_given):
                if key in settings:
                    raise ConfigurationError(f"executor_settings {key!r} of the executor dask is for a scheduler "
                                             "at an 'address'; without one the node runs an embedded cluster")
            return
        for key in ("n_workers", "threads_per_worker", "processes"):
            if key in settings:
                raise ConfigurationError(f"executor_settings {key!r} of the executor dask is for the embedded "
                                         f"cluster; with an 'address' ({self.address}) the workers are started "
                                         "apart from the node")
        if self.address.startswith("tls://") and len(tls_given) != 3:
            missing = sorted(set(self.tls) - set(tls_given))
            raise ConfigurationError(f"executor_settings of the executor dask: the address {self.address} uses "
                                     f"TLS and needs tls_ca, tls_certificate and tls_key; missing: "
                                     f"{', '.join(missing)}")
        if tls_given and not self.address.startswith("tls://"):
            raise ConfigurationError(f"executor_settings {tls_given[0]!r} of the executor dask: the address "
                                     f"{self.address} is not a tls:// address")

    # --- life cycle --------------------------------------------------------------------

    def start(self, host: ExecutorHost) -> None:
        """Check the pipeline can be built elsewhere; start the embedded cluster or reach the scheduler."""
        super().start(host)
        self._fingerprint = _fingerprint(_worker_identity(host.identity()))
        if self.shared_memory:
            shared.remove_stale()
        if self.address is None:
            from distributed import LocalCluster

            self._cluster = LocalCluster(n_workers=self.n_workers, threads_per_worker=self.threads_per_worker,
                                         processes=self.processes, host="127.0.0.1",
                                         # Dask's HTTP endpoints (health, metrics) on a free loopback port
                                         dashboard_address="127.0.0.1:0",
                                         resources=self.resources or None)  # type: ignore[no-untyped-call]
            address = str(self._cluster.scheduler_address)
            logger.info("embedded Dask cluster at %s: %d worker(s) of %d thread(s)", address, self.n_workers,
                        self.threads_per_worker)
        else:
            address = self.address
        self._connection = Connection(address, timeout=self.connect_timeout, security=self._security(),
                                      direct_to_workers=self.direct_to_workers)
        if not self._connection.connect():
            logger.warning("the Dask scheduler at %s cannot be reached (%s): the node receives as usual, and "
                           "jobs wait until it answers", address, self._connection.last_error)

    def _security(self) -> Any:
        if not self.tls["tls_ca"]:
            return None
        from distributed.security import Security

        return Security(tls_ca_file=str(self.tls["tls_ca"]), tls_client_cert=str(self.tls["tls_certificate"]),
                        tls_client_key=str(self.tls["tls_key"]),
                        require_encryption=True)  # type: ignore[no-untyped-call]

    def close(self, timeout: float) -> None:
        """Jobs still waiting end with JobInterruptedError (they run at the next start); stop the client."""
        deadline = time.monotonic() + timeout
        if self._connection is not None:
            self._connection.close(timeout)
        self._segments.unlink_all()
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            try:
                cluster.close(timeout=max(1.0, deadline - time.monotonic()))
            except Exception as error:  # the workers are stopped with the node's process in any case
                logger.warning("closing the embedded Dask cluster: %s", error)

    # --- one job -----------------------------------------------------------------------

    def run(self, job: Job) -> list[PipelineOutput]:
        """Submit the job to the cluster and wait for its outputs; submit it again when it is lost."""
        if self._connection is None:
            raise RuntimeError("DaskExecutor.run before start")
        try:
            identity = _worker_identity(job.identity())
        except ConfigurationError as error:
            raise ProcessingError(str(error), stage="executor") from error
        container = travelling(job.input_container, pixel_data=self.pixel_data)
        losses = 0
        attempt = 0
        waiting = _Waiting(job, self._connection.address)
        while True:
            client = self._connection.client(waiting)
            attempt += 1
            try:
                return self._attempt(client, job, identity, container, attempt)
            except _Lost as lost:
                if lost.scheduler:
                    waiting(lost.why)
                    if self._connection.closing.wait(RETRY_DELAY):
                        raise JobInterruptedError("the node closed while the job waited for the Dask cluster") \
                            from None
                    continue
                losses += 1
                if losses > self.retries:
                    raise ProcessingError(f"the job was lost with its Dask worker {losses} time(s) ({lost.why}); "
                                          f"executor_settings retries = {self.retries}", stage="executor") from None
                logger.warning("job %s of patient %s: %s; submitted again (%d of %d retries)", job.id,
                               patient_label(job.patient_key), lost.why, losses, self.retries)

    def _attempt(self, client: Client, job: Job, identity: PipelineIdentity, container: InputContainer,
                 attempt: int) -> list[PipelineOutput]:
        key = f"dicomnode-job-{job.id}-{attempt}"
        parcel = self._parcel(job, container)
        try:
            return self._hand_over(client, job, identity, parcel or container, key)
        finally:
            if parcel is not None:  # the attempt is over, however it ended: the segment is the node's again
                self._segments.release(parcel.segment)

    def _parcel(self, job: Job, container: InputContainer) -> Parcel | None:
        """The container's large buffers in a new shared memory segment (None: it crosses through Dask)."""
        if not self.shared_memory:
            return None
        if not self._segments.has_room():
            logger.debug("job %s: /dev/shm has no more room than when it was last full; the inputs cross through "
                         "Dask", job.id)
            return None
        try:
            return self._segments.pack(container)
        except OSError as error:  # /dev/shm full or not writable: the socket still works
            logger.warning("job %s of patient %s: its inputs cannot be put in shared memory (%s); they cross "
                           "through Dask, and so do the next jobs' until /dev/shm has more room (a container's "
                           "is 64 MiB unless it is given more, e.g. docker run --shm-size=2g)", job.id,
                           patient_label(job.patient_key), _one_line(error))
            return None
        except Exception as error:
            raise failure_of("handing the job to the Dask cluster", error) from error

    def _hand_over(self, client: Client, job: Job, identity: PipelineIdentity, inputs: InputContainer | Parcel,
                   key: str) -> list[PipelineOutput]:
        try:
            workers = self._workers_with_resources(client)
            data = client.scatter(inputs, direct=self.direct_to_workers, workers=workers or None,  # type: ignore[no-untyped-call]
                                  hash=False, timeout=self.submit_timeout)
            future = client.submit(run_job, identity, self._fingerprint, data, key=key,
                                   resources=self.resources or None, pure=False)
        except Exception as error:
            if isinstance(error, (OSError, asyncio.CancelledError, asyncio.TimeoutError)) or \
                    client.status != "running":
                # Dask raises all sorts of things when the scheduler goes away in the middle of a call
                raise _Lost(f"no scheduler, or no worker, took the job ({_one_line(error)})", scheduler=True) \
                    from None
            raise failure_of("handing the job to the Dask cluster", error) from error
        try:
            return self._wait(client, job, key, future)
        finally:
            # whatever happens to this attempt, its task and data are released: a result it might still
            # produce (its worker was only thought dead) has nobody to go to, and is dropped by the cluster
            _release(future, data)

    def _wait(self, client: Client, job: Job, key: str, future: Future[list[PipelineOutput]]) -> list[PipelineOutput]:
        assert self._connection is not None
        resources = _ResourceWait(self, job)
        while True:
            if self._connection.closing.is_set():
                raise JobInterruptedError("the node closed while the job ran on the Dask cluster")
            try:
                outputs: list[PipelineOutput] = future.result(timeout=POLL)
            except asyncio.TimeoutError:
                resources.check(client)
                continue
            except ProcessingError:
                raise
            except KilledWorker as error:
                raise ProcessingError(
                    f"Dask workers died while running the job, each time it was started ({_one_line(error)}); "
                    "the images may crash the model (segmentation fault, out of memory)", stage="process") from None
            except FutureCancelledError as error:
                if self._connection.closing.is_set():
                    raise JobInterruptedError("the node closed while the job ran on the Dask cluster") from None
                scheduler = error.reason == "scheduler-connection-lost" or client.status != "running"
                raise _Lost("the scheduler was lost while the job ran" if scheduler else
                            f"the worker that held the job's inputs was lost ({error.reason})",
                            scheduler=scheduler) from None
            except (OSError, asyncio.CancelledError) as error:
                raise _Lost(f"the scheduler was lost while the job ran ({_one_line(error)})", scheduler=True) \
                    from None
            except Exception as error:  # a Dask failure of its own: the job fails, it is not retried
                raise failure_of("the Dask cluster", error) from error
            logger.debug("job %s: outputs of task %s received", job.id, key)
            return outputs

    def _workers_with_resources(self, client: Client) -> list[str]:
        """The workers that have what a job needs (all of them when it needs nothing special)."""
        if not self.resources:
            return []
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        return [address for address, info in workers.items() if _has(info.get("resources") or {}, self.resources)]


class _Waiting:
    """Says that a job waits for the cluster: at once, again when the reason changes, and once a minute."""

    def __init__(self, job: Job, address: str) -> None:
        self.job = job
        self.address = address
        self.last = 0.0
        self.reason = ""

    def __call__(self, why: str) -> None:
        now = time.monotonic()
        if why != self.reason or now - self.last >= REPEAT_LOG:
            self.last, self.reason = now, why
            logger.warning("job %s of patient %s waits for the Dask cluster at %s: %s; the node keeps receiving, "
                           "and the job is handed over when the cluster answers", self.job.id,
                           patient_label(self.job.patient_key), self.address, why)


class _ResourceWait:
    """Watches a submitted job while no worker has the resources it asks for."""

    def __init__(self, executor: DaskExecutor, job: Job) -> None:
        self.executor = executor
        self.job = job
        self.since: float | None = None
        self.logged = 0.0
        self.next_look = 0.0

    def check(self, client: Client) -> None:
        executor = self.executor
        now = time.monotonic()
        if not executor.resources or now < self.next_look:
            return
        self.next_look = now + RESOURCE_LOOK
        try:
            available = executor._workers_with_resources(client)
        except Exception:  # the scheduler is away: the future says so itself
            return
        if available:
            if self.since is not None:
                logger.info("job %s of patient %s: a worker with %s joined the cluster", self.job.id,
                            patient_label(self.job.patient_key), _table(executor.resources))
            self.since = None
            return
        now = time.monotonic()
        if self.since is None:
            self.since = now
        waited = now - self.since
        if waited >= executor.resource_timeout:
            raise ProcessingError(
                f"no worker of the Dask cluster has the resources the job asks for ({_table(executor.resources)}); "
                f"waited {waited:.0f} s (executor_settings resource_timeout = {executor.resource_timeout:g} s)",
                stage="executor")
        if now - self.logged >= REPEAT_LOG or self.logged == 0.0:
            self.logged = now
            logger.warning("job %s of patient %s waits: no worker of the Dask cluster has the resources it asks "
                           "for (%s); it goes to the quarantine after %g s (resource_timeout) unless one joins",
                           self.job.id, patient_label(self.job.patient_key), _table(executor.resources),
                           executor.resource_timeout)


def _has(offered: Mapping[str, float], needed: Mapping[str, float]) -> bool:
    return all(offered.get(name, 0) >= amount for name, amount in needed.items())


def _table(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{name} = {amount:g}" for name, amount in sorted(resources.items())) + "}"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _release(*futures: Any) -> None:
    for future in futures:
        try:
            future.release()
        except Exception:  # the client is gone with its scheduler: nothing is left to release
            pass


def _worker_identity(identity: PipelineIdentity) -> PipelineIdentity:
    """The identity a worker builds its pipeline from: no data directory, and the jobs run right there.

    A worker's copy of the pipeline only runs ``process``: the node keeps the
    images, the quarantine and the outbox, so the copy must not open (or
    make) the node's data directory on the worker's machine.
    """
    config = identity.config
    if attrs.has(type(config)):
        fields = attrs.fields_dict(type(config))
        changes: dict[str, Any] = {name: value for name, value in
                   (("data_directory", None), ("executor", "threads"), ("executor_settings", {}))
                   if name in fields}
        config = attrs.evolve(config, **changes)
    return attrs.evolve(identity, config=config)


def _fingerprint(identity: PipelineIdentity) -> str:
    """Names the pipeline a worker keeps built: the same import path and configuration, the same copy."""
    try:
        return hashlib.sha256(cloudpickle.dumps(identity)).hexdigest()[:24]
    except Exception as error:
        raise ConfigurationError(f"the pipeline's configuration cannot be sent to a Dask worker: {error}") from error
