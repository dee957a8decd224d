"""Receiving processes (``receiving_processes = N``): real peers into a node whose associations run in N processes.

Each network test opens a :class:`node.RecordingNode` in this process with
two (or one) receiving processes and sends with DCMTK or pynetdicom. The
node serves its first association itself and hands the next to the
processes while it does: most tests first open a *keeper* association that
holds the node's own slot (:func:`_keep`), so that what they send runs in
the processes. Which
process served an association is read from the node's log: a receiving
process's log records are written by the node prefixed with
``[receiving process N]``, and pynetdicom logs "Accepting Association" in
the process that runs the association.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import free_port, require_peer
from dcmtk import DCMTK, dcmtk_env, storescu
from dcmtk import acknowledged as storescu_acknowledged
from hostile import association_request
from node import CT, RECORD, RecordingNode, read_jobs, wait_until, write_patient
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomnode.dicom.encoded import encoded_instance
from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.errors import ConfigurationError
from dicomnode.extension.handles import Source
from dicomnode.server.events import AssociationSummary, NodeListener
from dicomnode.server.ingest import Examined, examine
from dicomnode.server.nodes import AbstractThreadedPipeline
from dicomnode.server.processes import ReceivingProcesses, pack_header, unpack_header

pytestmark = pytest.mark.timeout(90)

ACCEPTED = "Accepting Association"
SUPPORT = Path(__file__).parents[1] / "support"


# --- helpers -----------------------------------------------------------------------------------------


class SlowFilterNode(RecordingNode):
    """Takes ``delay`` s per image in ``filter`` (in the node's process): an association lasts a while."""

    delay = 0.05

    def filter(self, dataset: Dataset) -> bool:
        time.sleep(type(self).delay)
        return True


class SlightlySlowFilterNode(SlowFilterNode):
    delay = 0.02


class PickyNode(RecordingNode):
    """Rejects the images numbered 2 and 5 in ``filter``."""

    def filter(self, dataset: Dataset) -> bool:
        return int(dataset.InstanceNumber) not in (2, 5)


class Summaries(NodeListener):
    def __init__(self) -> None:
        self.seen: list[AssociationSummary] = []

    def association(self, summary: AssociationSummary) -> None:
        self.seen.append(summary)


def _handoff(node: RecordingNode) -> ReceivingProcesses:
    server = node._server
    assert server is not None and isinstance(server.handoff, ReceivingProcesses)
    return server.handoff


def _pids(node: RecordingNode) -> list[int]:
    return [entry.process.pid for entry in _handoff(node)._processes]


def _end_left(processes: list[subprocess.Popen[bytes]]) -> None:
    """Kill (by PID) any receiving process the node's close left running, however the test ended."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _keep(port: int, calling: str = "CLIENT") -> Any:
    """An idle association that holds the node's own slot, so that the next ones go to the processes.

    pynetdicom's "Accepting Association" line is not logged for it: :func:`_served` lists the others only.
    """
    acse = logging.getLogger("pynetdicom.acse")
    level = acse.level
    acse.setLevel(logging.WARNING)
    try:
        keeper = _associate(port, calling)
    finally:
        acse.setLevel(level)
    assert keeper.is_established
    return keeper


@contextmanager
def _opened(tmp_path: Path, node_class: type[RecordingNode] = RecordingNode, processes: int = 2, *,
            keeper: bool = True, **settings: Any) -> Iterator[RecordingNode]:
    """A node with ``processes`` receiving processes, every one ready (and with ``keeper`` an association that
    holds the node's own slot); closed, and its processes gone, after."""
    require_peer("dcmtk")
    node = node_class(data_directory=tmp_path / "data", lazy_storage=True, receiving_processes=processes,
                      log_level="INFO", **settings)
    node.open(blocking=False)
    started = [entry.process for entry in _handoff(node)._processes]
    held = None
    try:
        assert len(started) == processes and _handoff(node).ready == processes
        if keeper:
            held = _keep(node.port, *settings.get("require_calling_aet", ())[:1])
        yield node
    finally:
        if held is not None and held.is_established:
            held.release()
        node.close()
        _end_left(started)


def _served(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Who ran each association the log shows, in order: "1", "2"… (a receiving process) or "node"."""
    who = []
    for record in caplog.records:
        message = record.getMessage()
        if message.endswith(ACCEPTED):
            who.append(message.split("]")[0].rsplit(" ", 1)[1] if message.startswith("[receiving process ") else "node")
    return who


def _assert_served(caplog: pytest.LogCaptureFixture, expected: list[str], *, any_order: bool = False) -> None:
    """Wait (the processes' log records reach the node a moment after their peer's answer) for :func:`_served`."""

    def seen() -> list[str]:
        return sorted(_served(caplog)) if any_order else _served(caplog)

    wait_until(lambda: seen() == expected, timeout=5)
    assert seen() == expected


def _written_aside(data: Path) -> list[Path]:
    """Files a receiving process wrote aside and nobody moved into place or removed (the empty ones are spares)."""
    spare = data / "incoming" / ".spare"
    return [path for path in spare.iterdir() if path.stat().st_size] if spare.is_dir() else []


def _uids_on_disk(data: Path) -> set[str]:
    """The SOP Instance UIDs of the whole, readable files in the data directory's incoming folder."""
    return {str(dcmread(path).SOPInstanceUID) for path in (data / "incoming").rglob("*.dcm")}


def _statuses(debug_output: str) -> dict[str, int]:
    """The status storescu (``-d``) received for each file, by file stem (its SOP Instance UID)."""
    statuses, current = {}, None
    for line in debug_output.splitlines():
        if "Sending file:" in line:
            current = Path(line.split("Sending file:")[1].strip()).stem
        elif "DIMSE Status" in line and current:
            statuses[current] = int(line.split(":")[2].strip(), 16)
    return statuses


def _storescu_verbose(port: int, files: list[Path], calling_aet: str = "SCANNER") -> subprocess.Popen[str]:
    return subprocess.Popen([str(DCMTK / "storescu"), "-v", "-aet", calling_aet, "-aec", "TESTNODE", "127.0.0.1",
                             str(port), *map(str, files)], env=dcmtk_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _associate(port: int, calling: str = "CLIENT") -> Any:
    client = AE(ae_title=calling)
    client.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    return client.associate("127.0.0.1", port, ae_title="TESTNODE")


# --- the associations run in the receiving processes ------------------------------------------------


def test_two_concurrent_storescu_associations_are_served_by_the_two_processes(
        tmp_path: Path, jobs_record: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    first = write_patient(tmp_path / "A", "PA", slices=6)
    second = write_patient(tmp_path / "B", "PB", slices=6)
    with _opened(tmp_path, SlowFilterNode) as node:
        senders = [_storescu_verbose(node.port, first, "SCANNER1"), _storescu_verbose(node.port, second, "SCANNER2")]
        outputs = [sender.communicate(timeout=30)[0] for sender in senders]
        assert [sender.returncode for sender in senders] == [0, 0], outputs
        assert wait_until(lambda: len(read_jobs(jobs_record)) == 2, timeout=15) and node.wait_for_jobs(10)
        # each association ran in its own receiving process, none in the node's
        _assert_served(caplog, ["1", "2"], any_order=True)
        assert storescu_acknowledged(outputs[0]) == {path.stem for path in first}
        jobs = {job["patient"]: job for job in read_jobs(jobs_record)}
        assert jobs["PA"]["uids"] == sorted(path.stem for path in first)
        assert jobs["PB"]["uids"] == sorted(path.stem for path in second)
        assert (jobs["PA"]["calling_aet"], jobs["PB"]["calling_aet"]) == ("SCANNER1", "SCANNER2")
        assert node.jobs_succeeded == 2
        assert list((tmp_path / "data" / "incoming").rglob("*.dcm")) == []


def test_a_c_echo_is_answered_by_a_receiving_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with _opened(tmp_path) as node:
        done = subprocess.run([str(DCMTK / "echoscu"), "-to", "5", "-aec", "TESTNODE", "127.0.0.1", str(node.port)],
                              env=dcmtk_env(), capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, done.stdout + done.stderr
        _assert_served(caplog, ["1"])


def test_one_patient_sent_in_two_concurrent_associations_gets_one_job_with_every_image(
        tmp_path: Path, jobs_record: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    files = write_patient(tmp_path / "P", "SPLIT", slices=6)
    with _opened(tmp_path, SlowFilterNode) as node:
        senders = [_storescu_verbose(node.port, files[:3], "SCANNER1"), _storescu_verbose(node.port, files[3:], "SCANNER2")]
        outputs = [sender.communicate(timeout=30)[0] for sender in senders]
        assert [sender.returncode for sender in senders] == [0, 0], outputs
        _assert_served(caplog, ["1", "2"], any_order=True)  # one half in each process, at once
        assert wait_until(lambda: read_jobs(jobs_record), timeout=15) and node.wait_for_jobs(10)
        time.sleep(0.3)  # a second job would have shown up by now
        [job] = read_jobs(jobs_record)
        assert job["patient"] == "SPLIT" and job["uids"] == sorted(path.stem for path in files)
        assert list((tmp_path / "data" / "incoming").rglob("*.dcm")) == []


def test_large_and_deflated_instances_are_written_as_they_were_sent(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ct_expected.expected = 100  # no job: the files stay in the data directory to be compared
    large = write_series(synthetic_series(slices=2, rows=256, columns=256, patient_id="BIG"), tmp_path / "big")
    small = write_series(synthetic_series(slices=2, rows=64, columns=64, patient_id="DEFLATED"), tmp_path / "small")
    with _opened(tmp_path, maximum_pdu_size=16384) as node:
        # 128 KiB of pixels each: many PDUs of 16 KiB
        sent = storescu(node.port, large, called_aet="TESTNODE", extra=["-v"])
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "Max Send PDV: 16372" in sent.stdout + sent.stderr
        deflated = storescu(node.port, small, called_aet="TESTNODE", extra=["--propose-deflated", "-v"])
        assert deflated.returncode == 0, deflated.stdout + deflated.stderr
        assert "Deflated Explicit VR Little Endian" in deflated.stdout + deflated.stderr
        _assert_served(caplog, ["1", "1"])
        assert wait_until(lambda: len(list((tmp_path / "data" / "incoming").rglob("*.dcm"))) == 4, timeout=5)
        stored = {}
        for path in (tmp_path / "data" / "incoming").rglob("*.dcm"):
            dataset = dcmread(path)
            stored[str(dataset.SOPInstanceUID)] = dataset
        for path in large + small:
            original = dcmread(path)
            copy = stored[path.stem]
            assert copy.PixelData == original.PixelData and copy.PatientID == original.PatientID
            assert {element.tag for element in copy} == {element.tag for element in original}
        assert {str(stored[path.stem].file_meta.TransferSyntaxUID) for path in small} == {"1.2.840.10008.1.2.1.99"}
        assert node.tree["BIG"].images == 2 and node.tree["DEFLATED"].images == 2


# --- the node's decisions apply ------------------------------------------------------------------------


def test_a_filter_rejection_with_the_discard_policy_answers_success_and_keeps_no_file(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ct_expected.expected = 100  # no job: what the node holds stays in the data directory to be looked at
    files = write_patient(tmp_path / "P", "PICKY", slices=6)
    kept = {str(dcmread(path).SOPInstanceUID) for path in files if dcmread(path).InstanceNumber not in (2, 5)}
    with _opened(tmp_path, PickyNode, rejection_policy="discard") as node:
        sender = _storescu_verbose(node.port, files)
        output = sender.communicate(timeout=30)[0]
        assert sender.returncode == 0, output
        assert storescu_acknowledged(output) == {path.stem for path in files}
        _assert_served(caplog, ["1"])
        assert wait_until(lambda: "PICKY" in node.tree and node.tree["PICKY"].images == 4, timeout=5)
        assert {str(dcmread(path).SOPInstanceUID) for path in node.tree["PICKY"].paths} == kept
        assert _uids_on_disk(tmp_path / "data") == kept
        assert len(list((tmp_path / "data" / "incoming").rglob("*.dcm"))) == 4
        assert _written_aside(tmp_path / "data") == []  # the rejected ones' files were removed


def test_a_filter_rejection_with_the_failure_policy_is_a_0xC003_storescu_sees_and_keeps_no_file(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ct_expected.expected = 100
    files = write_patient(tmp_path / "P", "PICKY", slices=6)
    rejected = {path.stem for path in files if dcmread(path).InstanceNumber in (2, 5)}
    with _opened(tmp_path, PickyNode, rejection_policy="failure") as node:
        done = subprocess.run([str(DCMTK / "storescu"), "-d", "--no-halt", "-aet", "SCANNER", "-aec", "TESTNODE", "127.0.0.1",
                               str(node.port), *map(str, files)], env=dcmtk_env(), capture_output=True, text=True,
                              timeout=30)
        statuses = _statuses(done.stdout + done.stderr)
        assert statuses == {path.stem: 0xC003 if path.stem in rejected else 0x0000 for path in files}
        _assert_served(caplog, ["1"])
        assert wait_until(lambda: "PICKY" in node.tree and node.tree["PICKY"].images == 4, timeout=5)
        on_disk = _uids_on_disk(tmp_path / "data")
        assert on_disk == {path.stem for path in files} - rejected
        assert len(list((tmp_path / "data" / "incoming").rglob("*.dcm"))) == 4
        assert _written_aside(tmp_path / "data") == []


def test_a_damaged_dataset_is_refused_0xC001_by_the_process_and_counted(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ct_expected.expected = 100
    good, damaged = write_series(synthetic_series(slices=2, rows=16, columns=16, patient_id="CUT"), tmp_path / "cut")
    damaged.write_bytes(damaged.read_bytes()[:-100])  # the pixel data's length runs past the end
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)  # the file is sent as it is
    summaries = Summaries()
    with _opened(tmp_path) as node:
        node.events.add(summaries)
        assoc = _associate(node.port)
        assert assoc.is_established
        try:
            answers = [assoc.send_c_store(path) for path in (good, damaged)]
        finally:
            assoc.release()
        assert [int(answer.Status) for answer in answers] == [0x0000, 0xC001]
        assert "announces" in str(answers[1].ErrorComment)
        _assert_served(caplog, ["1"])
        assert wait_until(lambda: len(summaries.seen) == 1, timeout=5)
        [summary] = summaries.seen
        assert dict(summary.refused) == {0xC001: 1} and summary.stored == 1
        assert _uids_on_disk(tmp_path / "data") == {good.stem}


def test_every_refusal_in_a_process_gets_its_status_keeps_no_file_and_is_counted(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ct_expected.expected = 100
    good, no_key, mr = synthetic_series(slices=3, rows=16, columns=16, patient_id="MIXED")
    del no_key.PatientID
    mr.Modality = "MR"
    big = synthetic_series(slices=1, rows=64, columns=64, patient_id="MIXED")[0]  # 8 KiB of pixels
    summaries = Summaries()
    with _opened(tmp_path, rejection_policy="failure", maximum_dataset_size=4096) as node:
        node.events.add(summaries)
        assoc = _associate(node.port)
        assert assoc.is_established
        try:
            answers = [assoc.send_c_store(dataset) for dataset in (good, no_key, mr, big)]
        finally:
            assoc.release()
        assert [int(answer.Status) for answer in answers] == [0x0000, 0xC002, 0xC004, 0xA700]
        assert "no input accepts it" in str(answers[2].ErrorComment)
        assert str(answers[3].ErrorComment).startswith("dataset too large")
        _assert_served(caplog, ["1"])
        assert wait_until(lambda: len(summaries.seen) == 1, timeout=5)
        [summary] = summaries.seen
        assert dict(summary.refused) == {0xC002: 1, 0xC004: 1, 0xA700: 1} and summary.stored == 1
        assert _uids_on_disk(tmp_path / "data") == {str(good.SOPInstanceUID)}


def test_tls_associations_stay_in_the_node_s_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import ssl

    from certificates import make_certificate

    from dicomnode.net import echo

    caplog.set_level(logging.INFO)
    cert, key = make_certificate(tmp_path, "node")
    with _opened(tmp_path, tls_certificate=cert, tls_key=key, keeper=False) as node:
        context = ssl.create_default_context(cafile=str(cert))
        client = AE(ae_title="CLIENT")
        client.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        first = client.associate("127.0.0.1", node.port, ae_title="TESTNODE", tls_args=(context, "127.0.0.1"))
        try:
            assert first.is_established  # the node's own slot is taken: a plain association would be handed over
            assert echo(node.address, tls=context, timeout=5) == 0x0000
            _assert_served(caplog, ["node", "node"])
        finally:
            first.release()


def test_only_the_allowed_calling_ae_titles_are_served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with _opened(tmp_path, require_calling_aet=["SCANNER"]) as node:
        files = write_patient(tmp_path / "P", "AET", slices=1)
        refused = storescu(node.port, files, called_aet="TESTNODE", calling_aet="STRANGER")
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stdout + refused.stderr
        assert _uids_on_disk(tmp_path / "data") == set()
        accepted = storescu(node.port, files, called_aet="TESTNODE", calling_aet="SCANNER")
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        _assert_served(caplog, ["1"])
        assert wait_until(lambda: _uids_on_disk(tmp_path / "data") == {files[0].stem}, timeout=5)


# --- a receiving process that dies ------------------------------------------------------------------


def test_an_idle_process_killed_is_logged_and_the_next_associations_are_served(
        tmp_path: Path, jobs_record: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with _opened(tmp_path) as node:
        first, second = _pids(node)
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: _handoff(node).ready == 1, timeout=5)
        errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
        assert any(f"receiving process 1 (pid {first}) stopped" in message for message in errors), errors
        for patient in ("K1", "K2"):
            result = storescu(node.port, write_patient(tmp_path / patient, patient), called_aet="TESTNODE")
            assert result.returncode == 0, result.stdout + result.stderr
        _assert_served(caplog, ["2", "2"])
        # with none left the node's own process receives
        os.kill(second, signal.SIGKILL)
        assert wait_until(lambda: _handoff(node).ready == 0, timeout=5)
        result = storescu(node.port, write_patient(tmp_path / "K3", "K3"), called_aet="TESTNODE")
        assert result.returncode == 0, result.stdout + result.stderr
        _assert_served(caplog, ["2", "2", "node"])
        assert wait_until(lambda: len(read_jobs(jobs_record)) == 3, timeout=15)
        assert sorted((job["patient"], len(job["uids"])) for job in read_jobs(jobs_record)) == [  # type: ignore[arg-type]
            ("K1", 6), ("K2", 6), ("K3", 6)]


def test_a_process_killed_during_a_send_loses_no_acknowledged_instance(
        tmp_path: Path, jobs_record: Path, ct_expected: type[CT], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    slices = 40
    ct_expected.expected = slices
    files = write_patient(tmp_path / "series", "KILLED", slices=slices)
    with _opened(tmp_path, SlightlySlowFilterNode, processes=1, fsync="instance") as node:
        [pid] = _pids(node)
        sender = _storescu_verbose(node.port, files)
        assert wait_until(lambda: "KILLED" in node.tree and node.tree["KILLED"].images >= 8, interval=0.005)
        os.kill(pid, signal.SIGKILL)
        output = sender.communicate(timeout=30)[0]
        assert sender.returncode != 0, "the association must end with its process"
        acknowledged = storescu_acknowledged(output)
        assert 0 < len(acknowledged) < slices, "the kill must land while the series arrives"
        assert wait_until(lambda: _handoff(node).ready == 0, timeout=5)
        # every instance storescu got success for is held by the node and whole on disk
        held = {str(dcmread(path).SOPInstanceUID) for path in node.tree["KILLED"].paths}
        assert acknowledged <= held
        assert acknowledged <= _uids_on_disk(tmp_path / "data")
        assert read_jobs(jobs_record) == []
        errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
        assert any(f"receiving process 1 (pid {pid}) stopped" in message for message in errors), errors
        # the rest is sent again (now into the node's own process): one job with the whole series
        result = storescu(node.port, files, called_aet="TESTNODE")
        assert result.returncode == 0, result.stdout + result.stderr
        assert wait_until(lambda: read_jobs(jobs_record), timeout=15) and node.wait_for_jobs(10)
        time.sleep(0.5)  # a second job would have shown up by now
        jobs = read_jobs(jobs_record)
        assert len(jobs) == 1 and jobs[0]["uids"] == sorted(path.stem for path in files)


def test_the_slots_of_a_killed_process_s_associations_are_freed(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with _opened(tmp_path, maximum_associations_per_address=2, keeper=False) as node:
        first, _ = _pids(node)
        held = [_associate(node.port) for _ in range(2)]
        try:
            assert all(assoc.is_established for assoc in held)
            _assert_served(caplog, ["node", "1"])  # the node serves the first itself
            os.kill(first, signal.SIGKILL)
            assert wait_until(lambda: not held[1].is_established, timeout=5)  # its peer sees the end
            assert node._server is not None
            assert wait_until(lambda: node._server.associations == 1, timeout=5)  # type: ignore[union-attr]
            again = _associate(node.port)  # the freed slot, in the process left
            assert again.is_established
            held.append(again)
            _assert_served(caplog, ["node", "1", "2"])
            refused = _associate(node.port)
            assert refused.is_rejected
        finally:
            for assoc in held:
                if assoc.is_established:
                    assoc.release()


def test_what_the_processes_wrote_is_restored_after_a_restart(tmp_path: Path, jobs_record: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    files = write_patient(tmp_path / "P", "LATER", slices=6)
    with _opened(tmp_path) as node:
        result = storescu(node.port, files[:3], called_aet="TESTNODE")
        assert result.returncode == 0, result.stdout + result.stderr
        assert wait_until(lambda: "LATER" in node.tree and node.tree["LATER"].images == 3, timeout=5)
    _assert_served(caplog, ["1"])
    assert _uids_on_disk(tmp_path / "data") == {path.stem for path in files[:3]}  # kept at close
    with _opened(tmp_path) as node:
        assert node.wait_for_restore(10) and node.tree["LATER"].images == 3
        result = storescu(node.port, files[3:], called_aet="TESTNODE")
        assert result.returncode == 0, result.stdout + result.stderr
        assert wait_until(lambda: read_jobs(jobs_record), timeout=15) and node.wait_for_jobs(10)
    _assert_served(caplog, ["1", "1"])
    [job] = read_jobs(jobs_record)
    assert job["uids"] == sorted(path.stem for path in files)
    assert list((tmp_path / "data" / "incoming").rglob("*.dcm")) == []


# --- close ----------------------------------------------------------------------------------------------


def test_close_returns_within_its_bound_with_silent_associations_and_the_processes_are_gone(
        tmp_path: Path) -> None:
    require_peer("dcmtk")
    node = RecordingNode(data_directory=tmp_path / "data", lazy_storage=True, receiving_processes=2,
                         close_receive_timeout=1.0)
    node.open(blocking=False)
    pids = _pids(node)
    children = [entry.process for entry in _handoff(node)._processes]
    keeper = _keep(node.port)
    silent = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    stalled = None
    try:
        # a raw peer that associates and then sends nothing
        silent.sendall(association_request("TESTNODE", "SILENT"))
        silent.settimeout(5)
        header = silent.recv(6, socket.MSG_WAITALL)
        assert header[:1] == b"\x02"  # A-ASSOCIATE-AC
        assert len(silent.recv(struct.unpack(">I", header[2:])[0], socket.MSG_WAITALL)) == struct.unpack(
            ">I", header[2:])[0]
        # and one that stops in the middle of a PDU
        stalled = _associate(node.port)
        assert stalled.is_established
        stalled.dul.socket.socket.sendall(bytes.fromhex("0400000010000000") + b"\x00" * 64)
        handoff = _handoff(node)
        assert wait_until(lambda: sorted(len(entry.open) for entry in handoff._processes) == [1, 1], timeout=5)
        started = time.monotonic()
        node.close()
        assert time.monotonic() - started < 1.0 + 5.0
        assert not any(psutil.pid_exists(pid) for pid in pids)
        rest = b""
        while piece := silent.recv(4096):  # the node ended the association: the connection closes
            rest += piece
        assert rest[:1] in (b"", b"\x07")  # nothing, or an A-ABORT
    finally:
        silent.close()
        keeper.kill()
        if stalled is not None:
            stalled.kill()
        node.close()
        _end_left(children)


def test_close_kills_a_receiving_process_that_does_not_answer(tmp_path: Path) -> None:
    require_peer("dcmtk")
    node = RecordingNode(data_directory=tmp_path / "data", lazy_storage=True, receiving_processes=2,
                         close_receive_timeout=0.5)
    node.open(blocking=False)
    children = [entry.process for entry in _handoff(node)._processes]
    keeper = _keep(node.port)
    assoc = _associate(node.port)
    try:
        assert assoc.is_established and [len(entry.open) for entry in _handoff(node)._processes] == [1, 0]
        os.kill(children[0].pid, signal.SIGSTOP)  # it holds an association and will never answer "stop"
        started = time.monotonic()
        node.close()
        # its associations get close_receive_timeout, its threads 2 s, its exit 3 s; then it is killed
        assert time.monotonic() - started < 0.5 + 5.0 + 2.0
        assert [child.poll() for child in children] == [-signal.SIGKILL, 0]
        assert wait_until(lambda: not assoc.is_established, timeout=5)
    finally:
        assoc.kill()
        keeper.kill()
        node.close()
        _end_left(children)


def test_the_receiving_processes_end_with_a_node_killed_by_sigkill(tmp_path: Path) -> None:
    from hostile import node_process

    require_peer("dcmtk")
    with node_process(tmp_path, data_directory=str(tmp_path / "data"), lazy_storage=True, receiving_processes=2,
                      close_receive_timeout=1.0) as node:
        assert wait_until(lambda: len(node.psutil.children()) == 2, timeout=20)
        children = node.psutil.children()
        assert all(any("dicomnode.server.processes" in part for part in child.cmdline()) for child in children)
        assert wait_until(lambda: "listening as TESTNODE" in node.output(), timeout=20)
        keeper = _keep(node.port)
        assoc = _associate(node.port)
        try:
            assert assoc.is_established  # held open in a receiving process (the keeper holds the node's slot)
            os.kill(node.process.pid, signal.SIGKILL)
            node.process.wait(10)
            gone, alive = psutil.wait_procs(children, timeout=1.0 + 5.0)
            for child in alive:  # never leave one behind
                child.kill()
            assert alive == [] and len(gone) == 2
            assert wait_until(lambda: not assoc.is_established, timeout=5)
        finally:
            assoc.kill()
            keeper.kill()


def test_ctrl_c_stops_the_node_and_its_processes_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole process group: the node closes its processes, none dies of it."""
    require_peer("dcmtk")
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text("\n".join([
        "import sys", f"sys.path.insert(0, {str(SUPPORT)!r})", "import node",
        "class EdgeNode(node.RecordingNode):", "    log_level = 'INFO'",
        f"    data_directory = {str(tmp_path / 'data')!r}", "    lazy_storage = True", "    receiving_processes = 2",
    ]) + "\n")
    port = free_port()
    log = tmp_path / "node.log"
    with open(log, "wb") as output:  # a session of its own: the test's process group is not signalled
        process = subprocess.Popen([str(Path(sys.executable).parent / "dicomnode"), "run", f"{pipeline}:EdgeNode",
                                    "--port", str(port)], stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, RECORD: str(tmp_path / "jobs.jsonl")}, start_new_session=True)
    try:
        node = psutil.Process(process.pid)
        assert wait_until(lambda: len(node.children()) == 2 and "listening as TESTNODE" in log.read_text(),
                          timeout=20)
        children = node.children()
        result = storescu(port, write_patient(tmp_path / "P", "CTRLC"), called_aet="TESTNODE")
        assert result.returncode == 0, result.stdout + result.stderr
        assert wait_until(lambda: read_jobs(tmp_path / "jobs.jsonl"), timeout=15)
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(20) == 0
        _, alive = psutil.wait_procs(children, timeout=5)
        assert alive == []
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        assert " ERROR " not in text, text
        assert "stopped (SIGINT)" in text
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


# --- the limits hold across processes ------------------------------------------------------------------


def test_maximum_associations_per_address_counts_the_associations_in_the_processes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with _opened(tmp_path, maximum_associations_per_address=2, keeper=False) as node:
        held = [_associate(node.port) for _ in range(2)]
        try:
            assert all(assoc.is_established for assoc in held)
            _assert_served(caplog, ["node", "1"])  # one in the node's process, one in a receiving process
            third = _associate(node.port)
            assert third.is_rejected and not third.is_established
        finally:
            for assoc in held:
                assoc.release()
        _assert_served(caplog, ["node", "1"])  # the third never reached pynetdicom
        assert node._server is not None
        assert wait_until(lambda: node._server.associations == 0, timeout=5)  # type: ignore[union-attr]
        again = _associate(node.port)
        assert again.is_established
        again.release()
        _assert_served(caplog, ["node", "1", "node"])  # alone again: the node serves it itself


# --- configuration --------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{}, {"data_directory": "data"}, {"lazy_storage": False, "data_directory": "data"}])
def test_receiving_processes_needs_a_data_directory_and_lazy_storage(tmp_path: Path, settings: dict[str, Any]) -> None:
    if "data_directory" in settings:
        settings = {**settings, "data_directory": tmp_path / "data"}
    with pytest.raises(ConfigurationError, match=r"'receiving_processes'.*'data_directory'.*'lazy_storage'"):
        RecordingNode(receiving_processes=2, **settings)


@pytest.mark.parametrize("value", [-1, 65, True, "2", 1.5])
def test_a_bad_receiving_processes_value_is_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"'receiving_processes' must be a whole number from 0 to 64") as error:
        RecordingNode(data_directory=tmp_path / "data", lazy_storage=True, receiving_processes=value)
    assert repr(value) in str(error.value)


class ThreadedNode(AbstractThreadedPipeline, RecordingNode):
    pass


def test_a_threaded_pipeline_refuses_receiving_processes_at_open(tmp_path: Path) -> None:
    node = ThreadedNode(data_directory=tmp_path / "data", lazy_storage=True, receiving_processes=2)
    children = {child.pid for child in psutil.Process().children()}
    with pytest.raises(ConfigurationError, match=r"'receiving_processes'.*AbstractThreadedPipeline"):
        node.open(blocking=False)
    node.close()
    assert {child.pid for child in psutil.Process().children()} <= children


def test_a_packed_header_unpacks_with_every_value_vr_and_the_character_set() -> None:
    image = synthetic_series(slices=1, rows=8, columns=8, patient_id="PACK")[0]
    image.SpecificCharacterSet = "ISO_IR 100"
    image.PatientName = "Müller^Jörg"
    image.InstitutionName = "Hôpital"
    image.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    image.PixelSpacing = [0.5, 0.75]
    item = Dataset()
    item.CodeValue = "113691"
    image.ProcedureCodeSequence = [item]
    encoded, syntax, meta = encoded_instance(image)
    examined = examine(encoded, syntax, meta, Source("SCANNER"), lazy=True, maximum_inflated_size=1 << 20,
                       patient_identifier_tag=0x00100020)
    assert isinstance(examined, Examined)
    try:
        header = examined.dataset
        unpacked = unpack_header(pickle.loads(pickle.dumps(pack_header(header))))  # as it travels
    finally:
        examined.raw.release()
    assert unpacked.original_encoding == header.original_encoding == (False, True)
    assert unpacked.original_character_set == header.original_character_set == ["latin_1"]
    assert [element.tag for element in unpacked] == [element.tag for element in header]
    for element in header:
        assert (unpacked[element.tag].VR, unpacked[element.tag].value) == (element.VR, element.value), element.tag
    assert "PixelData" not in unpacked  # a header: the pixels stay in the file
    assert str(unpacked.PatientName) == "Müller^Jörg" and unpacked.InstitutionName == "Hôpital"
    assert unpacked.ImageType == ["ORIGINAL", "PRIMARY", "AXIAL"] and unpacked.PixelSpacing == [0.5, 0.75]
    assert unpacked.ProcedureCodeSequence[0].CodeValue == "113691"
    assert unpacked.PatientID == "PACK" and unpacked.SOPInstanceUID == image.SOPInstanceUID
