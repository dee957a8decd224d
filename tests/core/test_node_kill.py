"""Nothing acknowledged is lost: SIGKILL a node while a series arrives, restart it, finish the series.

The node runs in a subprocess (``tests/support/node.py``) with a data
directory and an fsync per instance; DCMTK storescu sends a 40-slice series
and the node is killed once some instances are stored. Every instance
storescu saw a success status for must be on disk, and after a restart and
a resend the patient is processed exactly once with the whole series.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import DCMTK, dcmtk_env, stop_process, storescu
from dcmtk import acknowledged as storescu_acknowledged
from node import RECORD, read_jobs, wait_until, write_patient
from pydicom import dcmread

SUPPORT = Path(__file__).parents[1] / "support"
SLICES = 40


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, RECORD: str(tmp_path / "jobs.jsonl")}
        process = subprocess.Popen([sys.executable, str(SUPPORT / "node.py"), str(tmp_path / "data"), str(port),
                                    str(SLICES)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"READY")
        return process

    yield start
    for process in started:
        stop_process(process)


def test_sigkill_while_receiving_loses_no_acknowledged_instance(tmp_path: Path, start_node) -> None:  # type: ignore[no-untyped-def]
    require_peer("dcmtk")
    files = write_patient(tmp_path / "series", "KILLED", slices=SLICES)
    incoming = tmp_path / "data" / "incoming" / "KILLED"
    port = free_port()
    node = start_node(port)
    sender = subprocess.Popen(
        [str(DCMTK / "storescu"), "-v", "-aet", "SCANNER", "-aec", "TESTNODE", "127.0.0.1", str(port),
         *map(str, files)],
        env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_until(lambda: incoming.is_dir() and len(list(incoming.glob("*.dcm"))) >= 8, interval=0.005)
    os.kill(node.pid, signal.SIGKILL)
    node.wait(10)
    output, _ = sender.communicate(timeout=60)

    acknowledged = storescu_acknowledged(output)
    stored = {dcmread(path).SOPInstanceUID: path for path in incoming.glob("*.dcm")}  # complete, readable
    assert 0 < len(acknowledged) < SLICES, "the kill must land while the series arrives"
    assert acknowledged <= set(stored)
    assert read_jobs(tmp_path / "jobs.jsonl") == []

    start_node(port)
    result = storescu(port, files, called_aet="TESTNODE", calling_aet="SCANNER")
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_until(lambda: read_jobs(tmp_path / "jobs.jsonl"))
    time.sleep(1.0)  # a second job would have shown up by now
    jobs = read_jobs(tmp_path / "jobs.jsonl")
    assert len(jobs) == 1
    assert jobs[0]["uids"] == sorted(path.stem for path in files)
