"""What process returns: outputs bound to their context and sent; a failed output quarantines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, OutputContext, PipelineOutput
from dicomnode.server.nodes import AbstractPipeline


class Anything(AbstractInput):
    def validate(self) -> bool:
        return self.images >= 2


class Remember(PipelineOutput):
    sent: list[OutputContext] = []

    def __init__(self, result: bool = True) -> None:
        self.result = result

    def send(self) -> bool:
        assert self.context is not None
        Remember.sent.append(self.context)
        return self.result


class Explodes(PipelineOutput):
    def send(self) -> bool:
        raise ConnectionError("PACS unreachable")


class Returns(AbstractPipeline):
    ae_title = "OUTNODE"
    input = {"all": Anything}
    answer: object = NoOutput()

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        return type(self).answer  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _clear() -> None:
    Remember.sent.clear()


def _run(pipeline: AbstractPipeline, patient: str = "P1") -> object:
    return pipeline.run_datasets(synthetic_series(patient_id=patient, slices=2, rows=4, columns=4), "SCANNER")


def test_a_list_of_outputs_is_sent_in_order_with_the_jobs_context(tmp_path: Path) -> None:
    class Two(Returns):
        answer = [Remember(), Remember()]

    result = _run(Two(data_directory=tmp_path))
    assert result.ok  # type: ignore[attr-defined]
    assert len(Remember.sent) == 2
    context = Remember.sent[0]
    assert (context.pipeline_name, context.ae_title, context.patient_key) == ("Two", "OUTNODE", "P1")
    assert context.can_defer and context.output_name == "Remember" and context.job_id
    assert Remember.sent[1].job_id == context.job_id
    assert context.logger.extra == {"patient_key": "P1", "calling_aet": "SCANNER"}  # type: ignore[union-attr]


def test_an_output_reporting_failure_fails_the_job_and_stops_the_rest() -> None:
    class Failing(Returns):
        answer = [Remember(result=False), Remember()]

    result = _run(Failing())
    assert not result.ok and "Remember.send() reported failure" in result.reason  # type: ignore[attr-defined]
    assert len(Remember.sent) == 1


def test_an_output_raising_fails_the_job_with_the_traceback() -> None:
    class Raising(Returns):
        answer = Explodes()

    result = _run(Raising())
    assert "Explodes.send() raised ConnectionError: PACS unreachable" in result.reason  # type: ignore[attr-defined]
    assert "ConnectionError" in result.traceback  # type: ignore[attr-defined]


@pytest.mark.parametrize("answer", [None, "done", [NoOutput(), 3]])
def test_process_must_return_outputs(answer: object) -> None:
    class Wrong(Returns):
        pass

    Wrong.answer = answer
    result = _run(Wrong())
    assert not result.ok and "process" in result.reason  # type: ignore[attr-defined]


def test_a_failed_output_moves_the_patients_files_to_quarantine(tmp_path: Path) -> None:
    class Failing(Returns):
        answer = Remember(result=False)

    pipeline = Failing(data_directory=tmp_path)
    assert pipeline.store is not None and pipeline.quarantine is not None
    for image in synthetic_series(patient_id="P1", slices=2, rows=4, columns=4):
        pipeline.tree.add_image("P1", image, pipeline.store.write_dataset("P1", image), "SCANNER")
    assert pipeline.check_ready() == 1  # not open: the job runs in this thread
    entry = pipeline.quarantine.list()[0]
    assert (entry.patient_key, entry.calling_aet, len(entry.paths)) == ("P1", "SCANNER", 2)
    assert list(pipeline.store.files()) == []


class Carries(PipelineOutput):
    """Sends its datasets nowhere, but says what they are, so the node can check them first."""

    def __init__(self, datasets: list) -> None:  # type: ignore[type-arg]
        self.datasets = datasets
        self.sent = False

    def outgoing_datasets(self) -> list:  # type: ignore[type-arg]
        return self.datasets

    def send(self) -> bool:
        self.sent = True
        Remember.sent.append(self.context)  # type: ignore[arg-type]
        return True


def test_with_validate_outputs_an_invalid_object_is_not_sent_and_the_job_is_quarantined(tmp_path: Path) -> None:
    broken = synthetic_series(patient_id="P1", slices=1, rows=4, columns=4)[0]
    del broken.Modality  # a type 1 attribute of the general series module
    broken.PatientName = "Doe^Jane"

    class Checked(Returns):
        answer = Carries([broken])

    pipeline = Checked(data_directory=tmp_path, validate_outputs="structural")
    assert pipeline.store is not None and pipeline.quarantine is not None
    for image in synthetic_series(patient_id="P1", slices=2, rows=4, columns=4):
        pipeline.tree.add_image("P1", image, pipeline.store.write_dataset("P1", image), "SCANNER")
    assert pipeline.check_ready() == 1

    assert Remember.sent == []  # nothing left the node
    (entry,) = pipeline.quarantine.list()
    assert "failed validation (structural); nothing was sent" in entry.reason and "Modality" in entry.reason
    assert "Doe^Jane" not in entry.reason


def test_valid_objects_pass_the_check_and_are_sent() -> None:
    class Checked(Returns):
        answer = Carries(synthetic_series(patient_id="P1", slices=2, rows=4, columns=4))

    result = _run(Checked(validate_outputs="structural"))
    assert result.ok, result.reason  # type: ignore[attr-defined]
    assert len(Remember.sent) == 1
