"""The node end to end: DCMTK storescu sends to a running pipeline over real sockets.

Each test starts its own node on a free loopback port (``port = 0``) and, where
it matters, checks what the jobs received through the records the pipelines
in ``tests/support/node.py`` write.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import require_peer
from dcmtk import storescu
from node import CT, FailingNode, RecordingNode, read_jobs, wait_until, write_patient

from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.server.nodes import AbstractQueuedPipeline, AbstractThreadedPipeline
from dicomnode.server.storage import InstanceStore


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    require_peer("dcmtk")


def _send(port: int, paths: list[Path] | Path, **options: object) -> None:
    result = storescu(port, paths if isinstance(paths, list) else [paths], called_aet="TESTNODE", **options)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_full_series_is_processed_exactly_once(tmp_path: Path, jobs_record: Path) -> None:
    files = write_patient(tmp_path / "P1", "P1", slices=6)
    with RecordingNode() as node:
        _send(node.port, tmp_path / "P1")
        assert wait_until(lambda: read_jobs(jobs_record))
        node.wait_for_jobs(10)
        time.sleep(0.2)
    jobs = read_jobs(jobs_record)
    assert len(jobs) == 1
    assert jobs[0]["patient"] == "P1" and jobs[0]["calling_aet"] == "STORESCU"
    assert len(jobs[0]["uids"]) == len(files) == 6  # type: ignore[arg-type]


def test_two_patients_sent_over_concurrent_associations_are_kept_apart(tmp_path: Path, jobs_record: Path,
                                                                       ct_expected: type[CT]) -> None:
    ct_expected.expected = 40
    uids = {}
    for patient in ("ALPHA", "BETA"):
        files = write_patient(tmp_path / patient, patient, slices=40)
        uids[patient] = sorted(path.stem for path in files)
    with RecordingNode() as node:
        senders = [threading.Thread(target=_send, args=(node.port, tmp_path / p)) for p in uids]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert wait_until(lambda: len(read_jobs(jobs_record)) == 2)
    jobs = {job["patient"]: job["uids"] for job in read_jobs(jobs_record)}
    assert jobs == uids


def test_one_patient_over_several_associations_is_completed_by_the_stable_time(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT]) -> None:
    ct_expected.expected = 1  # any image makes the input valid: only the stable time holds the job back
    files = write_patient(tmp_path / "P1", "P1", slices=6)
    with RecordingNode(stable_time=1.0) as node:
        for pair in (files[0:2], files[2:4], files[4:6]):
            _send(node.port, pair)
        assert read_jobs(jobs_record) == []
        assert wait_until(lambda: read_jobs(jobs_record), timeout=10)
        time.sleep(1.5)
    jobs = read_jobs(jobs_record)
    assert len(jobs) == 1 and len(jobs[0]["uids"]) == 6  # type: ignore[arg-type]


def test_without_a_stable_time_each_released_association_is_checked(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT]) -> None:
    ct_expected.expected = 1
    files = write_patient(tmp_path / "P1", "P1", slices=4)
    with RecordingNode() as node:
        _send(node.port, files[:2])
        assert wait_until(lambda: len(read_jobs(jobs_record)) == 1)
        _send(node.port, files[2:])
        assert wait_until(lambda: len(read_jobs(jobs_record)) == 2)
    assert [len(job["uids"]) for job in read_jobs(jobs_record)] == [2, 2]  # type: ignore[arg-type]


def test_an_unknown_calling_ae_title_is_refused_at_association(tmp_path: Path, jobs_record: Path) -> None:
    write_patient(tmp_path / "P1", "P1", slices=6)
    with RecordingNode(require_calling_aet=["SCANNER"]) as node:
        refused = storescu(node.port, [tmp_path / "P1"], called_aet="TESTNODE", calling_aet="INTRUDER")
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stdout + refused.stderr
        assert len(node.tree) == 0
        _send(node.port, tmp_path / "P1", calling_aet="SCANNER")
        assert wait_until(lambda: read_jobs(jobs_record))


def test_a_wrong_called_ae_title_is_refused_when_required(tmp_path: Path) -> None:
    write_patient(tmp_path / "P1", "P1", slices=1)
    with RecordingNode(require_called_aet=True) as node:
        refused = storescu(node.port, [tmp_path / "P1"], called_aet="SOMEONE")
        assert refused.returncode != 0 and "Association Rejected" in refused.stdout + refused.stderr


def test_sockets_of_accepted_associations_have_nagle_switched_off(tmp_path: Path, jobs_record: Path) -> None:
    write_patient(tmp_path / "P1", "P1", slices=6)
    with RecordingNode() as node:
        _send(node.port, tmp_path / "P1")
        assert node._server.nodelay_checked == 1
        assert node._server.nodelay_on == 1


def test_every_job_log_line_names_the_patient_and_the_calling_ae(tmp_path: Path, jobs_record: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    write_patient(tmp_path / "P1", "P1", slices=6)
    with caplog.at_level(logging.INFO, logger="dicomnode.job"), RecordingNode(log_level="INFO") as node:
        _send(node.port, tmp_path / "P1", calling_aet="SCANNER")
        assert wait_until(lambda: read_jobs(jobs_record))
        node.wait_for_jobs(10)
    lines = [r for r in caplog.records if r.name == "dicomnode.job"]
    assert len(lines) >= 2
    for line in lines:
        assert (line.patient_key, line.calling_aet) == ("P1", "SCANNER")  # type: ignore[attr-defined]
        assert line.getMessage().startswith("[patient P1 from SCANNER]")


def test_with_a_data_directory_each_instance_is_stored_before_success(tmp_path: Path, jobs_record: Path,
                                                                     ct_expected: type[CT]) -> None:
    ct_expected.expected = 100
    write_patient(tmp_path / "P1", "P1", slices=6)
    with RecordingNode(data_directory=tmp_path / "data") as node:
        _send(node.port, tmp_path / "P1")
        stored = list(InstanceStore(tmp_path / "data").files())
    assert len(stored) == 6
    assert all(path.parent.name == "P1" for path in stored)


def test_a_successful_job_removes_the_patients_files(tmp_path: Path, jobs_record: Path) -> None:
    write_patient(tmp_path / "P1", "P1", slices=6)
    with RecordingNode(data_directory=tmp_path / "data") as node:
        _send(node.port, tmp_path / "P1")
        assert wait_until(lambda: read_jobs(jobs_record))
        node.wait_for_jobs(10)
    assert list(InstanceStore(tmp_path / "data").files()) == []


def test_a_restart_rebuilds_the_tree_from_the_data_directory(tmp_path: Path, jobs_record: Path) -> None:
    files = write_patient(tmp_path / "P1", "P1", slices=6)
    with RecordingNode(data_directory=tmp_path / "data") as node:
        _send(node.port, files[:4])
    assert read_jobs(jobs_record) == []
    with RecordingNode(data_directory=tmp_path / "data") as node:
        assert node.wait_for_restore(10)
        assert node.tree_restored == 4
        _send(node.port, files[4:])
        assert wait_until(lambda: read_jobs(jobs_record))
    assert len(read_jobs(jobs_record)[0]["uids"]) == 6  # type: ignore[arg-type]


def test_a_patient_complete_on_disk_is_processed_at_start(tmp_path: Path, jobs_record: Path,
                                                         ct_expected: type[CT]) -> None:
    ct_expected.expected = 7
    write_patient(tmp_path / "P1", "P1", slices=6)
    with RecordingNode(data_directory=tmp_path / "data") as node:
        _send(node.port, tmp_path / "P1")
    ct_expected.expected = 6
    with RecordingNode(data_directory=tmp_path / "data") as node:
        assert wait_until(lambda: read_jobs(jobs_record))
        node.wait_for_jobs(10)
    assert len(read_jobs(jobs_record)) == 1


class LazyCheck(AbstractInput):
    def validate(self) -> bool:
        return self.images >= 3


class LazyNode(RecordingNode):
    input = {"CT": LazyCheck}
    lazy_storage = True
    seen: list[tuple[str, int]] = []

    def process(self, input_container: InputContainer) -> PipelineOutput:
        for dataset in input_container.datasets["CT"]:
            type(self).seen.append((type(dataset).__name__, len(dataset.PixelData)))
        return NoOutput()


def test_lazy_storage_hands_process_lazy_datasets_read_from_disk(tmp_path: Path) -> None:
    write_patient(tmp_path / "P1", "P1", slices=3)
    with LazyNode(data_directory=tmp_path / "data") as node:
        _send(node.port, tmp_path / "P1")
        assert wait_until(lambda: len(LazyNode.seen) == 3)
    assert LazyNode.seen == [("LazyDataset", 16 * 16 * 2)] * 3


def test_process_raising_quarantines_the_data_and_the_server_keeps_serving(
        tmp_path: Path, jobs_record: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_patient(tmp_path / "FAIL1", "FAIL1", slices=6)
    write_patient(tmp_path / "GOOD", "GOOD", slices=6)
    with FailingNode(data_directory=tmp_path / "data") as node:
        _send(node.port, tmp_path / "FAIL1")
        assert node.quarantine is not None
        assert wait_until(lambda: node.quarantine.list())  # type: ignore[union-attr]
        _send(node.port, tmp_path / "GOOD")
        assert wait_until(lambda: read_jobs(jobs_record))
        entry = node.quarantine.list()[0]
        assert entry.patient_key == "FAIL1" and "model exploded on FAIL1" in entry.reason
        assert "Traceback" in entry.traceback and "RuntimeError" in entry.traceback
        assert len(entry.paths) == 6
        monkeypatch.setenv("DICOMNODE_TEST_HEAL", "1")
        assert node.quarantine.retry(entry.id, node)
    assert [job["patient"] for job in read_jobs(jobs_record)] == ["GOOD", "FAIL1"]
    assert list(InstanceStore(tmp_path / "data").files()) == []


class Slow(AbstractInput):
    def validate(self) -> bool:
        return self.images >= 2


class QueuedNode(AbstractQueuedPipeline):
    ae_title = "TESTNODE"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": Slow}
    maintenance_thread = False
    log_level = "WARNING"
    spans: list[tuple[str, float, float]] = []

    def process(self, input_container: InputContainer) -> PipelineOutput:
        started = time.monotonic()
        time.sleep(0.3)
        type(self).spans.append((input_container.patient_key, started, time.monotonic()))
        return NoOutput()


def test_a_queued_pipeline_runs_jobs_one_at_a_time_in_arrival_order(tmp_path: Path) -> None:
    patients = ["Q1", "Q2", "Q3"]
    for patient in patients:
        write_patient(tmp_path / patient, patient, slices=2)
    with QueuedNode() as node:
        for patient in patients:
            _send(node.port, tmp_path / patient)
        assert wait_until(lambda: len(QueuedNode.spans) == 3)
    assert [span[0] for span in QueuedNode.spans] == patients
    for before, after in zip(QueuedNode.spans, QueuedNode.spans[1:]):
        assert after[1] >= before[2]  # the next job started after the previous one ended


def test_with_the_process_executor_process_runs_in_a_spawned_process(tmp_path: Path, jobs_record: Path) -> None:
    write_patient(tmp_path / "P1", "P1", slices=6)
    with RecordingNode(executor="process", executor_settings={"directory": tmp_path / "work"}) as node:
        _send(node.port, tmp_path / "P1")
        assert wait_until(lambda: read_jobs(jobs_record), timeout=60)
        node.wait_for_jobs(30)
    job = read_jobs(jobs_record)[0]
    assert job["pid"] != os.getpid()
    assert Path(str(job["cwd"])).parent == tmp_path / "work"
    assert len(job["uids"]) == 6  # type: ignore[arg-type]


def test_a_crashing_processing_process_cannot_take_the_server_down(tmp_path: Path, jobs_record: Path) -> None:
    from node import CrashingNode

    write_patient(tmp_path / "P1", "P1", slices=6)
    write_patient(tmp_path / "P2", "P2", slices=6)
    with CrashingNode(executor="process", executor_settings={"directory": tmp_path / "work"},
                      data_directory=tmp_path / "data") as node:
        _send(node.port, tmp_path / "P1")
        assert node.quarantine is not None
        assert wait_until(lambda: node.quarantine.list(), timeout=60)  # type: ignore[union-attr]
        assert "exited with code 3" in node.quarantine.list()[0].reason
        _send(node.port, tmp_path / "P2")  # still serving
        assert wait_until(lambda: len(node.quarantine.list()) == 2, timeout=60)  # type: ignore[union-attr]


def test_close_finishes_a_job_in_flight(tmp_path: Path) -> None:
    QueuedNode.spans.clear()
    write_patient(tmp_path / "Q1", "Q1", slices=2)
    node = QueuedNode()
    node.open(blocking=False)
    _send(node.port, tmp_path / "Q1")
    assert wait_until(lambda: node.jobs_succeeded + node.jobs_in_flight > 0)
    node.close()
    assert [span[0] for span in QueuedNode.spans] == ["Q1"]


class ThreadedNode(AbstractThreadedPipeline, RecordingNode):
    pass


def test_a_threaded_pipeline_acknowledges_at_once_and_processes_on_its_thread(tmp_path: Path,
                                                                             jobs_record: Path) -> None:
    write_patient(tmp_path / "P1", "P1", slices=6)
    mr = write_patient(tmp_path / "MR", "P1", slices=1, modality="MR")
    with ThreadedNode() as node:
        _send(node.port, mr)  # refused by every input, yet acknowledged: the documented trade-off
        _send(node.port, tmp_path / "P1")
        assert wait_until(lambda: read_jobs(jobs_record))
    assert len(read_jobs(jobs_record)[0]["uids"]) == 6  # type: ignore[arg-type]


def test_a_sender_that_drops_the_connection_still_completes_its_patient(tmp_path: Path, jobs_record: Path) -> None:
    import socket

    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    from dicomnode.dicom.synthetic import synthetic_series

    series = synthetic_series(patient_id="DROP", slices=6, rows=16, columns=16)
    with RecordingNode() as node:
        client = AE(ae_title="DROPPER")
        client.add_requested_context(CTImageStorage)
        assoc = client.associate("127.0.0.1", node.port, ae_title="TESTNODE")
        assert assoc.is_established
        for dataset in series:
            assert assoc.send_c_store(dataset).Status == 0x0000
        assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # no A-RELEASE, no A-ABORT
        assert wait_until(lambda: read_jobs(jobs_record))
        assoc.abort()
    assert read_jobs(jobs_record)[0]["patient"] == "DROP"


def test_lazy_storage_keeps_received_images_unread_in_memory(tmp_path: Path, jobs_record: Path,
                                                            ct_expected: type[CT]) -> None:
    from dicomnode.dicom.lazy import LazyDataset

    ct_expected.expected = 100
    write_patient(tmp_path / "P1", "P1", slices=4)
    with RecordingNode(data_directory=tmp_path / "data", lazy_storage=True) as node:
        _send(node.port, tmp_path / "P1")
        held = node.tree["P1"].datasets()
        assert len(held) == 4
        assert all(isinstance(ds, LazyDataset) and not ds.is_loaded for ds in held)


def test_a_restart_reads_only_headers_and_keeps_pixels_on_disk(tmp_path: Path, jobs_record: Path,
                                                              ct_expected: type[CT]) -> None:
    from dicomnode.dicom.lazy import LazyDataset

    ct_expected.expected = 100
    write_patient(tmp_path / "P1", "P1", slices=4)
    with RecordingNode(data_directory=tmp_path / "data") as node:
        _send(node.port, tmp_path / "P1")
    with RecordingNode(data_directory=tmp_path / "data") as node:
        assert node.wait_for_restore(10)
        held = node.tree["P1"].datasets()
        assert len(held) == 4
        assert all(isinstance(ds, LazyDataset) and not ds.is_loaded for ds in held)


class KeepingNode(RecordingNode):
    kept: list[object] = []

    def process(self, input_container: InputContainer) -> PipelineOutput:
        type(self).kept.extend(input_container.datasets["CT"])
        return NoOutput()


def test_without_lazy_storage_a_restored_job_gets_datasets_that_outlive_their_files(
        tmp_path: Path, ct_expected: type[CT]) -> None:
    KeepingNode.kept.clear()
    ct_expected.expected = 7
    write_patient(tmp_path / "P1", "P1", slices=6)
    with KeepingNode(data_directory=tmp_path / "data") as node:
        _send(node.port, tmp_path / "P1")
    ct_expected.expected = 6
    with KeepingNode(data_directory=tmp_path / "data") as node:
        assert wait_until(lambda: len(KeepingNode.kept) == 6)
        node.wait_for_jobs(10)
    assert list(InstanceStore(tmp_path / "data").files()) == []  # the files are gone …
    assert all(len(ds.PixelData) == 16 * 16 * 2 for ds in KeepingNode.kept)  # type: ignore[attr-defined]


def test_in_memory_the_job_gets_the_pixel_data_exactly_as_sent(tmp_path: Path, jobs_record: Path) -> None:
    from pydicom import dcmread

    KeepingNode.kept.clear()
    files = write_patient(tmp_path / "P1", "P1", slices=6)
    sent = {str(ds.SOPInstanceUID): ds.PixelData for ds in map(dcmread, files)}
    with KeepingNode() as node:
        _send(node.port, tmp_path / "P1")
        assert wait_until(lambda: len(KeepingNode.kept) == 6)
    received = {str(ds.SOPInstanceUID): ds.PixelData for ds in KeepingNode.kept}  # type: ignore[attr-defined]
    assert received == sent


@pytest.mark.parametrize("kind", [RecordingNode, ThreadedNode])
def test_wait_for_jobs_right_after_a_send_returns_once_the_job_has_run(tmp_path: Path, jobs_record: Path,
                                                                       kind: type[RecordingNode]) -> None:
    from dicomnode.dicom.synthetic import synthetic_series
    from dicomnode.net import send_datasets

    with kind() as node:
        for round_ in range(5):
            series = synthetic_series(patient_id=f"W{round_}", slices=6, rows=8, columns=8)
            assert send_datasets(node.address, series).ok
            assert node.wait_for_jobs(20)
            assert node.jobs_succeeded == round_ + 1


class KeepsNothing(AbstractThreadedPipeline):
    """Remembers a weak reference to one image of each job."""

    ae_title = "WEAKNODE"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT}
    maintenance_thread = False
    seen: list[object] = []

    def process(self, input_container: InputContainer) -> PipelineOutput:
        import weakref

        KeepsNothing.seen.append(weakref.ref(input_container.datasets["CT"][0]))
        return NoOutput()


def test_a_finished_jobs_images_are_not_kept_alive_by_the_job_thread_waiting_for_the_next() -> None:
    import gc

    from dicomnode.dicom.synthetic import synthetic_series
    from dicomnode.net import send_datasets

    KeepsNothing.seen.clear()
    with KeepsNothing() as node:
        assert send_datasets(node.address, synthetic_series(patient_id="P1", slices=CT.expected, rows=8,
                                                            columns=8)).ok
        assert node.wait_for_jobs(30) and len(KeepsNothing.seen) == 1
        gc.collect()
        # in memory, a held image is the whole series' pixel data: it must go when its job ends, not when the
        # thread takes the next job (the node's memory between jobs was 2x a series higher for that)
        assert KeepsNothing.seen[0]() is None
