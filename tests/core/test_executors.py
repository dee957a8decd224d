"""Executors: chosen by name from the registry, configured by executor_settings, given the ground inputs.

The node grinds, the executor runs ``process`` and returns the outputs, and
the node sends them; these tests run jobs in the calling thread
(``run_datasets``) so they need no network.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import pytest
from executor_pipelines import SetsUp

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError, ProcessingError
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.executors import PipelineIdentity
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.plugins import get_registry
from dicomnode.server.nodes import AbstractPipeline


class Two(AbstractInput):
    def validate(self) -> bool:
        return self.images >= 2


class Counting(AbstractPipeline):
    """Module level, so another process can import it by name."""

    ae_title = "EXECNODE"
    input = {"all": Two}
    maintenance_thread = False

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        return NoOutput()


def _series(patient: str = "P1") -> list:  # type: ignore[type-arg]
    return synthetic_series(patient_id=patient, slices=2, rows=4, columns=4)


def test_the_core_registers_its_two_executors() -> None:
    executors = get_registry().contributions("executor")
    assert {"threads", "process"} <= set(executors)
    assert executors["threads"].distribution == "dicomnode"


def test_threads_is_the_default_executor() -> None:
    node = Counting()
    assert node.config.executor == "threads"
    assert node.runner.executor.name == "threads"
    assert node.run_datasets(_series()).ok


def test_a_third_party_executor_runs_the_jobs_with_its_settings() -> None:
    from dicomnode_example.executors import CountingExecutor

    CountingExecutor.jobs.clear()
    node = Counting(executor="example-counting", executor_settings={"label": "mine"})
    result = node.run_datasets(_series("P7"))
    assert result.ok, result.reason
    assert CountingExecutor.jobs == ["mine:P7"]
    assert node.runner.workers == 1  # the executor's own concurrency wins over processing_workers


def test_an_unknown_executor_names_the_ones_there_are() -> None:
    with pytest.raises(ConfigurationError, match=r"setting 'executor' = 'gpu-farm'.*available: .*process.*threads"):
        Counting(executor="gpu-farm")


def test_an_executor_refuses_settings_it_does_not_know() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown setting\(s\) \['lable'\]; known: label"):
        Counting(executor="example-counting", executor_settings={"lable": "x"})


def test_the_process_executor_needs_its_directory() -> None:
    with pytest.raises(ConfigurationError, match=r"executor 'process' needs executor_settings \{directory"):
        Counting(executor="process")


def test_a_pipeline_defined_in_a_function_has_no_identity_for_another_process(tmp_path: Path) -> None:
    class Local(Counting):
        pass

    with pytest.raises(ConfigurationError, match="cannot be imported by another process"):
        Local().identity()
    node = Local(executor="process", executor_settings={"directory": str(tmp_path)})
    result = node.run_datasets(_series())
    assert not result.ok and "cannot be imported by another process" in result.reason


def test_the_identity_of_a_module_level_pipeline_builds_it_again() -> None:
    node = Counting(port=0)
    identity = pickle.loads(pickle.dumps(node.identity()))
    assert isinstance(identity, PipelineIdentity)
    assert identity.target == f"{__name__}:Counting"
    again = identity.load()
    assert isinstance(again, Counting) and again.config == node.config


def test_a_failure_keeps_its_reason_and_traceback_across_pickling() -> None:
    error = ProcessingError("process raised ValueError: no", stage="process", traceback="Traceback ...")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.stage, copy.traceback) == (error.reason, error.stage, error.traceback)


def test_process_returning_a_dataset_names_the_type_and_never_the_contents() -> None:
    class ReturnsDataset(Counting):
        def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
            return input_container.datasets["all"][0]  # type: ignore[return-value]

    series = _series("SECRET")
    for dataset in series:
        dataset.PatientName = "Doe^Jane"
    result = ReturnsDataset().run_datasets(series)
    assert not result.ok
    assert result.reason == "process() must return PipelineOutput(s), got Dataset"
    assert "Doe^Jane" not in result.reason + result.traceback


def test_the_threads_executor_sets_the_pipeline_up_once_before_its_jobs() -> None:
    import os

    SetsUp.set_up.clear()
    node = SetsUp()
    assert node.run_datasets(_series("A")).ok and node.run_datasets(_series("B")).ok
    assert SetsUp.set_up == [os.getpid()]


def test_the_process_executor_sets_up_each_job_process(tmp_path: Path) -> None:
    SetsUp.set_up.clear()
    node = SetsUp(executor="process", executor_settings={"directory": str(tmp_path)})
    result = node.run_datasets(_series("A"))
    assert result.ok, result.reason + result.traceback
    assert SetsUp.set_up == []  # the node itself never set up: process ran elsewhere


class Slow(Counting):
    """Each job takes ``seconds``; records the patients it finished."""

    seconds = 0.0
    finished: list[str] = []

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        import time

        time.sleep(type(self).seconds)
        Slow.finished.append(input_container.patient_key)
        return NoOutput()


def _queue_jobs(node: AbstractPipeline, patients: Sequence[str]) -> None:
    assert node.store is not None
    for patient in patients:
        for image in _series(patient):
            node.tree.add_image(patient, image, node.store.write_dataset(patient, image), "SCANNER")
    assert node.check_ready() == len(patients)


def test_closing_is_bounded_and_unfinished_jobs_wait_on_disk_for_the_next_start(tmp_path: Path) -> None:
    import time

    class QuickToClose(Slow):
        close_timeout = 0.5

    Slow.seconds, Slow.finished = 3.0, []
    node = QuickToClose(data_directory=tmp_path / "data", processing_workers=1, port=0, ip="127.0.0.1")
    node.open(blocking=False)
    _queue_jobs(node, ["RUNNING", "QUEUED"])
    time.sleep(0.3)  # the first job is running, the second waits for the only job thread
    started = time.monotonic()
    node.close()
    assert time.monotonic() - started < 2.5
    assert Slow.finished == []
    assert node.runner.interrupted == 1 and node.jobs_failed == 0
    assert node.quarantine is not None and node.quarantine.list() == []

    Slow.seconds = 0.0
    with Slow(data_directory=tmp_path / "data", port=0, ip="127.0.0.1") as again:
        assert again.wait_for_jobs(20)
    assert sorted(Slow.finished) == ["QUEUED", "RUNNING"]  # both jobs ran after the restart
