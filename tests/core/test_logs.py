"""The node's log: every format field on every line, JSON lines, pseudonyms, one line per association."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.net import send_datasets
from dicomnode.server.logs import RecordDefaults, configure_logging, pseudonym, read_secret
from dicomnode.server.nodes import AbstractPipeline


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    minimum_images = 2


class Logged(AbstractPipeline):
    ae_title = "LOGGED"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT}
    maintenance_thread = False
    log_level = "DEBUG"
    rejection_policy = "failure"  # the refused image's status and line are part of what is checked

    def process(self, input_container: InputContainer) -> PipelineOutput:
        if input_container.patient_key == "BROKEN":
            raise RuntimeError("the model is not loaded")
        return NoOutput()


def _exercise(node: AbstractPipeline) -> None:
    """A job that succeeds, one that fails, a refused image and a patient left incomplete."""
    for patient in ("GOOD", "BROKEN"):
        assert send_datasets(node.address, synthetic_series(patient_id=patient, slices=2, rows=8, columns=8),
                             ae_title="SCANNER").ok
    assert not send_datasets(node.address, synthetic_series(patient_id="MR1", slices=1, rows=8, columns=8,
                                                            modality="MR")).ok
    assert send_datasets(node.address, synthetic_series(patient_id="HALF", slices=1, rows=8, columns=8)).ok
    assert node.wait_for_jobs(30)


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    configure_logging("WARNING")  # the next tests get the default handler and plain patient keys


def test_a_format_with_the_job_fields_works_on_every_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "node.log"
    with Logged(log_output=log, log_format="%(levelname)s|%(patient_key)s|%(calling_aet)s|%(job_id)s|%(message)s",
                data_directory=tmp_path / "data") as node:
        _exercise(node)
    assert "Logging error" not in capfd.readouterr().err
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if re.match(r"^[A-Z]+\|", line)]
    assert len(lines) > 10
    assert all(line.count("|") >= 4 for line in lines)
    assert any(line.startswith("INFO|-|-|-|LOGGED listening") or "|-|-|-|" in line for line in lines)
    job_lines = [line for line in lines if line.split("|")[1] == "GOOD"]
    assert job_lines and all(line.split("|")[2] == "SCANNER" and line.split("|")[3] != "-" for line in job_lines)


def test_json_lines_are_one_object_a_line_with_the_traceback_inside(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    with Logged(log_output=log, log_json=True) as node:
        _exercise(node)
    documents = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert {"time", "level", "logger", "message", "thread"} <= set(documents[0])
    failed = next(d for d in documents if "failed after" in d["message"])
    assert failed["patient_key"] == "BROKEN" and failed["calling_aet"] == "SCANNER" and failed["job_id"]
    assert "Traceback (most recent call last)" in failed["message"]
    assert failed["level"] == "ERROR" and failed["time"].endswith("Z")


def test_one_info_line_per_association_with_peer_titles_counts_bytes_and_time(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dicomnode")
    with Logged() as node:
        _exercise(node)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("association ")]
    assert len(lines) == 4
    pattern = (r"^association [0-9a-f]{8} from SCANNER \(127\.0\.0\.1:\d+\) to LOGGED ended: 2 stored, 0 refused; "
               r"1 patient\(s\), [0-9.]+ MB in [0-9.]+ s$")
    assert re.match(pattern, lines[0]), lines[0]
    assert "0 stored, 1 refused (0xC004: 1)" in lines[2]


def test_a_patient_left_incomplete_is_named_after_its_association_and_at_close(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dicomnode")
    with Logged() as node:
        assert send_datasets(node.address, synthetic_series(patient_id="HALF", slices=1, rows=8, columns=8)).ok
        node.wait_for_jobs(10)
    messages = [record.getMessage() for record in caplog.records]
    assert any(re.match(r"^\[patient HALF from DICOMNODE\] incomplete after association [0-9a-f]{8}: 1 image\(s\); "
                        r"waiting for CT: at least 2 images, has 1$", message) for message in messages), messages
    assert ("closing with 1 incomplete patient(s), dropped (no data_directory): HALF (1 image(s); CT: at least 2 "
            "images, has 1)") in messages


def test_pseudonyms_replace_the_patient_key_everywhere_it_is_shown(tmp_path: Path) -> None:
    log, data = tmp_path / "node.log", tmp_path / "data"
    with Logged(log_output=log, data_directory=data, log_patient_keys="pseudonym") as node:
        _exercise(node)
        status = json.dumps(node.status())
    secret = read_secret(data, create=False)
    assert secret is not None and (data / ".pseudonym-secret").stat().st_mode & 0o077 == 0
    text = log.read_text(encoding="utf-8")
    for key in ("GOOD", "BROKEN", "HALF"):
        assert re.search(rf"\b{key}\b", text) is None, key
        assert pseudonym(key, secret) in text
    assert "HALF" not in status and pseudonym("HALF", secret) in status
    [entry] = node.quarantine.list()  # type: ignore[union-attr]
    assert pseudonym("BROKEN", secret) in entry.id and entry.patient_key == "BROKEN"


def test_a_pseudonym_is_the_same_across_restarts_of_one_data_directory(tmp_path: Path) -> None:
    first = read_secret(tmp_path)
    assert first == read_secret(tmp_path)
    assert pseudonym("P1", first) == pseudonym("P1", read_secret(tmp_path))  # type: ignore[arg-type]
    assert re.fullmatch(r"P-[0-9a-f]{12}", pseudonym("P1", first))  # type: ignore[arg-type]


def test_record_defaults_leave_the_fields_a_job_line_sets() -> None:
    record = logging.LogRecord("dicomnode.job", logging.INFO, __file__, 1, "m", (), None)
    record.patient_key = "P1"
    RecordDefaults().filter(record)
    assert (record.patient_key, record.calling_aet, record.job_id) == ("P1", "-", "-")  # type: ignore[attr-defined]


def test_a_complete_patient_held_by_its_stable_time_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dicomnode")
    with Logged(stable_time=30.0) as node:
        assert send_datasets(node.address, synthetic_series(patient_id="STABLE", slices=2, rows=8, columns=8)).ok
        node.wait_for_jobs(10)
        [held] = node.status()["patients"]["held"]
    assert held["waiting_for"].startswith("no new image for 30 s (the last came ")
    assert any(re.match(r"^\[patient STABLE from DICOMNODE\] complete, not started after association [0-9a-f]{8}: "
                        r"2 image\(s\); waiting for no new image for 30 s", record.getMessage())
               for record in caplog.records)
