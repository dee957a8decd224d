"""An executor, imported only when a pipeline chooses it: runs each job in this process and counts it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dicomnode.extension.executors import Executor, Job, as_outputs, failure_of
from dicomnode.extension.outputs import PipelineOutput


class CountingExecutor(Executor):
    """Runs ``process`` in the calling thread and counts the jobs; ``label`` names it in the log."""

    jobs: list[str] = []

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.reject_unknown(settings, ("label",))
        self.label = self.take(settings, "label", str, "counting")

    @property
    def concurrency(self) -> int | None:
        return 1

    def run(self, job: Job) -> list[PipelineOutput]:
        CountingExecutor.jobs.append(f"{self.label}:{job.patient_key}")
        try:
            return as_outputs(self.host.process(job.input_container))
        except Exception as error:
            raise failure_of("process", error) from error
