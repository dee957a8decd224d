"""dicomnode.testing: replay tells what a pipeline would deliver, and why a job failed or an image was not taken."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.server.nodes import AbstractPipeline
from dicomnode.testing import replay


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    minimum_images = 2


class Fails(AbstractPipeline):
    input = {"CT": CT}

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        raise RuntimeError("the model is not loaded")


class Works(AbstractPipeline):
    input = {"CT": CT}

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        return NoOutput()


def test_a_failing_job_says_why_with_its_traceback(tmp_path: Path) -> None:
    write_series(synthetic_series(patient_id="P1", slices=2, rows=8, columns=8), tmp_path / "in")
    (job,) = replay(Fails, tmp_path / "in").jobs
    assert job.input_container is None and "the model is not loaded" in job.error and "Traceback" in job.error


def test_images_no_input_takes_are_listed_with_the_status_a_sender_would_get(tmp_path: Path) -> None:
    write_series(synthetic_series(patient_id="P1", slices=2, rows=8, columns=8), tmp_path / "in")
    mr = synthetic_series(patient_id="P1", slices=1, rows=8, columns=8)
    mr[0].Modality = "MR"
    write_series(mr, tmp_path / "in" / "mr")
    result = replay(Works, tmp_path / "in")
    assert [job.patient_key for job in result.jobs] == ["P1"]
    ((path, discarded),) = result.not_taken  # rejection_policy "discard", the default: acknowledged, not stored
    assert path.parent.name == "mr" and discarded.status == 0x0000 and not discarded.stored
    ((path, refused),) = replay(Works, tmp_path / "in", rejection_policy="failure").not_taken
    assert path.parent.name == "mr" and refused.status == 0xC004 and "Modality" in refused.comment


def test_replay_writes_nothing_even_for_a_pipeline_with_a_data_directory(tmp_path: Path) -> None:
    class Durable(Works):
        data_directory = str(tmp_path / "data")

    write_series(synthetic_series(patient_id="P1", slices=2, rows=8, columns=8), tmp_path / "in")
    assert len(replay(Durable, tmp_path / "in").jobs) == 1
    assert not (tmp_path / "data").exists()
