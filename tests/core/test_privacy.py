"""No log line and no error message carries a patient's name or birth date, whatever fails.

One node meets every failure it can meet — ``process`` returning a dataset
or a list of datasets, raising, an output raising or reporting failure, a
grinder raising, a filter raising, images no input accepts (one input's rule
is about the patient's name), a missing patient ID, a truncated dataset, an
invalid result caught by validation, a quarantine retry failing again, an
expiry, patients left incomplete at close — and then every log line (the
node's file, at DEBUG, and every record the loggers emitted), every C-STORE
error comment, every quarantine record, the history, the status JSON and
the status page are searched for the names and the birth date. The patient
key (PatientID) is allowed: it is how operators find a patient.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from dicomnode.dicom.encoded import encoded_instance
from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.handles import Source
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.net import send_datasets
from dicomnode.server.maintenance import MaintenanceThread
from dicomnode.server.nodes import AbstractPipeline

FAMILY, GIVEN, BIRTH = "Zyxwvutsky", "Quintessa", "19470312"
SECRETS = (FAMILY, GIVEN, BIRTH, "1947-03-12", FAMILY.upper(), GIVEN.upper())


def _series(patient_id: str, slices: int = 2, modality: str = "CT") -> list[Dataset]:
    series = synthetic_series(patient_id=patient_id, patient_name=f"{FAMILY}^{GIVEN}", slices=slices, rows=8,
                              columns=8, modality=modality)
    for dataset in series:
        dataset.PatientBirthDate = BIRTH
    return series


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    minimum_images = 2


class NamedPrior(AbstractInput):
    """An input whose rule is about the patient's name: its refusal must not print the name."""

    required_values = {"Modality": "MR", "PatientName": "Nobody^Else"}

    def validate(self) -> bool:
        return True


class GrindsBadly(AbstractInput):
    required_values = {"Modality": "CT", "PatientID": "GRIND"}
    minimum_images = 2

    @staticmethod
    def image_grinder(datasets: list[Dataset]) -> object:
        raise ValueError("this grinder cannot handle the series")


class Explodes(PipelineOutput):
    def send(self) -> bool:
        raise ConnectionError("the PACS hung up")


class Refuses(PipelineOutput):
    def send(self) -> bool:
        return False


class Invalid(PipelineOutput):
    """Sends a result that lacks what its IOD requires: validation refuses it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def outgoing_datasets(self) -> Sequence[Dataset]:
        return [self.dataset]

    def send(self) -> bool:
        return True


class FailingEverywhere(AbstractPipeline):
    ae_title = "PRIVACY"
    rejection_policy = "failure"  # a refusal's ErrorComment is searched too
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT, "prior": NamedPrior}
    maintenance_thread = False
    validate_outputs = "structural"
    log_level = "DEBUG"
    log_format = "%(levelname)s %(name)s %(patient_key)s %(job_id)s %(message)s"
    admin_port = 0
    study_expiration_days = 1.0

    def filter(self, dataset: Dataset) -> bool:
        if dataset.PatientID == "FILTER":
            raise RuntimeError("the filter broke")
        return True

    def process(self, input_container: InputContainer) -> object:
        key = input_container.patient_key
        first = input_container.datasets["CT"][0]
        if key == "DATASET":
            return first
        if key == "DATASETS":
            return list(input_container.datasets["CT"])
        if key == "RAISES":
            return first.NoSuchKeyword
        if key == "EXPLODES":
            return Explodes()
        if key == "REFUSES":
            return [NoOutput(), Refuses()]
        if key == "INVALID":
            broken = Dataset()
            broken.update(first)
            del broken.StudyInstanceUID
            return Invalid(broken)
        return NoOutput()


class GrindingNode(FailingEverywhere):
    input = {"CT": GrindsBadly}


def _searched(texts: dict[str, str]) -> None:
    leaks = [f"{where}: {secret!r}" for where, text in texts.items() for secret in SECRETS if secret in text]
    assert not leaks, "patient data found in " + "; ".join(leaks)


def _all_text(node: AbstractPipeline, data: Path, log: Path, records: list[logging.LogRecord]) -> dict[str, str]:
    texts = {"log file": log.read_text(encoding="utf-8")}
    formatter = logging.Formatter()
    texts["log records"] = "\n".join(
        record.getMessage() + (formatter.formatException(record.exc_info) if record.exc_info else "")
        for record in records)
    for reason in sorted((data / "quarantine").glob("*/reason.json")):
        texts[f"quarantine {reason.parent.name}"] = reason.read_text(encoding="utf-8")
    history = node.data.history  # type: ignore[union-attr]
    texts["history"] = json.dumps([event.as_json() for event in history.events()])
    return texts


def test_no_failure_puts_a_name_or_birth_date_in_a_log_line_or_message(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dicomnode")
    data, log = tmp_path / "data", tmp_path / "node.log"
    comments: list[str] = []
    with FailingEverywhere(data_directory=data, log_output=log) as node:
        for key in ("DATASET", "DATASETS", "RAISES", "EXPLODES", "REFUSES", "INVALID", "FILTER", "OK"):
            result = send_datasets(node.address, _series(key))
            comments += [failure.reason for failure in result.failed]
        # an MR image: the CT input refuses it by modality, the prior input by the patient's name
        refused = send_datasets(node.address, _series("REFUSED", slices=1, modality="MR"))
        comments += [failure.reason for failure in refused.failed]
        nameless = _series("NOID", slices=1)
        del nameless[0].PatientID
        comments += [failure.reason for failure in send_datasets(node.address, nameless).failed]
        truncated, syntax, meta = encoded_instance(_series("TRUNC", slices=1)[0])
        cut = node.ingestion.encoded(bytes(truncated)[:-40], syntax, meta, Source("SCANNER", kind="api"))
        assert cut.status == 0xC001
        comments.append(cut.comment)
        assert node.wait_for_jobs(60)
        # patients left waiting: one expires, one is still there at close
        assert send_datasets(node.address, _series("EXPIRES", slices=1)).ok
        assert send_datasets(node.address, _series("WAITING", slices=1)).ok
        node.tree["EXPIRES"].created -= 2 * 86400
        assert MaintenanceThread(node).expire_patients() == 1
        # a failed job retried from the quarantine fails again
        entry = next(e for e in node.quarantine.list() if e.patient_key == "EXPLODES")  # type: ignore[union-attr]
        assert not node.quarantine.retry(entry.id, node)  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{node.operations.admin_port}"
        status = urllib.request.urlopen(url + "/status").read().decode()
        page = urllib.request.urlopen(url + "/").read().decode()
    # the scenarios happened: what they should have left behind is there
    reasons = {e.patient_key: e.reason for e in node.quarantine.list()}  # type: ignore[union-attr]
    assert {"DATASET", "DATASETS", "RAISES", "EXPLODES", "REFUSES", "INVALID"} <= set(reasons)
    assert "got FileDataset" in reasons["DATASET"] and "Dataset" in reasons["DATASETS"]
    assert "failed validation" in reasons["INVALID"]
    assert any("filter raised" in comment for comment in comments)
    assert any("not shown" in comment or "no input accepts" in comment for comment in comments)
    texts = _all_text(node, data, log, caplog.records)
    assert "expired after 1 days" in texts["log file"] and "WAITING" in texts["log file"]
    assert "another PN value (not shown" in texts["log file"]
    assert "Traceback" in texts["log file"]  # the failed jobs' tracebacks are in the log
    texts.update({"C-STORE comments": "\n".join(comments), "status": status, "status page": page})
    _searched(texts)
    # the datasets themselves still hold the name: the search would have found a dump of one
    quarantined = next((data / "quarantine").glob("*-DATASET-*/*.dcm"))
    assert FAMILY in str(dcmread(quarantined).PatientName)


def test_a_grinder_failure_names_no_patient_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dicomnode")
    data, log = tmp_path / "data", tmp_path / "node.log"
    with GrindingNode(data_directory=data, log_output=log) as node:
        assert send_datasets(node.address, _series("GRIND")).ok
        assert node.wait_for_jobs(30)
    [entry] = node.quarantine.list()  # type: ignore[union-attr]
    assert entry.reason.startswith("grinding raised ValueError")
    _searched(_all_text(node, data, log, caplog.records))


def test_without_a_data_directory_the_failed_jobs_traceback_is_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    with FailingEverywhere(log_output=log, admin_port=None) as node:
        assert send_datasets(node.address, _series("RAISES")).ok
        assert node.wait_for_jobs(30)
    text = log.read_text(encoding="utf-8")
    assert "failed after" in text and "Traceback (most recent call last)" in text and "NoSuchKeyword" in text
    assert "the patient's 2 image(s) are dropped" in text
    _searched({"log file": text})


@pytest.mark.plugin("numpy")
def test_process_returning_an_array_is_named_by_its_shape_only(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    import numpy

    class ReturnsArray(FailingEverywhere):
        def process(self, input_container: InputContainer) -> object:
            return numpy.zeros((len(input_container.datasets["CT"]), 8, 8), dtype=numpy.int16)

    caplog.set_level(logging.DEBUG, logger="dicomnode")
    data, log = tmp_path / "data", tmp_path / "node.log"
    with ReturnsArray(data_directory=data, log_output=log) as node:
        assert send_datasets(node.address, _series("ARRAY")).ok
        assert node.wait_for_jobs(30)
    [entry] = node.quarantine.list()  # type: ignore[union-attr]
    assert "got ndarray" in entry.reason
    text = log.read_text(encoding="utf-8")
    assert len([line for line in text.splitlines() if "ARRAY" in line]) < 40  # no dump of the array
    _searched(_all_text(node, data, log, caplog.records))


@pytest.mark.plugin("dicom-output", "file-output")
def test_an_output_given_a_dataset_instead_of_a_destination_says_what_it_got(tmp_path: Path) -> None:
    from dicomnode.errors import ConfigurationError
    from dicomnode_dicom_output import DicomOutput
    from dicomnode_file_output import FileOutput

    dataset = _series("WRONG", slices=1)[0]
    for make in (lambda: DicomOutput([dataset]), lambda: FileOutput([dataset]),  # type: ignore[list-item]
                 lambda: FileOutput([(dataset, [dataset])])):  # type: ignore[list-item]
        with pytest.raises(ConfigurationError) as raised:
            make()
        assert "pydicom" in str(raised.value)
        _searched({"error": str(raised.value)})
