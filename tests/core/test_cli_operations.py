"""The operator's commands: global options anywhere, run's log level and port errors, status, quarantine
show, show of a folder, and a data directory that does not exist."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port

from dicomnode.cli import main
from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.net import send_datasets
from dicomnode.server.nodes import AbstractPipeline

NODE_FILE = '''
from dicomnode import AbstractInput, AbstractPipeline, NoOutput


class CT(AbstractInput):
    minimum_images = 2


class OpsNode(AbstractPipeline):
    ae_title = "OPSNODE"
    ip = "127.0.0.1"
    input = {"CT": CT}
    maintenance_thread = False
    log_level = "WARNING"

    def process(self, input_container):
        return NoOutput()
'''


class CT(AbstractInput):
    minimum_images = 3


class Watched(AbstractPipeline):
    ae_title = "WATCHED"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT}
    admin_port = 0
    maintenance_thread = False
    log_level = "WARNING"

    def process(self, input_container: InputContainer) -> PipelineOutput:
        if input_container.patient_key == "FAILS":
            raise ValueError("the segmentation came back empty")
        return NoOutput()


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; killed by PID at the end if still running."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def _run_node(tmp_path: Path, started: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    path = tmp_path / "ops_node.py"
    path.write_text(NODE_FILE, encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "dicomnode", *[a.replace("NODE", str(path)) for a in args]],
                               cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    started.append(process)
    return process


def _stopped(process: subprocess.Popen[str], wait_for: str) -> str:
    """Wait until stderr shows ``wait_for`` (the node serves), stop it with SIGTERM, return all of stderr."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if wait_for in line:
            break
    os.kill(process.pid, signal.SIGTERM)
    try:
        rest = process.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        # the child runs with PYTHONFAULTHANDLER: SIGABRT makes it print every thread's stack
        os.kill(process.pid, signal.SIGABRT)
        rest = process.communicate(timeout=30)[1]
        pytest.fail("the node did not stop within 60 s of SIGTERM; its threads:\n" + rest[-6000:])
    return "".join(seen) + rest


@pytest.mark.parametrize("order", ["before", "after"])
def test_log_level_before_or_after_run_is_the_nodes_level(order: str, tmp_path: Path,
                                                          started: list[subprocess.Popen[str]]) -> None:
    port = str(free_port())
    args = (["--log-level", "debug", "run", "NODE", "--port", port] if order == "before"
            else ["run", "NODE", "--port", port, "--log-level", "debug"])
    process = _run_node(tmp_path, started, *args)
    stderr = _stopped(process, "Ctrl-C or SIGTERM stops it")
    assert process.returncode == 0, stderr
    assert " DEBUG dicomnode." in stderr  # the node's own debug lines: its level is debug, not WARNING
    assert f"OpsNode listening as OPSNODE on 127.0.0.1:{port}" in stderr


def test_a_port_in_use_names_the_address_and_suggests_port(tmp_path: Path,
                                                          started: list[subprocess.Popen[str]]) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        process = _run_node(tmp_path, started, "run", "NODE", "--port", str(port))
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert (f"dicomnode run: error: cannot listen on 127.0.0.1:{port}: the address is already in use (another node "
            "or program listens there); choose a free port with --port") in stderr
    assert "Errno" not in stderr


def test_global_options_are_accepted_after_a_nested_action(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "quarantine").mkdir()
    status, out, _ = _cli(capsys, "quarantine", "list", "-d", tmp_path, "--log-level", "info")
    assert status == 0 and "no quarantined jobs" in out
    status, out, _ = _cli(capsys, "--log-level=error", "outbox", "list", "-d", tmp_path)
    assert status == 0 and "is empty" in out
    status, out, _ = _cli(capsys, "plugins", "--version")
    assert status == 0 and out.startswith("dicomnode ")


@pytest.mark.parametrize("command", [["quarantine", "list"], ["outbox", "list"], ["status"], ["history"],
                                     ["quarantine", "show", "X"]])
def test_a_data_directory_that_does_not_exist_is_an_error(command: list[str], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _cli(capsys, *command, "-d", tmp_path / "typo")
    assert status == 1 and out == ""
    assert f"no data directory at '{tmp_path / 'typo'}': the folder does not exist" in err


def test_status_from_the_admin_endpoint_and_from_the_data_directory(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with Watched(data_directory=tmp_path) as node:
        assert send_datasets(node.address, synthetic_series(patient_id="HELD1", slices=2, rows=8, columns=8)).ok
        url = f"http://127.0.0.1:{node.operations.admin_port}"
        status, out, _ = _cli(capsys, "status", "--url", url)
        assert status == 0
        assert out.startswith(f"Watched (WATCHED) on 127.0.0.1:{node.port}: ready")
        assert "HELD1: 2 image(s)" in out and "waiting for CT: at least 3 images, has 2" in out
        status, out, _ = _cli(capsys, "status", "--url", url, "--json")
        assert json.loads(out)["patients"]["held"][0]["patient"] == "HELD1"
        assert _cli(capsys, "status", "--url", url, "--health")[:2] == (0, "ok\n")
    status, out, _ = _cli(capsys, "status", "-d", tmp_path)
    assert status == 0 and "(read from its files" in out
    assert "HELD1: 2 image(s)" in out and "waiting for incomplete at close" not in out
    assert "waiting for CT: at least 3 images, has 2" in out  # what the node last recorded
    status, _, err = _cli(capsys, "status", "--url", url, "--health")
    assert status == 1 and "cannot reach the admin endpoint" in err


def test_status_asks_for_the_token_it_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    token = "a-token-of-the-node-0123"
    with Watched(admin_token=token) as node:
        url = f"http://127.0.0.1:{node.operations.admin_port}"
        status, _, err = _cli(capsys, "status", "--url", url)
        assert status == 1 and "asks for its token: give --token, or set DICOMNODE_ADMIN_TOKEN" in err
        monkeypatch.setenv("DICOMNODE_ADMIN_TOKEN", token)
        assert _cli(capsys, "status", "--url", url)[0] == 0


def test_quarantine_show_prints_the_reason_the_traceback_and_the_history(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Watched(data_directory=tmp_path) as node:
        assert send_datasets(node.address, synthetic_series(patient_id="FAILS", slices=3, rows=8, columns=8)).ok
        assert node.wait_for_jobs(30)
    [entry] = node.quarantine.list()  # type: ignore[union-attr]
    status, out, _ = _cli(capsys, "quarantine", "show", entry.id, "-d", tmp_path)
    assert status == 0
    assert out.splitlines()[0] == f"quarantine entry {entry.id}: failed"
    assert "reason       process raised ValueError: the segmentation came back empty" in out
    assert "Traceback (most recent call last)" in out and 'raise ValueError("the segmentation came back' in out
    assert "history of the patient:" in out and "job failed" in out and "quarantined" in out
    status, out, _ = _cli(capsys, "quarantine", "show", entry.id, "-d", tmp_path, "--json")
    shown = json.loads(out)
    assert shown["id"] == entry.id and "Traceback" in shown["traceback"] and shown["history"]
    status, _, err = _cli(capsys, "quarantine", "show", "nope", "-d", tmp_path)
    assert status == 1 and "no quarantine entry 'nope'" in err and entry.id in err


def test_show_of_a_folder_shows_each_dicom_file_and_skips_the_others(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    files = write_series(synthetic_series(slices=2, rows=4, columns=4), tmp_path / "study" / "ct")
    (tmp_path / "study" / "README.txt").write_text("not DICOM", encoding="utf-8")
    status, out, err = _cli(capsys, "show", tmp_path / "study")
    assert status == 0
    assert [line[2:] for line in out.splitlines() if line.startswith("# ")] == [str(p) for p in sorted(files)]
    assert "skipped" in err and "README.txt" in err
    (tmp_path / "empty").mkdir()
    status, _, err = _cli(capsys, "show", tmp_path / "empty")
    assert status == 1 and "is a folder with no files in it" in err
