"""The executor's settings: each is checked when the node is built, with an error that says what is allowed.

And the two clusters other than the shared one: Dask's TLS between the node
and the scheduler (a scheduler and one worker started with a certificate
made by openssl), and the embedded LocalCluster the node starts itself.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from certificates import make_certificate
from dask_cluster import DaskCluster
from dask_pipelines import RECORD, ClusterNode, events

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError
from dicomnode.plugins import get_registry

pytestmark = [pytest.mark.plugin("dask"), pytest.mark.timeout(180)]


def test_the_plugin_registers_the_executor_dask() -> None:
    executors = get_registry().contributions("executor")
    assert executors["dask"].distribution == "dicomnode-dask"


@pytest.mark.parametrize(("settings", "message"), [
    ({"adress": "tcp://127.0.0.1:8786"}, r"unknown setting\(s\) \['adress'\]; known: address, "),
    ({"address": "127.0.0.1:8786"}, r"'address' .* must be a scheduler address such as \"tcp://127.0.0.1:8786\", "
                                    r"got '127.0.0.1:8786'"),
    ({"resources": {"GPU": 0}}, r"'resources' .* must be a table of resource name -> a positive amount"),
    ({"retries": -1}, r"'retries' .* must be an integer >= 0, got -1"),
    ({"resource_timeout": "10"}, r"'resource_timeout' .* must be a number of seconds > 0, got '10'"),
    ({"address": "tcp://127.0.0.1:8786", "n_workers": 2}, r"'n_workers' .* is for the embedded cluster; with an "
                                                          r"'address' \(tcp://127.0.0.1:8786\)"),
    ({"connect_timeout": 5}, r"'connect_timeout' .* is for a scheduler at an 'address'"),
    ({"address": "tls://127.0.0.1:8786", "tls_ca": "ca.pem"}, r"uses TLS and needs tls_ca, tls_certificate and "
                                                              r"tls_key; missing: tls_certificate, tls_key"),
    ({"address": "tcp://127.0.0.1:8786", "tls_ca": "ca.pem", "tls_certificate": "c.pem", "tls_key": "k.pem"},
     r"'tls_ca' .* the address tcp://127.0.0.1:8786 is not a tls:// address"),
])
def test_a_bad_setting_is_refused_when_the_node_is_built(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ClusterNode(executor_settings=settings)


def _children() -> set[int]:
    """This process's children, but multiprocessing's resource tracker (which outlives any pool on purpose)."""
    return {child.pid for child in psutil.Process().children(recursive=True)
            if "resource_tracker" not in " ".join(child.cmdline())}


def _run_one_job(node: ClusterNode, prefix: str) -> str:
    patient = f"{prefix}{uuid.uuid4().hex[:8].upper()}"
    result = node.run_datasets(synthetic_series(patient_id=patient, slices=2, rows=8, columns=8), "SCANNER")
    assert result.ok, result.reason + result.traceback
    return patient


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaskCluster, Path, Path]]:
    folder = tmp_path_factory.mktemp("dask-tls")
    cert, key = make_certificate(folder, "cluster")
    options = ["--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
    cluster = DaskCluster(folder, folder / "records", workers=1, tls=options, protocol="tls")
    previous = os.environ.get(RECORD)
    os.environ[RECORD] = str(cluster.record_dir)
    try:
        yield cluster.start(), cert, key
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop(RECORD, None)
        else:
            os.environ[RECORD] = previous


def test_the_node_reaches_a_tls_scheduler_with_the_clusters_certificates(
        tls_cluster: tuple[DaskCluster, Path, Path]) -> None:
    cluster, cert, key = tls_cluster
    assert cluster.address.startswith("tls://127.0.0.1:")
    node = ClusterNode(executor_settings={"address": cluster.address, "tls_ca": str(cert),
                                          "tls_certificate": str(cert), "tls_key": str(key)})
    try:
        patient = _run_one_job(node, "TLS")
    finally:
        node.runner.close(5)
    assert events(patient, "started")[0]["pid"] in cluster.worker_pids()
    assert len(events(patient, "delivered")) == 1


def test_without_an_address_the_node_runs_an_embedded_cluster_and_stops_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RECORD, str(tmp_path))
    before = _children()
    node = ClusterNode(executor_settings={"n_workers": 1})
    try:
        patient = _run_one_job(node, "EMBEDDED")
        workers = _children() - before
    finally:
        node.runner.close(10)
    [run] = events(patient, "started")
    assert run["pid"] in workers and run["pid"] != os.getpid()  # in a worker process of the embedded cluster
    assert len(events(patient, "delivered")) == 1
    assert not [pid for pid in workers if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
