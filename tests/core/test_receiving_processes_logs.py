"""What a receiving process logs is the node's log: the same levels, and patients named as the node names them."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from conftest import require_peer
from dcmtk import storescu
from node import RecordingNode, write_patient
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomnode.extension.labels import pseudonym
from dicomnode.server.logs import read_secret
from dicomnode.server.processes import ReceivingProcesses

pytestmark = pytest.mark.timeout(60)


def test_a_process_s_storage_error_names_the_patient_by_its_pseudonym(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    require_peer("dcmtk")
    data = tmp_path / "data"
    node = RecordingNode(data_directory=data, lazy_storage=True, receiving_processes=1, log_level="INFO",
                         log_patient_keys="pseudonym")
    caplog.set_level(logging.INFO)
    node.open(blocking=False)
    processes = node._server.handoff if node._server is not None else None
    assert isinstance(processes, ReceivingProcesses) and processes.ready == 1
    keeper = AE(ae_title="KEEPER")
    keeper.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    # the node serves its first association itself: this one holds that slot, so storescu's goes to the process
    held = keeper.associate("127.0.0.1", node.port, ae_title="TESTNODE")
    try:
        assert held.is_established
        # a file where the folder of the files written aside belongs: the process cannot write any instance
        spare = data / "incoming" / ".spare"
        shutil.rmtree(spare, ignore_errors=True)
        spare.write_bytes(b"")
        result = storescu(node.port, write_patient(tmp_path / "in", "SECRETKEY", slices=2), called_aet="TESTNODE")
        assert result.returncode != 0  # storescu stops at the first failure status
    finally:
        held.release()
        node.close()
    secret = read_secret(data, create=False)
    assert secret is not None
    lines = [record.getMessage() for record in caplog.records if "[receiving process 1]" in record.getMessage()]
    stored = [line for line in lines if "cannot store" in line]
    assert stored, lines
    assert all(pseudonym("SECRETKEY", secret) in line for line in stored)
    assert any("refused (0xA700: 1)" in record.getMessage() for record in caplog.records)
    assert not any("SECRETKEY" in record.getMessage() for record in caplog.records)


def test_the_status_and_the_metrics_say_how_many_receiving_processes_take_associations(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client", reason="the metrics need the dicomnode[metrics] extra")
    import os
    import signal
    import urllib.request

    from node import wait_until

    from dicomnode.server.status import format_status

    node = RecordingNode(data_directory=tmp_path / "data", lazy_storage=True, receiving_processes=2,
                         admin_port=0, admin_ip="127.0.0.1")
    node.open(blocking=False)
    processes = node._server.handoff if node._server is not None else None
    assert isinstance(processes, ReceivingProcesses)
    children = [entry.process for entry in processes._processes]

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.operations.admin_port}/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    try:
        status = node.operations.status()
        assert status["node"]["receiving_processes"] == {"ready": 2, "configured": 2}
        assert "receiving processes: 2 of 2 ready" in format_status(status)
        assert "dicomnode_receiving_processes_ready 2.0" in metrics().splitlines()
        os.kill(children[0].pid, signal.SIGKILL)
        assert wait_until(lambda: processes.ready == 1, timeout=10)
        status = node.operations.status()
        assert status["node"]["receiving_processes"] == {"ready": 1, "configured": 2}
        assert "1 of 2 ready (the node receives the rest itself" in format_status(status)
        assert "dicomnode_receiving_processes_ready 1.0" in metrics().splitlines()
    finally:
        node.close()
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    assert "receiving_processes" not in RecordingNode(data_directory=tmp_path / "other").operations.status()["node"]
