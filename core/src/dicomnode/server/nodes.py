"""The node: a DICOM server that collects, grinds, processes and dispatches.

Subclass :class:`AbstractPipeline`, set its class attributes (every setting
of :class:`~dicomnode.server.config.PipelineConfig`; the inputs go in
``input``) and define ``process``::

    class MyNode(AbstractPipeline):
        ae_title = "MYNODE"
        port = 11112
        input = {"CT": CT}
        data_directory = "data"

        def process(self, input_container):
            return NoOutput()

    MyNode().open()                      # blocks until SIGINT/SIGTERM

    with MyNode(port=0) as node:         # open(blocking=False) … close()
        print(node.port)

:class:`AbstractThreadedPipeline` acknowledges every C-STORE at once and
routes and stores on a background thread; :class:`AbstractQueuedPipeline`
runs jobs one at a time in arrival order.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydicom import Dataset

from dicomnode.dicom.encoded import encoded_instance
from dicomnode.errors import ConfigurationError
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.executors import PipelineIdentity
from dicomnode.extension.handles import IngestResult, Source
from dicomnode.extension.outputs import PipelineOutput
from dicomnode.net import Address
from dicomnode.server.allocator import limit_arenas, release_free_memory
from dicomnode.server.config import PipelineConfig
from dicomnode.server.events import NodeEvents
from dicomnode.server.ingest import STATUS_SUCCESS, Ingest
from dicomnode.server.late import RecentJobs
from dicomnode.server.logs import configure_node_logging, job_logger, patient_label
from dicomnode.server.operations import Operations
from dicomnode.server.pacs_counts import PacsCounts
from dicomnode.server.pipeline_tree import PatientContainer, PipelineTree
from dicomnode.server.receive import AssociationState, Receiver
from dicomnode.server.runner import JobResult, JobRunner, new_job_id
from dicomnode.server.stores import DataDirectory

if TYPE_CHECKING:
    from pydicom.dataset import FileMetaDataset

    from dicomnode.extension.services import Service
    from dicomnode.net.server import DicomServer
    from dicomnode.server.maintenance import MaintenanceThread
    from dicomnode.server.outbox import Outbox
    from dicomnode.server.processes import ReceivingProcesses
    from dicomnode.server.quarantine import Quarantine
    from dicomnode.server.restore import Restore
    from dicomnode.server.storage import InstanceStore

__all__ = ["AbstractPipeline", "AbstractQueuedPipeline", "AbstractThreadedPipeline"]

#: seconds between two "waiting" lines about one patient
_WAITING_LOG_INTERVAL = 10.0
#: seconds open() waits for the receiving processes (each imports pydicom and pynetdicom) before it returns
_RECEIVING_START = 20.0


class AbstractPipeline:
    """A DICOM node: receives images, waits until a patient is complete, processes, delivers.

    Settings are class attributes of a subclass (every setting of
    :class:`~dicomnode.server.config.PipelineConfig`, where their defaults
    live; see ``docs/configuration.md``); keyword arguments of the
    constructor override them (``MyNode(port=0)``), or pass a whole
    :class:`~dicomnode.server.config.PipelineConfig` as ``config``. The
    validated settings are ``node.config``. Override :meth:`process`
    (required), and :meth:`filter`, :meth:`post_init` and
    :meth:`setup_worker` when needed.
    """

    #: on an instance: the port the server listens on (the real one after ``open``)
    port: int
    #: dicomnode's own pipeline classes say so: their attributes are not settings of a user's
    _framework_class: ClassVar[bool] = True
    _executor_workers: ClassVar[int | None] = None

    def __init__(self, config: PipelineConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = PipelineConfig.from_pipeline_class(type(self), **overrides)
        elif overrides:
            import attrs

            config = attrs.evolve(config, **overrides)
        self.config = config
        self.logger = logging.getLogger("dicomnode.node")
        #: the node's PACS questions, when an input has ``completeness = "query"``
        self.pacs_counts: PacsCounts | None = None
        if any(spec.create().completeness == "query" for spec in config.inputs.values()):
            self.pacs_counts = PacsCounts(config.ae_title, config.known_endpoints, notify=self._look_again)
        self.tree = PipelineTree(config.inputs, config.known_endpoints, node=_Handle(self),
                                 completion_of=self.pacs_counts.completion if self.pacs_counts else None)
        #: what the node's parts report; the history, the metrics and the status listen (server.events)
        self.events = NodeEvents()
        self.data = DataDirectory(config.data_directory, config.fsync, events=self.events) if config.data_directory is not None else None  # type: ignore[arg-type]
        #: the studies jobs took lately, for late images
        self.late_jobs = RecentJobs(config.late_images, config.late_images_window,
                                    self.data.path / "retained" if self.data is not None else None,
                                    notify=self._look_again)
        self.ingestion = Ingest(config, self.tree, self.store, self.filter, self.late_jobs, events=self.events)
        self._waiting_logged: dict[str, float] = {}
        if self.pacs_counts is not None:
            self.ingestion.seen = self.pacs_counts.seen
        self.receiver = Receiver(self)
        self.runner = self._make_runner()
        self.operations = Operations(self)
        #: the services of the ``services`` setting, by name, built (and their settings checked) here
        self.services: dict[str, Service] = self._make_services()
        self._services_started: list[Service] = []
        self.port = config.port
        #: the restore of the data directory behind the listening node (None: nothing to restore)
        self._restore: Restore | None = None
        self._server: DicomServer | None = None
        self._processes: ReceivingProcesses | None = None
        self._maintenance: MaintenanceThread | None = None
        self._stopped = threading.Event()
        self._opening = False
        self._workers_started = False
        self.post_init()

    # --- what a user overrides ----------------------------------------------

    def post_init(self) -> None:
        """Called at the end of ``__init__``, wherever the pipeline is built (the node, and each
        process an executor builds it in)."""

    def setup_worker(self) -> None:
        """Called once where ``process`` will run, before the first job there: load models here.

        With the ``threads`` executor that is the node itself, when it opens;
        with ``process``, each spawned job process; with a cluster executor,
        once per worker process, which then keeps the model for every job it
        runs. The node itself does not call it when ``process`` runs elsewhere,
        so a node that only receives and sends never loads the model.
        """

    def filter(self, dataset: Dataset) -> bool:
        """Return False to refuse an image before the inputs see it; the default accepts all.

        Runs on the association thread: keep it quick, and look only at a few tags.
        With ``lazy_storage`` the dataset it sees stops before the pixel data.
        """
        return True

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        """The job: turn a complete patient's inputs into one output or a list of outputs."""
        raise NotImplementedError(f"{type(self).__name__} must define process(input_container)")

    # --- what the node is made of ---------------------------------------------------

    @property
    def store(self) -> InstanceStore | None:
        """Where received instances are kept until their job succeeds (None without a data directory)."""
        return self.data.store if self.data is not None else None

    @property
    def quarantine(self) -> Quarantine | None:
        """Jobs that did not finish (None without a data directory)."""
        return self.data.quarantine if self.data is not None else None

    @property
    def outbox(self) -> Outbox | None:
        """Results waiting for their destination (None without a data directory)."""
        return self.data.outbox if self.data is not None else None

    def _make_runner(self) -> JobRunner:
        from dicomnode.plugins import get_registry

        config = self.config
        registry = get_registry()
        try:
            executor_class = registry.executor(config.executor)
        except LookupError as error:
            raise ConfigurationError(f"setting 'executor' = {config.executor!r}: {error}") from None
        executor = executor_class(config.executor_settings)
        executor.name = config.executor
        workers = self._executor_workers or config.processing_workers
        return JobRunner(config=config, data=self.data, executor=executor, host=self, registry=registry,
                         workers=workers, late_jobs=self.late_jobs, events=self.events)

    def _make_services(self) -> dict[str, Service]:
        from dicomnode.plugins import get_registry

        registry = get_registry()
        services: dict[str, Service] = {}
        for name, settings in self.config.services.items():
            try:
                service_class = registry.service(name)
            except LookupError as error:
                raise ConfigurationError(f"setting 'services' names {name!r}: {error}") from None
            try:
                service = service_class(settings)
            except ConfigurationError as error:
                raise ConfigurationError(f"setting services[{name!r}]: {error}") from None
            service.name = name
            services[name] = service
        return services

    def identity(self) -> PipelineIdentity:
        """How another process builds this pipeline: its class's import path and the configuration.

        Raises ConfigurationError when the class cannot be imported by another
        process (defined in ``__main__`` or inside a function).
        """
        cls = type(self)
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            raise ConfigurationError(
                f"{cls.__qualname__} cannot be imported by another process (it is defined in "
                f"{'the script run as __main__' if cls.__module__ == '__main__' else 'a function'}); "
                "define the pipeline at the top level of a module, or run it with 'dicomnode run FILE.py'"
            )
        return PipelineIdentity(f"{cls.__module__}:{cls.__qualname__}", self.config)

    @property
    def jobs_succeeded(self) -> int:
        """Jobs that ended with every output delivered or deferred to the outbox."""
        return self.runner.succeeded

    @property
    def jobs_failed(self) -> int:
        """Jobs that failed (and were quarantined when there is a data directory)."""
        return self.runner.failed

    # --- life cycle -------------------------------------------------------------

    @property
    def address(self) -> Address:
        """Where the node listens (the real port after ``open``)."""
        ip = "127.0.0.1" if self.config.ip in ("0.0.0.0", "") else self.config.ip
        return Address(ip, int(self.port), self.config.ae_title)

    @property
    def is_open(self) -> bool:
        """True between ``open`` and ``close``."""
        return self._server is not None

    def open(self, blocking: bool = True) -> None:
        """Start serving; with ``blocking`` wait until SIGINT/SIGTERM or :meth:`close`, then close.

        A blocking ``open`` in the main thread handles SIGINT and SIGTERM from
        its first line, so a signal during start-up also ends in a clean close.
        """
        if self._server is not None or self._opening:
            raise RuntimeError(f"{type(self).__name__} is already open on port {self.port}")
        self._stopped.clear()
        previous = self._catch_signals() if blocking else {}
        try:
            self._opening = True
            self._start()
            if blocking:
                while not self._stopped.wait(0.5):
                    pass
        except BaseException:
            self.close()
            raise
        finally:
            self._opening = False
            for number, handler in previous.items():
                signal.signal(number, handler)
        if blocking:
            self.close()

    def _catch_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(number: int, _frame: object) -> None:
            self.logger.info("received %s: closing", signal.Signals(number).name)
            self._stopped.set()

        return {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}

    def _start(self) -> None:
        config = self.config
        configure_node_logging(config)
        self.operations.open()
        if config.malloc_arenas is not None:
            # before the executor and the server start threads: only arenas made later obey the limit
            limit_arenas(config.malloc_arenas)
        if self.pacs_counts is not None:
            self.pacs_counts.open()
        self.runner.start()
        self._start_workers()
        self._workers_started = True
        # listed before the node listens: what arrives afterwards is not restored a second time
        restore = self._restore = self._listed_restore()
        from dicomnode.net.server import DicomServer

        processes = None
        if config.receiving_processes:
            processes = self._receiving_processes()
        server = DicomServer(ae_title=config.ae_title, sink=self.receiver, ip=config.ip, port=config.port,
                             sop_classes=config.supported_contexts, require_called_aet=config.require_called_aet,
                             require_calling_aet=config.require_calling_aet, tls=config.tls(),
                             limits=config.limits(), handoff=processes)
        server.start()
        self._server = server
        self.port = server.port
        if processes is not None:
            self._processes = processes
            processes.start(server)  # until a process is ready, the node's own threads receive
        if config.maintenance_thread or config.stable_time is not None:
            from dicomnode.server.maintenance import MaintenanceThread

            self._maintenance = MaintenanceThread(self)
            self._maintenance.start()
        self._start_services()
        if config.release_idle_memory:
            release_free_memory()  # what importing and post_init freed (~30 MB with numpy and pydicom)
        self.logger.info("%s listening as %s on %s:%d", config.name, config.ae_title, config.ip, self.port)
        self.events.opened(f"{config.ip}:{self.port}")
        if restore is not None:
            restore.start()
        if processes is not None:  # behind the listen and the restore, which go on meanwhile
            ready = processes.wait_ready(_RECEIVING_START)
            if ready < processes.count:
                self.logger.warning("%d of %d receiving processes are ready (the log says why the others are not); "
                                    "the node receives the rest in its own process", ready, processes.count)
            else:
                self.logger.info("%d receiving processes ready", ready)

    def close(self) -> None:
        """Stop accepting, let the instances being received finish, finish the jobs in flight, stop.

        Safe to call more than once, and after a failed ``open``.
        """
        self._stopped.set()
        self.events.closing()
        if self._restore is not None:
            self._restore.stop()  # between two files; its patients stay held, every file stays
        self._stop_services()
        server, self._server = self._server, None
        if server is not None:
            # bounded: the instances being received get close_receive_timeout to finish, the rest are aborted
            server.close()
        if self._maintenance is not None:
            self._maintenance.stop()
            self._maintenance = None
        if self.pacs_counts is not None:
            self.pacs_counts.close()
        was_running = self._workers_started
        if was_running:
            self._workers_started = False
            self._stop_workers()
        self.runner.close(self.config.close_timeout)
        self.operations.close()
        if not was_running:
            return
        self.events.closed(self.tree, self.config.stable_time, kept=self.store is not None)
        if self.data is not None:
            self.data.close()
        self.logger.info("%s closed", self.config.name)

    def __enter__(self) -> AbstractPipeline:
        self.open(blocking=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- services (servers alongside the node) ------------------------------------

    def _start_services(self) -> None:
        """Start the ``services`` once the node listens; one that cannot start fails the open."""
        for name, service in self.services.items():
            service.start(_Handle(self))
            self._services_started.append(service)
            self.logger.info("service %s started", name)

    def _stop_services(self) -> None:
        """Stop the started services first, so nothing new arrives while the node closes.

        Each gets ``close_receive_timeout`` for what it is receiving, as the DICOM edge does.
        """
        started, self._services_started = self._services_started, []
        for service in reversed(started):
            try:
                service.stop(self.config.close_receive_timeout)
            except Exception:  # one service must not keep the node from closing
                self.logger.exception("service %s did not stop cleanly", service.name)

    def _receiving_processes(self) -> ReceivingProcesses:
        from dicomnode.server.processes import ReceivingProcesses, settings_of

        return ReceivingProcesses(self.config.receiving_processes, settings_of(self.config), self.receiver)

    def _start_workers(self) -> None:
        """Hook for subclasses with their own receive threads."""

    def _stop_workers(self) -> None:
        """Hook for subclasses with their own receive threads."""

    # --- receive side ----------------------------------------------------------------

    def ingest(self, item: Dataset | bytes | Path | str, *, calling_aet: str = "", kind: str = "api") -> IngestResult:
        """Hand the node one instance, through the same checks as a C-STORE; return what it did.

        ``item`` is a dataset (encoded in its own transfer syntax, or explicit
        VR little endian), the bytes of a DICOM file, or the path of one. The
        instance is verified, routed, stored and added exactly as a received
        C-STORE is; the result's ``status`` is the status a C-STORE would get.
        The patient is not checked for completeness here (an association's
        end does that for C-STOREs): call :meth:`check_ready` when done.
        """
        encoded, syntax, meta = encoded_instance(item)
        return self.ingestion.encoded(encoded, syntax, meta, Source(calling_aet, "", kind, id(item)))


    def _receive(self, state: AssociationState, encoded: BytesIO, transfer_syntax: str,
                 file_meta: FileMetaDataset) -> int | Dataset:
        return self.receiver.store(state, encoded, transfer_syntax, file_meta)

    def _association_ended(self, state: AssociationState) -> None:
        if self.store is not None and self.config.fsync == "association":
            self.store.sync(state.paths)
        self.ingestion.association_ended(state.source)
        if state.patients:
            self.check_ready(sorted(state.patients))
        self.events.association_ended(state, self.tree, self.config.stable_time)

    def check_ready(self, keys: list[str] | None = None) -> int:
        """Submit the patients (of ``keys``, or all) that are ready; return how many.

        Ready: every input holds all that will come (its ``completeness``;
        ``stable_time`` where that cannot tell) and validates. When ``keys``
        are given (an association ended, an answer came), the log says what
        holds each of them back.
        """
        waiting: dict[str, str] | None = {} if keys is not None else None
        ready = self.tree.take_ready(keys, self.config.stable_time, waiting=waiting)
        for container in ready:
            self._submit(container)
        now = time.monotonic()
        if len(self._waiting_logged) > 10_000:  # patients that expired instead of becoming jobs
            self._waiting_logged.clear()
        for key, why in (waiting or {}).items():
            # a sender that opens an association per image must not get a line per image
            if now - self._waiting_logged.get(key, -_WAITING_LOG_INTERVAL) >= _WAITING_LOG_INTERVAL:
                self._waiting_logged[key] = now
                self.logger.info("[patient %s] waiting: %s", patient_label(key), why)
        return len(ready)

    def waiting(self) -> dict[str, str]:
        """What holds each patient in the node back, in words (patient key -> "CT: 212 of 300 ...")."""
        return self.tree.waiting(self.config.stable_time)

    def _look_again(self, patient_key: str) -> None:
        """A job ended or a PACS answered: see whether the patient is ready now."""
        if self.is_open:
            self.check_ready([patient_key])

    def _listed_restore(self) -> Restore | None:
        """The restore of the stored instances, listed now, its patients held from now (None: none stored)."""
        self.tree.restoring = None  # a node opened again: the last restore's hold is over
        if self.store is None:
            return None
        from dicomnode.server.restore import Restore

        restore = Restore(self, self.store.listing())
        if not restore.total:
            return None
        self.tree.restoring = restore.holds
        return restore

    @property
    def receiving(self) -> tuple[int, int] | None:
        """With ``receiving_processes``: (processes taking associations now, processes configured); else None."""
        processes = self._processes
        if processes is None or not self.is_open:
            return None
        return processes.ready, processes.count

    @property
    def restoring(self) -> tuple[int, int] | None:
        """While the node restores its data directory: (files read, files to read); else None."""
        restore = self._restore
        if restore is None or restore.complete:
            return None
        return restore.done, restore.total

    @property
    def tree_restored(self) -> int:
        """The stored instances put back into the tree at start (so far, while the restore runs)."""
        return self._restore.restored if self._restore is not None else 0

    def wait_for_restore(self, timeout: float | None = None) -> bool:
        """Block until the stored instances are back in the tree (at once without any); False on timeout.

        The node listens while it restores (:mod:`dicomnode.server.restore`).
        """
        restore = self._restore
        return restore is None or restore.wait(timeout)

    def check_ready_after_restore(self, keys: list[str] | None = None) -> None:
        """Submit restored patients (of ``keys``, or all) that validate; the stable time has passed for them."""
        for container in self.tree.take_ready(keys, None):
            self._submit(container)

    # --- jobs -----------------------------------------------------------------------

    def _submit(self, container: PatientContainer) -> None:
        self._waiting_logged.pop(container.patient_key, None)
        self.late_jobs.taken(container)
        if self.pacs_counts is not None:
            self.pacs_counts.forget(container.studies)
        self.events.job_queued(container)
        self.runner.submit(container)

    def wait_for_jobs(self, timeout: float | None = None) -> bool:
        """Block until no association that sent images is still open and no job is queued or running.

        False on timeout. Waiting for the associations too matters: a sender's
        release returns before the node has handled it and started the job.
        The restore of the data directory is waited for first: it starts the
        restored patients that are ready when it ends. (A patient held back by
        ``stable_time`` is not a job yet.)
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.wait_for_restore(timeout):
            return False
        while self._receiving():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.runner.wait(remaining)

    def _receiving(self) -> bool:
        return self.receiver.receiving()

    @property
    def jobs_in_flight(self) -> int:
        """Jobs submitted and not finished yet (queued or running)."""
        return self.runner.in_flight

    def run_datasets(self, datasets: Sequence[Dataset], calling_aet: str = "", *,
                     skip: Sequence[str] = ()) -> JobResult:
        """Run a job on these datasets now, in this thread, without storing or quarantining.

        Used to retry a quarantine entry (``skip``: the outputs it delivered
        already). Datasets no input accepts are left out; the result says
        whether ``process`` and the outputs succeeded.
        """
        tag = self.config.patient_identifier_tag
        tree = PipelineTree(self.config.inputs, self.config.known_endpoints)
        keys = set()
        for dataset in datasets:
            key = str(dataset[tag].value).strip() if tag in dataset else ""
            if key and tree.add_image(key, dataset, None, calling_aet):
                keys.add(key)
        if len(keys) != 1:
            return JobResult(False, f"the datasets belong to {len(keys)} accepted patients, expected 1")
        container = tree.take_ready(None, None)
        if not container:
            return JobResult(False, "the patient does not validate with these datasets")
        log = job_logger("dicomnode.job", container[0].patient_key, calling_aet)
        result = self.runner.execute(container[0], new_job_id(), log, skip=skip)
        (log.info if result.ok else log.error)("retried job %s", "done" if result.ok else f"failed: {result.reason}")
        return result

    # --- operations -------------------------------------------------------------------------

    def status(self, *, limit: int = 100) -> dict[str, Any]:
        """What the node holds and does now, as ``GET /status`` of the admin endpoint answers.

        The patients held (per input the image count, and the completeness
        rule that holds each back, since when), the jobs queued and running,
        the outbox and quarantine counts; at most ``limit`` patients are listed.
        """
        return self.operations.status(limit=limit)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.ae_title} port={self.port} open={self.is_open}>"


class _Handle:
    """The :class:`~dicomnode.extension.handles.NodeHandle` an input's ``patient_started`` gets."""

    def __init__(self, node: AbstractPipeline) -> None:
        self._node = node

    @property
    def ae_title(self) -> str:
        return self._node.config.ae_title

    @property
    def known_endpoints(self) -> Mapping[str, Address]:
        return self._node.config.known_endpoints

    @property
    def logger(self) -> logging.Logger:
        return self._node.logger

    @property
    def is_open(self) -> bool:
        return self._node.is_open

    def ingest(self, item: Dataset | bytes | Path, source: Source) -> IngestResult:
        encoded, syntax, meta = encoded_instance(item)
        return self._node.ingestion.encoded(encoded, syntax, meta, source)

    def check(self, patient_key: str) -> None:
        if self._node.is_open:
            self._node.check_ready([patient_key])

    def sync(self, paths: Sequence[Path]) -> None:
        store = self._node.store
        if store is not None and self._node.config.fsync == "association":
            store.sync(list(paths))

    def holds(self, patient_key: str, owner: object) -> bool:
        try:
            container = self._node.tree[patient_key]
        except KeyError:
            return False
        return any(inp is owner for inp in container.inputs.values())


class AbstractQueuedPipeline(AbstractPipeline):
    """A pipeline whose jobs run one at a time, in the order patients became complete.

    For one GPU and one model loaded once (in ``post_init``): no two
    ``process`` calls overlap. (With ``processing_directory`` each job runs in
    its own spawned process, which loads the model again: isolation costs that.)
    """

    _executor_workers: ClassVar[int | None] = 1
    _framework_class: ClassVar[bool] = True


class AbstractThreadedPipeline(AbstractPipeline):
    """A pipeline that acknowledges every C-STORE at once and routes and stores on a background thread.

    The trade-off: the sender is not kept waiting for the disk, but it is told
    "success" before anything is checked or written — an image a filter or
    the inputs reject is dropped (with a log line) instead of refused, and a
    crash can lose images already acknowledged. Use :class:`AbstractPipeline`
    when nothing acknowledged may be lost.
    """

    _framework_class: ClassVar[bool] = True

    def _receiving_processes(self) -> ReceivingProcesses:
        raise ConfigurationError("setting 'receiving_processes' does not apply to an AbstractThreadedPipeline: it "
                                 "answers C-STOREs before storing them, the receiving processes after")

    def _start_workers(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._worker = threading.Thread(target=self._drain, name=f"{self.config.name}-store", daemon=True)
        self._worker.start()

    def _stop_workers(self) -> None:
        self._queue.put(None)
        self._worker.join()

    def _receive(self, state: AssociationState, encoded: BytesIO, transfer_syntax: str,
                 file_meta: FileMetaDataset) -> int | Dataset:
        self._queue.put(("store", state, encoded, transfer_syntax, file_meta))
        return STATUS_SUCCESS

    def _association_ended(self, state: AssociationState) -> None:
        # queued behind the association's images, so the check sees all of them
        self._queue.put(("ended", state))

    def _receiving(self) -> bool:
        return super()._receiving() or self._queue.unfinished_tasks > 0

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            try:
                if item[0] == "store":
                    _, state, encoded, syntax, meta = item
                    status = self.receiver.store(state, encoded, syntax, meta)
                    if status != STATUS_SUCCESS:
                        code = status.Status if isinstance(status, Dataset) else status
                        self.logger.warning("an acknowledged image from %s was dropped (status 0x%04X)",
                                            state.calling_aet, code)
                else:
                    AbstractPipeline._association_ended(self, item[1])
            except Exception:  # the background thread must survive anything
                self.logger.exception("storing a received image failed")
            finally:
                self._queue.task_done()
