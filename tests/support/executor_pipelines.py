"""Pipelines the executor tests run in another process.

They live here, on the path ``tests/conftest.py`` puts on ``sys.path``, so a
spawned process imports them by name: a class in a test module is named
after pytest's import mode (``tests.core.test_executors`` under
``--import-mode=importlib``), which a fresh interpreter started by the
``pytest`` script cannot import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.server.nodes import AbstractPipeline


class Two(AbstractInput):
    def validate(self) -> bool:
        return self.images >= 2


class SetsUp(AbstractPipeline):
    """Counts setup_worker calls in the process it runs in."""

    ae_title = "EXECNODE"
    input = {"all": Two}
    maintenance_thread = False
    set_up: list[int] = []

    def setup_worker(self) -> None:
        SetsUp.set_up.append(os.getpid())

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        assert os.getpid() in SetsUp.set_up, "process ran before setup_worker in this process"
        return NoOutput()
