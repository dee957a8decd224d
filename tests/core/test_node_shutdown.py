"""open() blocks until SIGTERM or SIGINT, then closes cleanly; stored work survives for the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import stop_process, storescu, wait_for_port
from node import RECORD, write_patient

from dicomnode.server.storage import InstanceStore

SUPPORT = Path(__file__).parents[1] / "support"


def _start(port: int, data: Path, record: Path, expected: int) -> subprocess.Popen[str]:
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import node; node.CT.expected = int(sys.argv[4]);"
        "node.RecordingNode(port=int(sys.argv[2]), data_directory=sys.argv[3], log_level='INFO').open()"
    )
    env = {**os.environ, RECORD: str(record)}
    process = subprocess.Popen([sys.executable, "-c", script, str(SUPPORT), str(port), str(data), str(expected)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_port(port)
    return process


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_blocking_node_closes_cleanly_on_a_signal(tmp_path: Path, stop: signal.Signals) -> None:
    port = free_port()
    process = _start(port, tmp_path / "data", tmp_path / "jobs.jsonl", 6)
    try:
        os.kill(process.pid, stop)
        output, _ = process.communicate(timeout=30)
    finally:
        stop_process(process)  # type: ignore[arg-type]
    assert process.returncode == 0, output
    assert "RecordingNode closed" in output


def test_incomplete_work_is_kept_on_disk_at_close_and_reported(tmp_path: Path) -> None:
    require_peer("dcmtk")
    port = free_port()
    write_patient(tmp_path / "P1", "P1", slices=3)
    process = _start(port, tmp_path / "data", tmp_path / "jobs.jsonl", 6)
    try:
        result = storescu(port, [tmp_path / "P1"], called_aet="TESTNODE")
        assert result.returncode == 0, result.stdout + result.stderr
        os.kill(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        stop_process(process)  # type: ignore[arg-type]
    assert "closing with 1 incomplete patient(s), kept in the data directory" in output
    assert len(list(InstanceStore(tmp_path / "data").files())) == 3


def test_a_port_in_use_fails_open_and_leaves_nothing_running(tmp_path: Path) -> None:
    import socket
    import threading

    from node import RecordingNode

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        before = {thread.name for thread in threading.enumerate()}
        node = RecordingNode(port=taken.getsockname()[1], data_directory=tmp_path / "data")
        with pytest.raises(OSError):
            node.open(blocking=False)
    assert not node.is_open
    leftover = {thread.name for thread in threading.enumerate()} - before
    assert not [name for name in leftover if "RecordingNode" in name or "spare" in name]


def test_a_closed_node_can_be_opened_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from node import RecordingNode, read_jobs, wait_until

    from dicomnode.dicom.synthetic import synthetic_series
    from dicomnode.net import send_datasets

    monkeypatch.setenv(RECORD, str(tmp_path / "jobs.jsonl"))
    node = RecordingNode(data_directory=tmp_path / "data")
    for patient in ("FIRST", "SECOND"):
        node.open(blocking=False)
        try:
            assert send_datasets(node.address, synthetic_series(patient_id=patient, slices=6, rows=8, columns=8)).ok
            assert wait_until(lambda p=patient: p in [job["patient"] for job in read_jobs(tmp_path / "jobs.jsonl")])
        finally:
            node.close()
    assert [job["patient"] for job in read_jobs(tmp_path / "jobs.jsonl")] == ["FIRST", "SECOND"]
