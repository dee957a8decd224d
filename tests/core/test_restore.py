"""Restore behind the listen: a node with a backlog answers at once and restores its data directory after.

Each test seeds a data directory, then opens a node whose restore waits at a
gate before a chosen file (the ``before_file`` hook of
:class:`~dicomnode.server.restore.Restore`), so what happens *during* the
restore is observed without timing: C-ECHO, C-STOREs, readiness checks,
the health endpoint and a close.
"""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import require_peer
from dcmtk import dcmtk_env, storescu
from node import CT, RecordingNode, read_jobs, wait_until, write_patient
from pydicom import dcmread

from dicomnode.server.restore import Restore
from dicomnode.server.storage import InstanceStore

ECHOSCU = "/usr/bin/echoscu"


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    require_peer("dcmtk")


class Gate:
    """Stops the restore before its file number ``at`` (0: the first) until :meth:`open`."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.files = 0
        self.reached = threading.Event()
        self._open = threading.Event()

    def __call__(self, path: Path) -> None:
        if self.files == self.at:
            self.reached.set()
            assert self._open.wait(20), "the test never opened the gate"
        self.files += 1

    def open(self) -> None:
        self._open.set()


class GatedNode(RecordingNode):
    gate: Gate | None = None

    def _listed_restore(self) -> Restore | None:
        restore = super()._listed_restore()
        if restore is not None and self.gate is not None:
            restore.before_file = self.gate
        return restore

    def close(self) -> None:
        if self.gate is not None:
            self.gate.open()  # a closing node's restore stops at the next file
        super().close()


def _seed(data: Path, source: Path, patient: str, slices: int) -> list[Path]:
    """Store ``slices`` images of ``patient`` in the data directory as a node had; return the originals."""
    files = write_patient(source / patient, patient, slices=slices)
    store = InstanceStore(data)
    for path in files:
        store.write_dataset(patient, dcmread(path))
    store.close()
    return files


def _send(port: int, paths: list[Path]) -> None:
    result = storescu(port, paths, called_aet="TESTNODE")
    assert result.returncode == 0, result.stdout + result.stderr


def _echo(port: int) -> bool:
    done = subprocess.run([ECHOSCU, "-to", "5", "-aec", "TESTNODE", "127.0.0.1", str(port)], env=dcmtk_env(),
                          capture_output=True, timeout=20)
    return done.returncode == 0


def _opened(gate: Gate, **settings: object) -> GatedNode:
    node = GatedNode(**settings)
    node.gate = gate
    node.open(blocking=False)
    assert gate.reached.wait(10)
    return node


def test_the_node_answers_c_echo_while_its_restore_runs(tmp_path: Path, jobs_record: Path, ct_expected: type[CT]) -> None:
    ct_expected.expected = 100
    _seed(tmp_path / "data", tmp_path, "P1", 4)
    gate = Gate(at=0)
    node = _opened(gate, data_directory=tmp_path / "data")
    try:
        assert node.restoring == (0, 4)
        assert _echo(node.port)
        assert node.tree_restored == 0 and "P1" not in node.tree
        gate.open()
        assert node.wait_for_restore(10)
        assert node.restoring is None and node.tree_restored == 4
    finally:
        node.close()


def test_an_instance_sent_again_during_the_restore_is_held_once_the_new_copy(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT]) -> None:
    ct_expected.expected = 6
    files = _seed(tmp_path / "data", tmp_path, "P1", 4)
    more = write_patient(tmp_path / "more", "P1", slices=6)[4:]  # the same series, slices 5 and 6
    gate = Gate(at=2)  # two stored images restored, two still to read
    node = _opened(gate, data_directory=tmp_path / "data")
    try:
        _send(node.port, files[2:] + more)  # the two not yet restored come again, and the rest
        assert wait_until(lambda: "P1" in node.tree and node.tree["P1"].images == 6, timeout=10)
        # six distinct images are held, but two stored copies are unread: no job yet
        assert node.check_ready(["P1"]) == 0 and read_jobs(jobs_record) == []
        assert node.waiting()["P1"] == "its stored images are being restored"
        live = {path.name for path in node.tree["P1"].paths}
        gate.open()
        assert node.wait_for_restore(10)
        assert wait_until(lambda: read_jobs(jobs_record), timeout=10) and node.wait_for_jobs(10)
        restore = node._restore
        assert restore is not None and (restore.restored, restore.superseded) == (2, 2)
    finally:
        node.close()
    jobs = read_jobs(jobs_record)
    assert len(jobs) == 1 and len(jobs[0]["uids"]) == 6  # type: ignore[arg-type]
    assert len(live) == 6  # the two first restored and the four received
    # every file of the patient went with its job, the superseded stored copies too
    assert list(InstanceStore(tmp_path / "data").files()) == []


def test_a_patient_being_restored_starts_no_job_until_every_image_is_back(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT]) -> None:
    ct_expected.expected = 3  # valid from three images: a job started early would get four of the six
    _seed(tmp_path / "data", tmp_path, "DISK", 6)
    fresh = write_patient(tmp_path / "fresh", "FRESH", slices=3)
    gate = Gate(at=4)
    node = _opened(gate, data_directory=tmp_path / "data", stable_time=0.05)
    try:
        assert node.check_ready(["DISK"]) == 0
        _send(node.port, fresh)  # a new patient does not wait for the restore
        assert wait_until(lambda: [job["patient"] for job in read_jobs(jobs_record)] == ["FRESH"], timeout=10)
        assert node.check_ready() == 0 and "DISK" in node.tree
        gate.open()
        assert node.wait_for_restore(10)
        assert wait_until(lambda: len(read_jobs(jobs_record)) == 2, timeout=10) and node.wait_for_jobs(10)
    finally:
        node.close()
    jobs = read_jobs(jobs_record)
    assert [job["patient"] for job in jobs] == ["FRESH", "DISK"]
    assert len(jobs[1]["uids"]) == 6  # type: ignore[arg-type]
    assert jobs[1]["calling_aet"] == "RESTORED"


def test_a_close_during_the_restore_stops_it_and_the_next_start_restores_everything(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT]) -> None:
    ct_expected.expected = 8
    _seed(tmp_path / "data", tmp_path, "P1", 8)
    gate = Gate(at=3)
    node = _opened(gate, data_directory=tmp_path / "data")
    node.close()
    restore = node._restore
    assert restore is not None and restore.wait(0) and not restore.complete
    assert restore.restored <= 4 and read_jobs(jobs_record) == []
    assert len(list(InstanceStore(tmp_path / "data").files())) == 8  # a restore only reads
    with RecordingNode(data_directory=tmp_path / "data") as again:
        assert again.wait_for_restore(10) and again.tree_restored == 8
        assert wait_until(lambda: read_jobs(jobs_record), timeout=10) and again.wait_for_jobs(10)
    assert len(read_jobs(jobs_record)[0]["uids"]) == 8  # type: ignore[arg-type]


def _health(node: RecordingNode) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{node.operations.admin_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_health_status_and_metrics_say_restoring_until_the_restore_ends(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT]) -> None:
    ct_expected.expected = 100
    _seed(tmp_path / "data", tmp_path, "P1", 3)
    gate = Gate(at=1)
    node = _opened(gate, data_directory=tmp_path / "data", admin_port=0)
    try:
        assert _health(node) == (503, {"status": "restoring", "restored": 1, "of": 3})
        status = node.status()["node"]
        assert status["listening"] and not status["ready"]
        assert status["restoring"] == {"restored": 1, "of": 3}
        from dicomnode.server.status import format_status

        assert "restoring (1 of 3 instances)" in format_status(node.status())
        gate.open()
        assert node.wait_for_restore(10)
        code, answer = _health(node)
        assert code == 200 and answer["status"] == "ok"
        assert node.status()["node"]["ready"] and node.status()["node"]["restoring"] is None
    finally:
        node.close()


def test_the_metrics_and_the_page_say_restoring(tmp_path: Path, jobs_record: Path, ct_expected: type[CT]) -> None:
    pytest.importorskip("prometheus_client", reason="the metrics need the dicomnode[metrics] extra")
    ct_expected.expected = 100
    _seed(tmp_path / "data", tmp_path, "P1", 3)
    gate = Gate(at=1)
    node = _opened(gate, data_directory=tmp_path / "data", admin_port=0)
    try:
        exposition = node.operations.metrics_text()
        assert exposition is not None
        text = exposition[0].decode()
        assert "dicomnode_ready 0.0" in text and "dicomnode_restore_pending_instances 2.0" in text
        assert "restoring (1 of 3 instances)" in node.operations.page()
        gate.open()
        assert node.wait_for_restore(10)
        exposition = node.operations.metrics_text()
        assert exposition is not None
        text = exposition[0].decode()
        assert "dicomnode_ready 1.0" in text and "dicomnode_restore_pending_instances 0.0" in text
    finally:
        node.close()


def test_an_unreadable_stored_file_is_logged_and_left_and_the_rest_is_restored(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT], caplog: pytest.LogCaptureFixture) -> None:
    ct_expected.expected = 100
    _seed(tmp_path / "data", tmp_path, "P1", 3)
    broken = tmp_path / "data" / "incoming" / "P1" / "broken.dcm"
    broken.write_bytes(b"not DICOM at all")
    with RecordingNode(data_directory=tmp_path / "data") as node:
        assert node.wait_for_restore(10)
        assert node.tree_restored == 3 and node.tree["P1"].images == 3
        assert node.restoring is None
    assert "cannot read stored instance broken.dcm" in caplog.text
    assert broken.exists()


def test_a_node_that_fails_to_open_does_not_wait_for_a_restore_that_never_started(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT]) -> None:
    import socket

    ct_expected.expected = 100
    _seed(tmp_path / "data", tmp_path, "P1", 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        node = RecordingNode(data_directory=tmp_path / "data", port=taken.getsockname()[1])
        with pytest.raises(OSError):
            node.open(blocking=False)
    assert node.wait_for_restore(0) and node.wait_for_jobs(5)
    assert len(list(InstanceStore(tmp_path / "data").files())) == 2
