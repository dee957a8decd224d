"""The core's two executors: ``threads`` (the default) and ``process``.

``threads`` runs ``process`` in the node's own job threads: nothing is
copied, a model loaded in ``post_init`` is shared by every job, and a crash
of the model (a segmentation fault, the kernel's out-of-memory killer) takes
the node down with it.

``process`` runs each job in a freshly *spawned* process whose working
directory is ``directory/job-<id>`` (``executor_settings = {directory =
"work"}``). A model that crashes there fails only its job. The pipeline must
be importable by another process (a class at the top level of a module, or a
TOML file); the new process builds it from the same configuration, so its
``post_init`` runs once per job. The outputs come back to the node, which
sends them. A failed job's work folder is kept and named in the reason.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomnode.errors import ConfigurationError, ProcessingError
from dicomnode.extension.executors import Executor, Job, PipelineIdentity, as_outputs, failure_of
from dicomnode.extension.outputs import PipelineOutput

if TYPE_CHECKING:
    from dicomnode.extension.containers import InputContainer

__all__ = ["ProcessExecutor", "ThreadsExecutor"]


class ThreadsExecutor(Executor):
    """``process`` in the node's job threads (``processing_workers`` at once). Takes no settings."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.reject_unknown(settings, ())

    def start(self, host: Any) -> None:
        """Set the live pipeline up to run jobs here (its ``setup_worker``)."""
        super().start(host)
        host.setup_worker()

    def run(self, job: Job) -> list[PipelineOutput]:
        """Call the live pipeline's ``process`` in this thread."""
        try:
            return as_outputs(self.host.process(job.input_container))
        except ProcessingError:
            raise
        except Exception as error:
            raise failure_of("process", error) from error


def _child_main(identity: PipelineIdentity, input_container: InputContainer, directory: str,
                connection: Any) -> None:
    """Entry of the spawned process: build the pipeline, process, send the outputs back."""
    from dicomnode.server.logs import configure_logging, job_logger

    os.chdir(directory)
    config = identity.config
    configure_logging(config.log_level, config.log_format, None)
    log = job_logger("dicomnode.job", input_container.patient_key, input_container.calling_aet)
    outcome: list[PipelineOutput] | ProcessingError
    try:
        pipeline = identity.load()
        pipeline.setup_worker()
        log.info("processing in process %d (%s)", os.getpid(), directory)
        outcome = as_outputs(pipeline.process(input_container))
    except ProcessingError as error:
        outcome = error
    except Exception as error:
        outcome = failure_of("process", error)
    try:
        connection.send(outcome)
    except Exception as error:  # the outputs could not be pickled: say so instead of dying silently
        connection.send(failure_of("sending the outputs back from the processing process", error))
    connection.close()


class ProcessExecutor(Executor):
    """Each job in a new spawned process, in ``directory/job-<id>``.

    Settings: ``directory`` (required): the folder the work folders are made in.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.reject_unknown(settings, ("directory",))
        directory = self.take(settings, "directory", (str, Path), "", check=lambda value: bool(str(value)),
                              allowed="a folder path")
        if not directory:
            raise ConfigurationError("the executor 'process' needs executor_settings {directory = \"...\"}: the "
                                     "folder its jobs' work folders are made in")
        self.directory = Path(directory)

    def start(self, host: Any) -> None:
        """Check, before the first job, that another process can build the pipeline."""
        super().start(host)
        host.identity()  # raises ConfigurationError now rather than at the first patient

    def run(self, job: Job) -> list[PipelineOutput]:
        """Spawn a process for the job, wait for its outputs (or its failure)."""
        try:
            identity = job.identity()
        except ConfigurationError as error:
            raise ProcessingError(str(error), stage="executor") from error
        directory = self.directory / f"job-{job.id}"
        directory.mkdir(parents=True)
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_child_main, name=f"dicomnode-job-{job.id}",
                                args=(identity, job.input_container, str(directory), sender))
        try:
            child.start()
        except Exception as error:  # e.g. the input container cannot be pickled
            shutil.rmtree(directory, ignore_errors=True)
            raise failure_of("starting the processing process", error) from error
        finally:
            sender.close()
        outcome: list[PipelineOutput] | ProcessingError | None
        try:
            outcome = receiver.recv()
        except EOFError:
            outcome = None  # the child died before it could report
        child.join()
        receiver.close()
        self.host.logger.info("processing process %s exited with code %s", child.pid, child.exitcode)
        if outcome is None:
            outcome = ProcessingError(f"the processing process {child.pid} exited with code {child.exitcode} "
                                      "without a result", stage="process")
        if isinstance(outcome, ProcessingError):
            outcome.reason = f"{outcome.reason} (its work folder is kept: {directory})"
            outcome.args = (outcome.reason,)
            raise outcome
        shutil.rmtree(directory, ignore_errors=True)
        return outcome
