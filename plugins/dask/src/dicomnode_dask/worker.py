"""What runs on a Dask worker: the pipeline, built and set up once per worker process, and a job's ``process``.

A worker keeps the pipelines it has built, one per identity (its import
path and configuration), for as long as the worker process lives: the
model that ``setup_worker()`` loads is loaded once per worker process, not
once per job. A worker that the nanny restarts (after a crash, or after the
scheduler came back) builds it again on its first job.

Every failure leaves the worker as a :class:`~dicomnode.errors.ProcessingError`
that carries the traceback as text, formatted here, where it happened: the
node quarantines the job with it as it would a local failure.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from dicomnode.errors import ProcessingError
from dicomnode.extension.executors import PipelineIdentity, Processor, as_outputs, failure_of
from dicomnode_dask.shared import Parcel, run_on

if TYPE_CHECKING:
    from dicomnode.extension.containers import InputContainer
    from dicomnode.extension.outputs import PipelineOutput

__all__ = ["pipeline_for", "run_job"]

_pipelines: dict[str, Processor] = {}
#: held while a pipeline is built and set up, so that two jobs arriving at once set it up once
_building = threading.Lock()


def pipeline_for(identity: PipelineIdentity, fingerprint: str) -> Processor:
    """This worker process's copy of the pipeline: built and set up on first use, then kept."""
    with _building:
        pipeline = _pipelines.get(fingerprint)
        if pipeline is None:
            pipeline = identity.load()
            pipeline.setup_worker()
            _pipelines[fingerprint] = pipeline
        return pipeline


def _worker_address() -> str:
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:  # not inside a worker task (called directly, in a test)
        return "(no worker)"


def _on_worker(error: ProcessingError, address: str) -> ProcessingError:
    return ProcessingError(f"{error.reason} (on the Dask worker {address})", stage=error.stage,
                           traceback=error.traceback)


def run_job(identity: PipelineIdentity, fingerprint: str,
            input_container: InputContainer | Parcel) -> list[PipelineOutput]:
    """The task a job becomes: ``process`` of this worker's pipeline; its outputs go back to the node.

    A :class:`~dicomnode_dask.shared.Parcel` is opened from the node's shared
    memory first, and its mapping closed before the task returns.
    """
    address = _worker_address()
    try:
        pipeline = pipeline_for(identity, fingerprint)
    except Exception as error:  # an import error, post_init or setup_worker failing: the job fails, the worker lives
        raise _on_worker(failure_of("setting the pipeline up on a worker", error), address) from None
    if not isinstance(input_container, Parcel):
        return _process(pipeline, input_container, address)
    return run_on(input_container, address, lambda container: _process(pipeline, container, address))


def _process(pipeline: Processor, input_container: InputContainer, address: str) -> list[PipelineOutput]:
    try:
        return as_outputs(pipeline.process(input_container))
    except ProcessingError as error:
        failure = _on_worker(error, address)
    except Exception as error:
        failure = _on_worker(failure_of("process", error), address)
    # raised outside the except: the traceback of process() (whose frames hold the inputs, which may view
    # the node's shared memory) is text in the failure, not frames kept alive with it
    raise failure
