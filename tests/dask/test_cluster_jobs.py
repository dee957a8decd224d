"""Jobs on a real Dask cluster: a scheduler and two worker processes on loopback, started by the fixture.

The node runs in the test process with a data directory; its jobs run on the
cluster's workers, which record what they do (``tests/support/dask_pipelines.py``);
the node sends the outputs, which record each delivery.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from dask_cluster import DaskCluster
from dask_pipelines import ClusterNode, events, release
from node import wait_until

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.labels import pseudonym
from dicomnode.server.logs import read_secret

pytestmark = [pytest.mark.plugin("dask"), pytest.mark.timeout(180)]


def _patient(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def _node(cluster: DaskCluster, tmp_path: Path, node_settings: dict[str, object] | None = None,
          **settings: object) -> ClusterNode:
    executor_settings = {"address": cluster.address, "connect_timeout": 5, **settings}
    node = ClusterNode(data_directory=tmp_path / "data", executor_settings=executor_settings, **(node_settings or {}))
    node.open(blocking=False)
    return node


def _submit(node: ClusterNode, patient: str, slices: int = 2) -> None:
    """Store a small series of the patient as if received, and start its job."""
    assert node.store is not None
    for image in synthetic_series(patient_id=patient, slices=slices, rows=8, columns=8):
        node.tree.add_image(patient, image, node.store.write_dataset(patient, image), "SCANNER")
    assert node.check_ready([patient]) == 1


def test_a_job_runs_on_a_worker_and_the_node_delivers_its_outputs(cluster: DaskCluster, tmp_path: Path) -> None:
    patient = _patient("PLAIN")
    node = _node(cluster, tmp_path)
    try:
        _submit(node, patient)
        assert node.wait_for_jobs(60)
    finally:
        node.close()
    started, delivered = events(patient, "started"), events(patient, "delivered")
    assert len(started) == 1 and started[0]["pid"] in cluster.worker_pids()
    assert started[0]["images"] == 2  # the ground input crossed whole
    assert len(delivered) == 1 and delivered[0]["pid"] == os.getpid()  # sent by the node
    assert node.jobs_succeeded == 1
    assert node.store is not None and list(node.store.files()) == []  # done: the images are removed


def test_the_pipeline_is_set_up_once_per_worker_process(cluster: DaskCluster, tmp_path: Path) -> None:
    patients = [_patient("SETUP") for _ in range(6)]
    node = _node(cluster, tmp_path)
    try:
        for patient in patients:
            _submit(node, patient)
        assert node.wait_for_jobs(60)
    finally:
        node.close()
    workers = {events(patient, "started")[0]["pid"] for patient in patients}
    setups = [line["pid"] for line in events("setup")]
    assert workers <= set(setups)
    assert all(setups.count(pid) == 1 for pid in workers), setups


def test_process_raising_on_a_worker_quarantines_the_job_with_the_workers_traceback(
        cluster: DaskCluster, tmp_path: Path) -> None:
    patient = _patient("FAIL")
    node = _node(cluster, tmp_path)
    try:
        _submit(node, patient)
        assert node.wait_for_jobs(60)
    finally:
        node.close()
    assert node.jobs_failed == 1 and events(patient, "delivered") == []
    assert node.quarantine is not None
    [entry] = node.quarantine.list()
    assert entry.patient_key == patient
    assert f"process raised RuntimeError: model exploded on {patient}" in entry.reason
    assert "on the Dask worker tcp://127.0.0.1:" in entry.reason
    assert "dask_pipelines.py" in entry.traceback and "in process" in entry.traceback


def test_a_worker_killed_mid_job_reruns_it_on_another_and_its_outputs_are_delivered_once(
        cluster: DaskCluster, tmp_path: Path) -> None:
    patient = _patient("HOLD")
    node = _node(cluster, tmp_path)
    try:
        _submit(node, patient)
        assert wait_until(lambda: events(patient, "started"), timeout=60)
        killed = int(events(patient, "started")[0]["pid"])  # type: ignore[arg-type]
        os.kill(killed, signal.SIGKILL)
        release(patient)
        assert node.wait_for_jobs(90)
    finally:
        node.close()
    runs = [line["pid"] for line in events(patient, "started")]
    assert len(runs) == 2 and runs[0] == killed and runs[1] != killed
    assert len(events(patient, "finished")) == 1
    assert len(events(patient, "delivered")) == 1
    assert node.jobs_succeeded == 1 and node.jobs_failed == 0


def test_a_job_no_worker_has_the_resources_for_waits_then_goes_to_the_quarantine(
        cluster: DaskCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    patient = _patient("GPU")
    caplog.set_level(logging.WARNING, "dicomnode.dask")
    # the waiting line names the patient as every line does: here by its pseudonym
    node = _node(cluster, tmp_path, {"log_patient_keys": "pseudonym"}, resources={"GPU": 1}, resource_timeout=1.5)
    started = time.monotonic()
    try:
        _submit(node, patient)
        assert node.wait_for_jobs(60)
    finally:
        node.close()
    assert time.monotonic() - started >= 1.5
    assert events(patient) == []  # never ran
    waiting = [r.getMessage() for r in caplog.records if "waits: no worker" in r.getMessage()]
    assert waiting and "{GPU = 1}" in waiting[0] and "1.5 s (resource_timeout)" in waiting[0]
    secret = read_secret(tmp_path / "data", create=False)
    assert secret is not None and f"of patient {pseudonym(patient, secret)} waits" in waiting[0]
    assert patient not in waiting[0]
    assert node.quarantine is not None
    [entry] = node.quarantine.list()
    assert "no worker of the Dask cluster has the resources the job asks for ({GPU = 1})" in entry.reason
    assert "resource_timeout = 1.5 s" in entry.reason


def test_a_pipeline_declared_in_toml_runs_on_the_cluster(cluster: DaskCluster, tmp_path: Path) -> None:
    from dicomnode.server.toml_config import load_pipeline

    (tmp_path / "toml_jobs.py").write_text(
        "import os\n"
        "from dask_pipelines import Delivered, record\n"
        "def process(input_container):\n"
        "    record(input_container.patient_key, 'started', images=len(input_container['CT']))\n"
        "    return Delivered(input_container.patient_key, os.getpid())\n")
    (tmp_path / "cluster.toml").write_text(f'''
process = "toml_jobs:process"

[node]
ae_title = "TOMLDASK"
executor = "dask"
executor_settings = {{ address = "{cluster.address}", connect_timeout = 5 }}

[inputs.CT]
required_values = {{ Modality = "CT" }}
grinder = "list"
images = 2
''')
    patient = _patient("TOML")
    node = load_pipeline(tmp_path / "cluster.toml")()
    try:
        result = node.run_datasets(synthetic_series(patient_id=patient, slices=2, rows=8, columns=8), "SCANNER")
    finally:
        node.runner.close(5)
    assert result.ok, result.reason + result.traceback
    [run] = events(patient, "started")
    assert run["pid"] in cluster.worker_pids() and run["images"] == 2
    assert len(events(patient, "delivered")) == 1
