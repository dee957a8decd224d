"""The job runner: a complete patient becomes a job — grind, process (on the executor), send, clean up.

A ready :class:`~dicomnode.server.pipeline_tree.PatientContainer` is
submitted to the runner's job threads (``processing_workers`` of them, or
as many as the executor asks for; one for a queued pipeline, so jobs run
one at a time in arrival order). Each job:

1. grinds the inputs into an :class:`~dicomnode.extension.containers.InputContainer`,
   on the node;
2. hands it to the executor (:mod:`dicomnode.extension.executors`), which
   runs ``process`` — in this thread, a spawned process or a cluster — and
   returns the outputs;
3. sends the outputs, one after the other, on the node: each gets an
   :class:`~dicomnode.extension.outputs.OutputContext` naming the job and
   the output's registered name, through which it may defer work to the
   outbox;
4. cleans up: when every output delivered, the patient's stored files are
   deleted; when an output deferred to the outbox, or anything failed, the
   files go to the quarantine with the reason, the traceback and the
   outputs that did deliver (so a retry never sends those again).

Whatever fails becomes a :class:`JobResult` with the stage, the reason and
the traceback where it happened; nothing a job does takes the node down.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from pydicom import Dataset, dcmread

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.errors import JobInterruptedError, ProcessingError
from dicomnode.extension.executors import Executor, ExecutorHost, Job, failure_of
from dicomnode.extension.outputs import OutputContext, PipelineOutput
from dicomnode.server.allocator import release_free_memory
from dicomnode.server.logs import JobLogger, job_logger

if TYPE_CHECKING:
    from dicomnode.extension.containers import InputContainer
    from dicomnode.plugins import PluginRegistry
    from dicomnode.server.config import PipelineConfig
    from dicomnode.server.events import NodeEvents
    from dicomnode.server.late import RecentJobs
    from dicomnode.server.pipeline_tree import PatientContainer
    from dicomnode.server.stores import DataDirectory

__all__ = ["JobResult", "JobRunner", "new_job_id", "output_key"]


@attrs.frozen
class JobResult:
    """How a job ended.

    ``ok``: every output delivered or deferred its work to the outbox; else
    ``stage``, ``reason`` and ``traceback`` say what failed. ``outputs_done``
    holds the keys (see :func:`output_key`) of the outputs whose work is
    done: delivered, or deferred to the outbox; ``deferred`` the outbox
    entries the outputs made.
    """

    ok: bool
    reason: str = ""
    traceback: str = ""
    stage: str = ""
    outputs_done: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    job_id: str = ""
    #: the node closed before the job finished: nothing was cleaned up, it runs again at the next start
    interrupted: bool = False

    @property
    def complete(self) -> bool:
        """True when the job is done: ok, and nothing waits in the outbox."""
        return self.ok and not self.deferred


def new_job_id() -> str:
    """A job id: when it started, and 8 random hex digits."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def output_key(index: int, name: str) -> str:
    """How a job's output is recorded: its place among ``process``'s outputs and its registered name."""
    return f"{index}:{name}"


class JobRunner:
    """Runs the jobs of one node on its job threads; see the module docstring for a job's steps.

    The job threads are daemon threads of our own, so that closing the node is
    bounded: :meth:`close` waits for running jobs at most its ``timeout``.
    With a data directory a job that did not finish by then — running, or
    still queued — loses nothing: its images stay in the data directory and
    the job runs again at the next start. Without one, queued jobs are run
    before the node closes (nothing else keeps their images).
    """

    def __init__(self, *, config: PipelineConfig, data: DataDirectory | None, executor: Executor,
                 host: ExecutorHost, registry: PluginRegistry, workers: int,
                 late_jobs: RecentJobs | None = None, events: NodeEvents | None = None) -> None:
        from dicomnode.server.events import NodeEvents

        self.events = events if events is not None else NodeEvents()
        self.config = config
        self.late_jobs = late_jobs
        self.data = data
        self.executor = executor
        self.host = host
        self.registry = registry
        self.workers = executor.concurrency or workers
        self.succeeded = 0
        self.failed = 0
        self.interrupted = 0
        self._queue: queue.Queue[PatientContainer | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._queued = 0
        self._running = 0
        self._closing = False
        self._lock = threading.Condition()
        self._output_names: dict[type, str] = {}
        self._executor_started = False

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the executor and the job threads."""
        self._start_executor()
        with self._lock:
            self._closing = False
        self._threads = [threading.Thread(target=self._work, name=f"{self.config.name}-job-{number}", daemon=True)
                         for number in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def _start_executor(self) -> None:
        with self._lock:
            if not self._executor_started:
                self.executor.start(self.host)
                self._executor_started = True

    def close(self, timeout: float) -> None:
        """Stop: let running jobs finish for up to ``timeout`` seconds, then stop the executor.

        Jobs still queued are left for the next start when there is a data
        directory, and run now when there is not.
        """
        threads, self._threads = self._threads, []
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
            keep_queued = self.data is not None
        if threads:
            if keep_queued:
                self._drop_queued()
            for _ in threads:
                self._queue.put(None)
            with self._lock:
                self._lock.wait_for(lambda: self._running == 0 and (keep_queued or self._queued == 0),
                                    None if not keep_queued else max(0.0, deadline - time.monotonic()))
                running = self._running
            if running:
                logging.getLogger("dicomnode.node").warning(
                    "%d job(s) still running after %g s of closing: stopped with the node; their images stay "
                    "in the data directory and the jobs run again at the next start", running, timeout)
            else:
                for thread in threads:  # idle: each ends at its sentinel at once
                    thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            started, self._executor_started = self._executor_started, False
        if started:
            self.executor.close(max(0.0, deadline - time.monotonic()))

    def _drop_queued(self) -> None:
        dropped = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                dropped += 1
        if dropped:
            with self._lock:
                self._queued -= dropped
                self.interrupted += dropped
                self._lock.notify_all()
            logging.getLogger("dicomnode.node").info(
                "%d queued job(s) not started: their images stay in the data directory for the next start", dropped)

    def _work(self) -> None:
        while True:
            container = self._queue.get()
            if container is None:
                return
            with self._lock:
                self._queued -= 1
                self._running += 1
            try:
                self.run(container)
            except BaseException:  # run() handles every job failure; this is a bug, logged, the thread lives on
                logging.getLogger("dicomnode.node").exception("a job thread failed")
            finally:
                # the thread waits for the next job here: it must not keep this one's images alive meanwhile
                container = None
                with self._lock:
                    self._running -= 1
                    idle = self._queued + self._running == 0
                    if not (idle and self.config.release_idle_memory):
                        self._lock.notify_all()
                if idle and self.config.release_idle_memory:
                    self._release_idle_memory()

    def _release_idle_memory(self) -> None:
        """Hand the allocator's free memory back now that no job is queued or running.

        Once the node is idle, not after every job: a backlog of jobs would
        pay for the memory again in page faults (~0.1 s for a 300-slice CT).
        Without it, glibc keeps what the jobs freed (its mmap threshold rises
        with the first large free), and a node in memory went into its next
        job with ~2x a series still mapped: a 300-slice CT's end-to-end peak
        at 5.8x the series instead of 3.7x.
        """
        try:
            release_free_memory()
        finally:
            with self._lock:
                self._lock.notify_all()

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not finished yet (queued or running)."""
        with self._lock:
            return self._queued + self._running

    def submit(self, container: PatientContainer) -> None:
        """Run the patient's job on a job thread; without threads (not started), right here."""
        if not self._threads:
            self.run(container)
            return
        with self._lock:
            self._queued += 1
        self._queue.put(container)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._queued + self._running == 0, timeout)

    # --- one job ------------------------------------------------------------------------

    def run(self, container: PatientContainer, *, skip: Collection[str] = (),
            job_id: str | None = None) -> JobResult:
        """Grind, process, send and clean up one patient's job, in this thread.

        ``skip`` holds the keys of outputs an earlier run of the job delivered
        or deferred (a quarantine retry): those outputs are not sent again.
        """
        job_id = job_id or new_job_id()
        log = job_logger("dicomnode.job", container.patient_key, container.calling_aet, job_id)
        if self.late_jobs is not None:
            self.late_jobs.started(container, job_id)
        started = time.monotonic()
        log.info("job %s started: %d image(s), %.3f s after the last", job_id, container.images,
                 started - container.last_update)
        self.events.job_started(job_id, container)
        result = self.execute(container, job_id, log, skip=skip)
        with self._lock:
            if result.interrupted:
                self.interrupted += 1
            elif result.ok:
                self.succeeded += 1
            else:
                self.failed += 1
        self.events.job_finished(container, result, time.monotonic() - started)
        if result.interrupted:
            log.warning("job %s interrupted: %s; its images stay for the next start", job_id, result.reason)
            return result
        try:
            self._clean_up(container, result, log, time.monotonic() - started)
        except Exception:  # cleaning up must not kill the job thread; the files stay for the next start
            log.exception("cleaning up after job %s failed", job_id)
        return result

    def execute(self, container: PatientContainer, job_id: str, log: JobLogger, *,
                skip: Collection[str] = ()) -> JobResult:
        """Grind, process and send; return how it went (nothing is cleaned up)."""
        started = time.monotonic()
        try:
            input_container, outputs, ground = self.prepare(container, job_id)
        except JobInterruptedError as error:
            return JobResult(False, str(error), stage="executor", job_id=job_id, interrupted=True)
        except ProcessingError as error:
            return _failed(error, job_id)
        processed = time.monotonic()
        result = self.dispatch(outputs, input_container, job_id, log, skip=skip)
        # one line per job, so operators (and benchmarks/end_to_end.py) see where the time went
        log.info("stage times: grind %.3f s, process %.3f s, outputs %.3f s", ground - started,
                 processed - ground, time.monotonic() - processed)
        self.events.job_stages(job_id, container.patient_key, ground - started, processed - ground,
                               time.monotonic() - processed)
        return result

    def prepare(self, container: PatientContainer, job_id: str) -> tuple[InputContainer, list[PipelineOutput], float]:
        """Grind the patient and run ``process`` on the executor: the input container, the outputs
        (not sent), and when grinding ended. Raises ProcessingError (or JobInterruptedError)."""
        try:
            if not self.config.lazy_storage:
                # images restored at start are read now, on the job thread: without lazy_storage a
                # job's datasets are in memory, and stay usable after its files are removed
                for dataset in container.job_datasets():
                    if isinstance(dataset, LazyDataset):
                        dataset.load()
            input_container = container.get_input_container()
        except Exception as error:
            raise failure_of("grinding", error) from error
        ground = time.monotonic()
        job = Job(job_id, container.patient_key, input_container, identity=self.host.identity)
        try:
            self._start_executor()  # a job run without the job threads (a quarantine retry) starts it here
            return input_container, self.executor.run(job), ground
        except (JobInterruptedError, ProcessingError):
            raise
        except Exception as error:  # an executor's own failure (a lost cluster, …)
            raise failure_of(f"the executor {self.executor.name or type(self.executor).__name__}",
                             error) from error

    def output_name(self, output: PipelineOutput) -> str:
        """The name the output's class is registered under, else its class name."""
        cls = type(output)
        name = self._output_names.get(cls)
        if name is None:
            name = self.registry.name_of("output", cls) or cls.__name__
            self._output_names[cls] = name
        return name

    def dispatch(self, outputs: Sequence[PipelineOutput], input_container: InputContainer, job_id: str,
                 log: JobLogger, *, skip: Collection[str] = ()) -> JobResult:
        """Send each output in turn; the first failure stops the rest (they are sent on a retry)."""
        done: list[str] = []
        deferred: list[str] = []
        for index, output in enumerate(outputs):
            name = self.output_name(output)
            key = output_key(index, name)
            if key in skip:
                log.info("output %s was done by an earlier run of the job: not sent again", key)
                done.append(key)
                continue
            made: list[str] = []
            try:
                output.bind(self._context(input_container, job_id, name, log, made))
                invalid = self._invalid(output)
                if invalid is not None:
                    return _failed(ProcessingError(f"output {name}: {invalid}", stage="validation"),
                                   job_id, done, deferred)
                ok = output.send()
            except Exception as error:  # an output may fail in any way; the job fails, the node goes on
                return _failed(failure_of(f"output {name}.send()", error), job_id, done, deferred + made)
            deferred += made
            if not ok:
                return _failed(ProcessingError(f"output {name}.send() reported failure", stage="outputs"),
                               job_id, done, deferred)
            done.append(key)
            self.events.output_done(job_id, input_container.patient_key, key, output, made)
            if made:
                log.warning("output %s deferred its work to the outbox: %s", key, ", ".join(made))
            else:
                log.info("output %s delivered", key)
        return JobResult(True, outputs_done=tuple(done), deferred=tuple(deferred), job_id=job_id)

    def load(self) -> tuple[int, int]:
        """The jobs queued and the jobs running, now."""
        with self._lock:
            return self._queued, self._running

    def _invalid(self, output: PipelineOutput) -> str | None:
        """Why the output's datasets must not leave the node (``validate_outputs``), or None.

        ``"auto"``: dciodvfy (when installed) checks the first instance of
        each series and the structural checks every other one, so a 300-slice
        series costs one dciodvfy run; ``"dciodvfy"`` and ``"structural"``
        check every instance with that validator.
        """
        mode = self.config.validate_outputs
        if mode == "off":
            return None
        from dicomnode.dicom.validation import validate

        datasets = [item if isinstance(item, Dataset) else dcmread(item) for item in output.outgoing_datasets()]
        seen_series: set[str] = set()
        bad = []
        for dataset in datasets:
            validator = mode
            if mode == "auto":
                series = str(dataset.get("SeriesInstanceUID", ""))
                validator = "auto" if series not in seen_series else "structural"
                seen_series.add(series)
            report = validate(dataset, validator=validator)
            if not report.ok:
                bad.append(report)
        if not bad:
            return None
        details = "\n".join(report.describe() for report in bad[:5])
        more = f"\n(and {len(bad) - 5} more)" if len(bad) > 5 else ""
        return (f"{len(bad)} of {len(datasets)} object(s) failed validation ({mode}); nothing was sent:\n"
                f"{details}{more}")

    def _context(self, input_container: InputContainer, job_id: str, name: str, log: JobLogger,
                 made: list[str]) -> OutputContext:
        data = self.data
        outbox: Callable[[str, Mapping[str, Any], Sequence[Dataset], str], str] | None = None
        if data is not None:
            def outbox(output: str, settings: Mapping[str, Any], datasets: Sequence[Dataset], reason: str) -> str:
                entry = data.defer(output, settings, datasets, reason, patient_key=input_container.patient_key,
                                   job_id=job_id)
                made.append(entry)
                return entry

        config = self.config
        return OutputContext(
            pipeline_name=config.name, ae_title=config.ae_title, data_directory=config.data_directory,
            patient_key=input_container.patient_key, known_endpoints=config.known_endpoints, logger=log,
            responding_address=input_container.responding_address, output_name=name, job_id=job_id,
            outbox=outbox,
        )

    def _clean_up(self, container: PatientContainer, result: JobResult, log: JobLogger, elapsed: float) -> None:
        try:
            self._keep_or_quarantine(container, result, log, elapsed)
        finally:
            if self.late_jobs is not None and not result.complete:
                self.late_jobs.finished(container, False, _keep)

    def _keep_or_quarantine(self, container: PatientContainer, result: JobResult, log: JobLogger,
                            elapsed: float) -> None:
        data = self.data
        if result.complete:
            remove = data.store.remove if data is not None else _keep
            if self.late_jobs is not None:
                self.late_jobs.finished(container, True, remove)  # it keeps them with late_images 'rerun'
            else:
                remove(container.paths)
            log.info("job %s done in %.2f s", result.job_id, elapsed)
            return
        if result.ok:
            log.warning("job %s done in %.2f s; %d outbox entr%s still to deliver", result.job_id, elapsed,
                        len(result.deferred), "y" if len(result.deferred) == 1 else "ies")
        else:
            # the traceback goes to the log whatever else keeps it: the operator reads the log first
            log.error("job %s failed after %.2f s: %s\n%s", result.job_id, elapsed, result.reason,
                      result.traceback.rstrip() or "(no traceback)")
        if data is None:
            if not result.ok:
                log.error("no data_directory: the patient's %d image(s) are dropped", container.images)
            return
        options: dict[str, Any] = {
            "reason": result.reason or "waiting for the outbox", "traceback": result.traceback,
            "calling_aet": container.calling_aet, "job_id": result.job_id, "outputs_done": result.outputs_done,
            "pending_outbox": result.deferred, "failed": not result.ok,
        }
        try:
            if container.paths:
                data.quarantine.put(container.patient_key, paths=container.paths, **options)
            else:
                data.quarantine.put(container.patient_key, datasets=container.datasets(), **options)
        except Exception:  # the quarantine itself failing must not stop the job thread
            log.exception("cannot quarantine the patient's data")


def _keep(_paths: list[Any]) -> None:
    """No file to delete (no data directory, or the files went to the quarantine)."""


def _failed(error: ProcessingError, job_id: str, done: Sequence[str] = (),
            deferred: Sequence[str] = ()) -> JobResult:
    return JobResult(False, error.reason, error.traceback, error.stage, tuple(done), tuple(deferred), job_id)
