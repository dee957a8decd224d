"""Running a patient's job: grind, process, dispatch the outputs — away from the network threads.

A ready :class:`~dicomnode.server.pipeline_tree.PatientContainer` is
submitted to the pipeline's executor, a thread pool (``processing_workers``
threads; one thread for :class:`~dicomnode.server.nodes.AbstractQueuedPipeline`,
so jobs run one at a time in arrival order). The worker grinds the inputs,
then runs ``process`` and sends the outputs:

* in the worker thread itself, or
* with ``processing_directory`` set, in a freshly *spawned* process whose
  working directory is ``processing_directory/<job id>``, so a model that
  crashes (segfault, out of memory) cannot take the server down. The
  pipeline class must be importable by its module name for that (define it
  at the top level of a module); the spawned process creates the pipeline
  from the same configuration (so ``post_init`` runs there too) and sends
  the outputs itself.

Whatever fails — a grinder, ``process``, an output's ``send`` returning False
or raising, the spawned process dying — becomes a :class:`JobResult` with a
reason and traceback; the pipeline then quarantines the patient's data.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import traceback
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from dicomnode.extension.outputs import OutputContext, PipelineOutput

if TYPE_CHECKING:
    from dicomnode.extension.containers import InputContainer
    from dicomnode.server.config import PipelineConfig
    from dicomnode.server.logs import JobLogger
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["JobResult", "dispatch_outputs", "failure", "run_in_spawned_process"]


@attrs.frozen
class JobResult:
    """How a job ended: ``ok``, else the reason and the traceback."""

    ok: bool
    reason: str = ""
    traceback: str = ""


def failure(stage: str, error: BaseException) -> JobResult:
    """A failed :class:`JobResult` for an exception raised at ``stage``."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return JobResult(False, f"{stage} raised {type(error).__name__}: {error}", text)


def _as_outputs(result: Any) -> list[PipelineOutput]:
    if result is None:
        raise TypeError("process() returned None; return a PipelineOutput (NoOutput() to send nothing)")
    items = list(result) if isinstance(result, Sequence) and not isinstance(result, (str, bytes)) else [result]
    for item in items:
        if not isinstance(item, PipelineOutput):
            raise TypeError(f"process() must return PipelineOutput(s), got {type(item).__name__}: {item!r}")
    return items


def dispatch_outputs(pipeline: AbstractPipeline, result: Any, input_container: InputContainer,
                     log: JobLogger) -> JobResult:
    """Bind a context to each output ``process`` returned and send it; the first failure ends it."""
    try:
        outputs = _as_outputs(result)
    except TypeError as error:
        return failure("process", error)
    config = pipeline.config
    context = OutputContext(
        pipeline_name=config.name, ae_title=config.ae_title, data_directory=config.data_directory,
        outbox=pipeline.outbox, patient_key=input_container.patient_key,
        known_endpoints=config.known_endpoints, logger=log,
        responding_address=input_container.responding_address,
    )
    for output in outputs:
        name = type(output).__name__
        try:
            output.bind(context)
            delivered = output.send()
        except Exception as error:  # an output may fail in any way; the job fails, the server goes on
            return failure(f"output {name}.send()", error)
        if not delivered:
            return JobResult(False, f"output {name}.send() reported failure")
        log.info("output %s delivered", name)
    return JobResult(True)


def _child_main(pipeline_class: type[AbstractPipeline], config: PipelineConfig,
                input_container: InputContainer, directory: str, connection: Any) -> None:
    """Entry of the spawned process: build the pipeline, process, send the outputs, report."""
    from dicomnode.server.logs import configure_logging, job_logger

    os.chdir(directory)
    configure_logging(config.log_level, config.log_format, None)
    try:
        pipeline = pipeline_class(config=config)
        log = job_logger("dicomnode.job", input_container.patient_key, input_container.calling_aet)
        log.info("processing in process %d (%s)", os.getpid(), directory)
        try:
            result = pipeline.process(input_container)
        except Exception as error:
            outcome = failure("process", error)
        else:
            outcome = dispatch_outputs(pipeline, result, input_container, log)
    except Exception as error:
        outcome = failure("the pipeline in the processing process", error)
    connection.send(outcome)
    connection.close()


def run_in_spawned_process(pipeline: AbstractPipeline, input_container: InputContainer,
                           log: JobLogger) -> JobResult:
    """Run ``process`` and the outputs in a new spawned process in ``processing_directory/<job>``."""
    config = pipeline.config
    assert config.processing_directory is not None
    directory = Path(config.processing_directory) / f"job-{uuid.uuid4().hex[:12]}"
    directory.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main, name=f"dicomnode-job-{input_container.patient_key}",
        args=(type(pipeline), config, input_container, str(directory), sender),
    )
    try:
        child.start()
    except Exception as error:  # e.g. the pipeline class or the data cannot be pickled
        shutil.rmtree(directory, ignore_errors=True)
        return failure("starting the processing process", error)
    sender.close()
    outcome: JobResult | None = None
    try:
        outcome = receiver.recv()
    except EOFError:
        outcome = None  # the child died before it could report
    child.join()
    receiver.close()
    if outcome is None:
        outcome = JobResult(False, f"the processing process {child.pid} exited with code {child.exitcode} "
                                   "without a result")
    log.info("processing process %s exited with code %s", child.pid, child.exitcode)
    if outcome.ok:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        outcome = attrs.evolve(outcome, reason=f"{outcome.reason} (its work folder is kept: {directory})")
    return outcome
