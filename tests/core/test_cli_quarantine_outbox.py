"""``dicomnode quarantine`` and ``dicomnode outbox``: what an operator does with failed jobs and undelivered results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp, storescu
from node import RECORD, FailingNode, read_jobs, wait_until, write_patient

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.net import Address
from dicomnode.server.outbox import Outbox
from dicomnode.server.quarantine import Quarantine
from dicomnode.testing import output_context

SUPPORT_NODE = Path(__file__).resolve().parent.parent / "support" / "node.py"
FAILING = f"{SUPPORT_NODE}:FailingNode"


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomnode", *args], cwd=cwd, text=True, capture_output=True,
                          env=env, timeout=120)


@pytest.fixture
def quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, list[Path]]:
    """A data directory whose quarantine holds the failed job of patient FAIL1 (sent by storescu)."""
    require_peer("dcmtk")
    monkeypatch.setenv(RECORD, str(tmp_path / "jobs.jsonl"))
    data = tmp_path / "data"
    files = write_patient(tmp_path / "FAIL1", "FAIL1", slices=6)
    with FailingNode(data_directory=data) as node:
        sent = storescu(node.port, [tmp_path / "FAIL1"], called_aet="TESTNODE")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert wait_until(lambda: node.jobs_failed == 1)
        node.wait_for_jobs(10)
    [entry] = Quarantine(data / "quarantine").list()
    return data, entry.id, files


def test_quarantine_list_shows_each_failed_job_with_its_reason(quarantined: tuple[Path, str, list[Path]],
                                                               tmp_path: Path) -> None:
    data, entry_id, _ = quarantined
    result = _cli("quarantine", "list", "--pipeline", FAILING, "--data-directory", str(data), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert entry_id in result.stdout and "patient FAIL1" in result.stdout
    assert "model exploded on FAIL1" in result.stdout


def test_quarantine_list_json_carries_the_traceback(quarantined: tuple[Path, str, list[Path]],
                                                    tmp_path: Path) -> None:
    data, entry_id, files = quarantined
    result = _cli("quarantine", "list", "--data-directory", str(data), "--json", cwd=tmp_path)
    [entry] = json.loads(result.stdout)
    assert entry["id"] == entry_id and entry["files"] == len(files)
    assert "RuntimeError: model exploded on FAIL1" in entry["traceback"]


def test_quarantine_retry_that_fails_again_keeps_the_entry_and_exits_1(
        quarantined: tuple[Path, str, list[Path]], tmp_path: Path) -> None:
    data, entry_id, _ = quarantined
    env = {**os.environ, RECORD: str(tmp_path / "jobs.jsonl")}
    result = _cli("quarantine", "retry", entry_id, "--pipeline", FAILING, "-d", str(data), env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert f"{entry_id}: failed again" in result.stdout and "model exploded" in result.stdout
    assert [e.id for e in Quarantine(data / "quarantine").list()] == [entry_id]


def test_quarantine_retry_runs_the_job_and_removes_the_entry(
        quarantined: tuple[Path, str, list[Path]], tmp_path: Path) -> None:
    data, entry_id, files = quarantined
    env = {**os.environ, RECORD: str(tmp_path / "jobs.jsonl"), "DICOMNODE_TEST_HEAL": "1"}
    result = _cli("quarantine", "retry", entry_id, "--pipeline", FAILING, "-d", str(data), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "processed and delivered" in result.stdout
    jobs = read_jobs(tmp_path / "jobs.jsonl")
    assert [job["patient"] for job in jobs] == ["FAIL1"]
    assert jobs[0]["uids"] == sorted(p.stem for p in files)
    assert Quarantine(data / "quarantine").list() == []


def test_quarantine_retry_restore_gives_the_images_back_to_the_data_directory(
        quarantined: tuple[Path, str, list[Path]], tmp_path: Path) -> None:
    data, entry_id, files = quarantined
    result = _cli("quarantine", "retry", entry_id, "--restore", "-d", str(data), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{len(files)} image(s) moved back" in result.stdout
    restored = [p for p in data.rglob("*.dcm") if "quarantine" not in p.relative_to(data).parts]
    assert len(restored) == len(files)


def test_quarantine_retry_without_a_pipeline_says_what_it_needs(
        quarantined: tuple[Path, str, list[Path]], tmp_path: Path) -> None:
    data, entry_id, _ = quarantined
    result = _cli("quarantine", "retry", entry_id, "-d", str(data), cwd=tmp_path)
    assert result.returncode == 1
    assert "needs --pipeline TARGET" in result.stderr


def test_an_unknown_quarantine_id_lists_the_known_ones(quarantined: tuple[Path, str, list[Path]],
                                                       tmp_path: Path) -> None:
    data, entry_id, _ = quarantined
    result = _cli("quarantine", "retry", "nope", "--restore", "-d", str(data), cwd=tmp_path)
    assert result.returncode == 1
    assert "no quarantine entry 'nope'" in result.stderr and entry_id in result.stderr


def test_commands_without_a_data_directory_say_how_to_give_one(tmp_path: Path) -> None:
    for command in ("quarantine", "outbox"):
        result = _cli(command, "list", cwd=tmp_path)
        assert result.returncode == 1
        assert "give --data-directory DIR, or --pipeline TARGET" in result.stderr


# --- outbox ----------------------------------------------------------------------------------------


def _outbox_entry(data: Path, output_name: str = "none") -> str:
    entry = Outbox(data / "outbox").put(output_name, {"why": "test"}, synthetic_series(slices=2, rows=8, columns=8),
                                        "the PACS was down")
    return entry.id


def test_outbox_list_shows_each_entry(tmp_path: Path) -> None:
    entry_id = _outbox_entry(tmp_path / "data")
    result = _cli("outbox", "list", "-d", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert entry_id in result.stdout and "output none" in result.stdout and "2 file(s)" in result.stdout
    assert "the PACS was down" in result.stdout


def test_outbox_retry_an_output_cannot_deliver_counts_the_attempt_and_exits_1(tmp_path: Path) -> None:
    entry_id = _outbox_entry(tmp_path / "data")
    result = _cli("outbox", "retry", entry_id, "-d", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{entry_id}: still undelivered" in result.stdout
    listing = json.loads(_cli("outbox", "list", "-d", str(tmp_path / "data"), "--json", cwd=tmp_path).stdout)
    assert [(e["id"], e["attempts"]) for e in listing] == [(entry_id, 1)]


def test_an_empty_outbox_says_so(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = _cli("outbox", "retry", "-d", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0 and "is empty" in result.stdout


@pytest.mark.parametrize("command", ["outbox", "quarantine"])
def test_a_data_directory_that_does_not_exist_is_an_error_not_an_empty_list(tmp_path: Path, command: str) -> None:
    result = _cli(command, "list", "-d", str(tmp_path / "typo"), cwd=tmp_path)
    assert result.returncode == 1
    assert "no data directory at" in result.stderr and "typo" in result.stderr


@pytest.mark.plugin("dicom-output")
def test_outbox_retry_delivers_what_a_dicom_output_could_not(tmp_path: Path) -> None:
    require_peer("dcmtk")
    from dicomnode_dicom_output import DicomOutput

    data = tmp_path / "data"
    port = free_port()
    series = synthetic_series(slices=3, rows=8, columns=8)
    output = DicomOutput([(Address("127.0.0.1", port, "STORESCP"), series)], "TESTNODE", attempts=1, timeout=5)
    output.bind(output_context(data, pipeline_name="test", ae_title="TESTNODE", patient_key="P1",
                               output_name="dicom"))
    assert output.send() is True  # nothing listens yet: the series goes to the outbox
    with storescp(tmp_path / "received", port):
        result = _cli("outbox", "retry", "-d", str(data), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "delivered by output 'dicom'" in result.stdout
    assert len(list((tmp_path / "received").iterdir())) == 3
    assert Outbox(data / "outbox").entries() == []
