"""Nothing is lost when the scheduler or the node dies, and a late result of an abandoned run is ignored.

The cluster is real (``dask scheduler`` and two ``dask
worker`` processes on loopback); the scheduler is SIGKILLed and started again
on the same address, the node (a subprocess serving
``tests/support/dask_pipelines.py``) is SIGKILLed and started again on the
same data directory. DCMTK's storescu sends the images.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dask_cluster import SUPPORT, DaskCluster
from dask_pipelines import ClusterNode, events, release
from dcmtk import stop_process, storescu
from node import wait_until

from dicomnode.dicom.synthetic import synthetic_series, write_series

pytestmark = [pytest.mark.plugin("dask"), pytest.mark.timeout(180)]


def _patient(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def _series(folder: Path, patient: str) -> list[Path]:
    return write_series(synthetic_series(patient_id=patient, slices=2, rows=8, columns=8), folder / patient)


def _send(port: int, files: list[Path]) -> None:
    result = storescu(port, files, called_aet="DASKNODE", calling_aet="SCANNER", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_lost_scheduler_keeps_the_node_receiving_and_its_jobs_wait_then_run_once_it_is_back(
        cluster: DaskCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_peer("dcmtk")
    caplog.set_level(logging.WARNING, "dicomnode.dask")
    running, arriving = _patient("HOLD"), _patient("AFTER")
    node = ClusterNode(data_directory=tmp_path / "data",
                       executor_settings={"address": cluster.address, "connect_timeout": 5, "submit_timeout": 10})
    node.open(blocking=False)
    try:
        _send(node.port, _series(tmp_path, running))
        assert wait_until(lambda: events(running, "started"), timeout=60)
        cluster.kill_scheduler()

        _send(node.port, _series(tmp_path, arriving))  # the node keeps receiving
        assert wait_until(lambda: any(f"of patient {arriving} waits for the Dask cluster" in r.getMessage()
                                      for r in caplog.records), timeout=30)
        assert events(arriving) == []  # waits: nothing runs it while there is no scheduler

        cluster.start_scheduler()
        cluster.supervise()  # the workers that ended with the scheduler start again, as under systemd
        release(running)
        assert node.wait_for_jobs(120)
    finally:
        node.close()
    for patient in (running, arriving):
        assert len(events(patient, "delivered")) == 1, events(patient)
    assert node.jobs_succeeded == 2 and node.jobs_failed == 0
    assert node.quarantine is not None and node.quarantine.list() == []
    assert any(f"of patient {running} waits for the Dask cluster at {cluster.address}: the scheduler was lost "
               "while the job ran" in r.getMessage() for r in caplog.records)


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[object]:
    """Starts ``dask_pipelines.py`` as a node in a subprocess; stops every one started."""
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int, address: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"node-{len(started)}.log", "wb")  # noqa: SIM115 - the child holds it
        process = subprocess.Popen([sys.executable, str(SUPPORT / "dask_pipelines.py"), str(tmp_path / "data"),
                                    str(port), address], stdout=subprocess.PIPE, stderr=log)
        started.append(process)
        log.close()
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"READY"), (tmp_path / "node-0.log").read_text()
        return process

    yield start
    for process in started:
        stop_process(process)


def test_a_node_killed_during_a_job_submits_it_again_after_its_restart_and_the_late_result_is_ignored(
        cluster: DaskCluster, tmp_path: Path, node_process) -> None:  # type: ignore[no-untyped-def]
    require_peer("dcmtk")
    # the first run of this patient takes 4 s, a later one none: the abandoned first run ends after the
    # restarted node's run has delivered, and its result has nobody to go to
    patient = _patient("FIRSTSLOW4X")
    port = free_port()
    node = node_process(port, cluster.address)
    _send(port, _series(tmp_path, patient))
    assert wait_until(lambda: events(patient, "started"), timeout=60)
    os.kill(node.pid, signal.SIGKILL)
    node.wait(10)
    assert events(patient, "delivered") == []

    node_process(port, cluster.address)  # restores the patient from the data directory and submits it again
    assert wait_until(lambda: events(patient, "delivered"), timeout=60)
    assert wait_until(lambda: len(events(patient, "finished")) == 2, timeout=30)  # the first run finished too
    time.sleep(1.0)  # a second delivery would have shown up by now
    started = events(patient, "started")
    assert len(started) == 2
    assert len(events(patient, "delivered")) == 1
    assert not list((tmp_path / "data").glob("incoming/**/*.dcm"))  # delivered: the images are removed
