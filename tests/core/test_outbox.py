"""The outbox: undelivered results kept on disk with what the output needs to retry them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.outputs import PipelineOutput
from dicomnode.plugins import OutputSpec, PluginRegistry, Provided
from dicomnode.server.outbox import Outbox, OutboxEntry

DELIVERED: list[OutboxEntry] = []


class Deliverable(PipelineOutput):
    """An output whose outbox retries succeed while ``works`` is True."""

    works = True

    def send(self) -> bool:
        return True

    @classmethod
    def retry_outbox_entry(cls, entry: OutboxEntry) -> bool:
        if cls.works:
            DELIVERED.append(entry)
        return cls.works


def _registry() -> PluginRegistry:
    spec = OutputSpec("test-deliver", Deliverable, "test")
    return PluginRegistry((), {"output": {"test-deliver": Provided(spec, "tests", "tests", "0")}})


def _put(outbox: Outbox, count: int = 2) -> OutboxEntry:
    datasets = synthetic_series(slices=count, rows=4, columns=4)
    return outbox.put("test-deliver", {"destination": "PACS@127.0.0.1:104"}, datasets, "PACS refused")


def test_put_writes_the_datasets_and_a_manifest(tmp_path: Path) -> None:
    entry = _put(Outbox(tmp_path))
    manifest = json.loads((entry.directory / "manifest.json").read_text())
    assert manifest["output"] == "test-deliver"
    assert manifest["settings"] == {"destination": "PACS@127.0.0.1:104"}
    assert manifest["reason"] == "PACS refused" and manifest["attempts"] == 0
    assert len(entry.datasets()) == 2


def test_entries_lists_complete_entries_and_ignores_a_staging_folder(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    first = _put(outbox)
    (tmp_path / ".half-written.tmp").mkdir()
    assert [entry.id for entry in outbox.entries()] == [first.id]


def test_settings_that_are_not_json_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON-serialisable"):
        Outbox(tmp_path).put("x", {"when": object()}, [], "r")


def test_record_attempt_counts_and_keeps_the_latest_reason(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    entry = outbox.record_attempt(_put(outbox), "still down")
    stored = outbox.get(entry.id)
    assert (stored.attempts, stored.reason) == (1, "still down")
    assert stored.last_attempt is not None


def test_retry_hands_the_entry_to_its_output_and_removes_it_when_delivered(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    entry = _put(outbox)
    Deliverable.works = True
    assert outbox.retry(entry, _registry())
    assert DELIVERED[-1].id == entry.id
    assert outbox.entries() == []


def test_a_failed_retry_keeps_the_entry_and_counts_the_attempt(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    entry = _put(outbox)
    Deliverable.works = False
    try:
        assert not outbox.retry(entry, _registry())
    finally:
        Deliverable.works = True
    assert outbox.get(entry.id).attempts == 1


def test_an_entry_of_an_output_nobody_provides_stays_with_the_reason(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    entry = outbox.put("vanished", {}, synthetic_series(slices=1, rows=4, columns=4), "down")
    assert not outbox.retry(entry, _registry())
    assert "vanished" in outbox.get(entry.id).reason


def test_the_base_output_does_not_support_the_outbox(tmp_path: Path) -> None:
    assert PipelineOutput.retry_outbox_entry(_put(Outbox(tmp_path))) is False


def test_an_entry_being_retried_elsewhere_is_left_alone(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    entry = _put(outbox)
    (entry.directory / ".retrying").touch()  # the node's maintenance thread is on it
    delivered_before = len(DELIVERED)
    assert not outbox.retry(entry, _registry())
    assert len(DELIVERED) == delivered_before
    assert outbox.get(entry.id).attempts == 0


def test_a_claim_left_by_a_dead_process_does_not_block_the_entry(tmp_path: Path) -> None:
    import os
    import time

    outbox = Outbox(tmp_path)
    entry = _put(outbox)
    claim = entry.directory / ".retrying"
    claim.touch()
    old = time.time() - 2 * 3600
    os.utime(claim, (old, old))
    Deliverable.works = True
    assert outbox.retry(entry, _registry())
    assert outbox.entries() == []


def test_datasets_built_in_memory_without_file_meta_are_stored_and_left_unchanged(tmp_path: Path) -> None:
    from pydicom import dcmread

    datasets = synthetic_series(slices=2, rows=4, columns=4)
    for dataset in datasets:
        del dataset.file_meta
    entry = Outbox(tmp_path / "outbox").put("dicom", {}, datasets, "peer down")
    stored = [dcmread(entry.directory / name) for name in entry.files]
    assert [str(ds.SOPInstanceUID) for ds in stored] == [str(ds.SOPInstanceUID) for ds in datasets]
    assert all(not hasattr(dataset, "file_meta") for dataset in datasets)
