"""The patient history: what the node did, in the data directory, and ``dicomnode history``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import Dataset

from dicomnode.cli import main
from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, OutboxEntry, PipelineOutput
from dicomnode.net import send_datasets
from dicomnode.plugins import OutputSpec, PluginRegistry, Provided
from dicomnode.server.history import History, HistoryEvent, parse_since
from dicomnode.server.logs import pseudonym, read_secret
from dicomnode.server.maintenance import MaintenanceThread
from dicomnode.server.nodes import AbstractPipeline
from dicomnode.server.stores import DataDirectory


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    minimum_images = 3


class Counted(PipelineOutput):
    """Delivers its datasets nowhere, and says where that is."""

    def __init__(self, datasets: list[Dataset]) -> None:
        self.datasets = datasets

    def outgoing_datasets(self) -> list[Dataset]:
        return self.datasets

    def describe_destination(self) -> str:
        return "ARCHIVE@127.0.0.1:4242"

    def send(self) -> bool:
        return True


class Journaled(AbstractPipeline):
    ae_title = "JOURNAL"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT}
    maintenance_thread = False
    log_level = "WARNING"

    def process(self, input_container: InputContainer) -> PipelineOutput:
        if input_container.patient_key.startswith("FAIL"):
            raise RuntimeError("the model ran out of memory")
        return Counted(list(input_container.datasets["CT"])[:2])


def _send(node: AbstractPipeline, patient: str, slices: int, ae_title: str = "SCANNER") -> None:
    assert send_datasets(node.address, synthetic_series(patient_id=patient, slices=slices, rows=8, columns=8),
                         ae_title=ae_title).ok


def _kinds(history: History, patient: str) -> list[str]:
    return [event.kind for event in history.events(patient)]


def test_a_patient_that_arrives_in_two_associations_has_its_whole_story(tmp_path: Path) -> None:
    with Journaled(data_directory=tmp_path) as node:
        _send(node, "PAT1", 2)
        _send(node, "PAT1", 1)
        assert node.wait_for_jobs(30)
    history = DataDirectory(tmp_path).history
    events = history.events("PAT1")
    assert [event.kind for event in events] == ["received", "held", "received", "job started", "delivered",
                                                "job done"]
    received = events[0]
    assert received.details["calling_aet"] == "SCANNER" and received.details["called_aet"] == "JOURNAL"
    assert received.details["peer"].startswith("127.0.0.1:")
    assert received.details["series"][0]["modality"] == "CT" and received.details["series"][0]["images"] == 2
    assert "2 images in 1 series received from SCANNER" in received.summary
    assert events[1].summary == "incomplete: 2 images; waiting for CT: at least 3 images, has 2"
    assert events[1].details["inputs"] == [{"name": "CT", "images": 2, "complete": False,
                                            "rule": "at least 3 images"}]
    assert events[4].summary == "output 0:Counted delivered 2 instances to ARCHIVE@127.0.0.1:4242"
    done = events[5]
    assert done.job_id == events[3].job_id and set(done.details["stages"]) == {"grind", "process", "outputs"}
    assert "its images are deleted" in done.summary


def test_a_failed_job_is_recorded_with_its_stage_and_reason_then_its_quarantine_and_retry(tmp_path: Path) -> None:
    with Journaled(data_directory=tmp_path) as node:
        _send(node, "FAIL1", 3)
        assert node.wait_for_jobs(30)
        [entry] = node.quarantine.list()  # type: ignore[union-attr]
        assert not node.quarantine.retry(entry.id, node)  # type: ignore[union-attr]
    events = DataDirectory(tmp_path).history.events("FAIL1")
    assert [event.kind for event in events] == ["received", "job started", "job failed", "quarantined", "retried"]
    assert events[2].summary.endswith("failed at process after " + events[2].summary.split(" after ")[1])
    assert "process raised RuntimeError: the model ran out of memory" in events[2].summary
    assert events[3].details["entry"] == entry.id and events[3].details["failed"] is True
    assert "failed again" in events[4].summary


def test_the_outbox_and_a_closed_quarantine_entry_are_recorded_from_the_command_line_too(tmp_path: Path) -> None:
    class Later(PipelineOutput):
        def send(self) -> bool:
            return True

        @classmethod
        def retry_outbox_entry(cls, entry: OutboxEntry) -> bool:
            return True

    data = DataDirectory(tmp_path)  # as the command line opens one: it records its own history
    entry = data.outbox.put("later", {}, synthetic_series(slices=1, rows=4, columns=4), "the PACS is down",
                            patient_key="OUT1", job_id="J1")
    data.quarantine.put("OUT1", reason="waiting for the outbox", job_id="J1", pending_outbox=[entry.id],
                        failed=False, datasets=synthetic_series(slices=1, rows=4, columns=4))
    registry = PluginRegistry((), {"output": {"later": Provided(OutputSpec("later", Later, "test"), "t", "t", "0")}})
    assert data.retry_outbox(entry, registry)
    events = data.history.events("OUT1")
    assert [event.kind for event in events] == ["quarantined", "outbox retried", "quarantine closed"]
    assert events[1].summary == f"outbox entry {entry.id} delivered by output 'later'"


def test_an_expired_patient_and_one_left_at_close_are_recorded(tmp_path: Path) -> None:
    with Journaled(data_directory=tmp_path, study_expiration_days=1.0) as node:
        _send(node, "OLD", 1)
        _send(node, "LEFT", 1)
        node.tree["OLD"].created -= 3 * 86400
        assert MaintenanceThread(node).expire_patients() == 1
    history = DataDirectory(tmp_path).history
    assert _kinds(history, "OLD") == ["received", "held", "expired"]
    assert history.events("OLD")[-1].summary == "expired after 1 days incomplete: 1 image deleted"
    assert _kinds(history, "LEFT") == ["received", "held", "held"]
    assert history.events("LEFT")[-1].summary.startswith("incomplete at close, kept in the data directory")
    with Journaled(data_directory=tmp_path) as node:
        assert node.wait_for_restore(10)
    assert _kinds(history, "LEFT")[-2] == "restored"


def test_events_older_than_the_retention_are_pruned(tmp_path: Path) -> None:
    node = Journaled(data_directory=tmp_path, history_retention_days=30.0)
    history = node.data.history  # type: ignore[union-attr]
    old, new = time.time() - 31 * 86400, time.time() - 29 * 86400
    history.append([HistoryEvent(old, "P", "received", "old"), HistoryEvent(new, "P", "received", "new")])
    assert MaintenanceThread(node).prune_history() == 1
    assert [event.summary for event in history.events("P")] == ["new"]


def test_instances_given_to_the_node_directly_are_gathered_into_one_event(tmp_path: Path) -> None:
    with Journaled(data_directory=tmp_path) as node:
        for dataset in synthetic_series(patient_id="API1", slices=2, rows=8, columns=8):
            assert node.ingest(dataset, calling_aet="PACS", kind="c-get").ok
        node.events.flush()
    [received, *_] = DataDirectory(tmp_path).history.events("API1")
    assert received.summary == "2 images received by c-get from PACS"


def test_a_history_that_cannot_be_written_does_not_stop_the_node(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "history.sqlite3").mkdir()  # a folder where the file should be: SQLite cannot open it
    with caplog.at_level(logging.ERROR, logger="dicomnode"), Journaled(data_directory=tmp_path) as node:
        _send(node, "GOES1", 3)
        _send(node, "GOES2", 3)
        assert node.wait_for_jobs(30)
        assert node.jobs_succeeded == 2
    errors = [record for record in caplog.records if "cannot write the history" in record.getMessage()]
    assert len(errors) == 1  # once, not at every event


def test_parse_since_takes_durations_words_and_dates() -> None:
    now = time.mktime((2026, 12, 5, 12, 0, 0, 0, 0, -1))
    assert parse_since("30min", now) == now - 1800
    assert parse_since("2d", now) == now - 2 * 86400
    assert parse_since("today", now) == time.mktime((2026, 12, 5, 0, 0, 0, 0, 0, -1))
    assert parse_since("yesterday", now) == time.mktime((2026, 12, 4, 0, 0, 0, 0, 0, -1))
    assert parse_since("2026-12-01T08:00", now) == time.mktime((2026, 12, 1, 8, 0, 0, 0, 0, -1))
    with pytest.raises(ValueError, match="--since must be a duration ago"):
        parse_since("last tuesday", now)


# --- dicomnode history --------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_command_prints_a_patients_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Journaled(data_directory=tmp_path) as node:
        _send(node, "PAT9", 3)
        assert node.wait_for_jobs(30)
    status, out, _ = _cli(capsys, "history", "PAT9", "-d", tmp_path)
    lines = out.splitlines()
    assert status == 0 and lines[0] == "history of patient PAT9: 4 event(s)"
    assert [line.split()[2] for line in lines[1:]] == ["received", "job", "delivered", "job"]
    status, out, _ = _cli(capsys, "history", "PAT9", "-d", tmp_path, "--json")
    assert [event["kind"] for event in json.loads(out)] == ["received", "job started", "delivered", "job done"]
    status, out, _ = _cli(capsys, "history", "-d", tmp_path, "--since", "1h")
    assert status == 0 and "(node)" in out and "PAT9" in out


def test_the_command_finds_a_patient_by_the_pseudonym_in_the_log(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with Journaled(data_directory=tmp_path, log_patient_keys="pseudonym") as node:
        _send(node, "SECRET7", 3)
        assert node.wait_for_jobs(30)
    label = pseudonym("SECRET7", read_secret(tmp_path, create=False))  # type: ignore[arg-type]
    status, out, _ = _cli(capsys, "history", label, "-d", tmp_path)
    assert status == 0 and out.startswith("history of patient SECRET7: 4 event(s)")


def test_the_command_says_which_patients_it_knows_and_when_there_is_no_history(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _cli(capsys, "history", "-d", tmp_path)
    assert status == 1 and "no history in" in err and "does not exist yet" in err
    with Journaled(data_directory=tmp_path) as node:
        _send(node, "KNOWN", 1)
    status, _, err = _cli(capsys, "history", "NOBODY", "-d", tmp_path)
    assert status == 1 and "no events of patient 'NOBODY'" in err and "patients with events: KNOWN" in err
    status, _, err = _cli(capsys, "history", "-d", tmp_path / "typo")
    assert status == 1 and "the folder does not exist" in err
    status, _, err = _cli(capsys, "history", "-d", tmp_path, "--since", "soon")
    assert status == 1 and "--since must be a duration ago" in err


def test_the_command_reads_the_history_while_the_node_writes_it(tmp_path: Path) -> None:
    with Journaled(data_directory=tmp_path) as node:
        _send(node, "LIVE", 1)
        done = subprocess.run([sys.executable, "-m", "dicomnode", "history", "LIVE", "-d", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
        _send(node, "LIVE", 2)
        assert node.wait_for_jobs(30)
    assert done.returncode == 0, done.stderr
    assert "received" in done.stdout and "held" in done.stdout
    assert _kinds(DataDirectory(tmp_path).history, "LIVE")[-1] == "job done"


def test_no_output_leaves_a_delivered_event_without_a_destination(tmp_path: Path) -> None:
    class Nothing(Journaled):
        def process(self, input_container: InputContainer) -> PipelineOutput:
            return NoOutput()

    with Nothing(data_directory=tmp_path) as node:
        _send(node, "NONE1", 3)
        assert node.wait_for_jobs(30)
    delivered = DataDirectory(tmp_path).history.events("NONE1", kinds=["delivered"])[0]
    assert delivered.summary == "output 0:none delivered 0 instances"
