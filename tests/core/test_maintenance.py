"""The maintenance thread: expiry of stale patients, outbox retries with backoff, quarantine pruning."""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import pytest

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.server.maintenance import MaintenanceThread
from dicomnode.server.nodes import AbstractPipeline


class Never(AbstractInput):
    def validate(self) -> bool:
        return False


class Idle(AbstractPipeline):
    input = {"all": Never}
    study_expiration_days = 1
    outbox_retry_delay = 10
    outbox_max_delay = 100

    def process(self, input_container: InputContainer) -> PipelineOutput:
        return NoOutput()


def test_an_incomplete_patient_older_than_the_expiration_is_dropped_with_its_files(tmp_path: Path) -> None:
    pipeline = Idle(data_directory=tmp_path)
    assert pipeline.store is not None
    for image in synthetic_series(patient_id="OLD", slices=2, rows=4, columns=4):
        path = pipeline.store.write_dataset("OLD", image)
        pipeline.tree.add_image("OLD", image, path)
    pipeline.tree.add_image("NEW", synthetic_series(patient_id="NEW", slices=1, rows=4, columns=4)[0])
    pipeline.tree["OLD"].created -= 2 * 86400
    assert MaintenanceThread(pipeline).expire_patients() == 1
    assert pipeline.tree.keys() == ["NEW"]
    assert list(pipeline.store.files()) == []


def test_outbox_entries_back_off_exponentially_up_to_the_maximum(tmp_path: Path) -> None:
    pipeline = Idle(data_directory=tmp_path)
    assert pipeline.outbox is not None
    entry = pipeline.outbox.put("none", {}, [], "down")
    thread = MaintenanceThread(pipeline)
    assert not thread.is_due(entry, entry.created + 9)
    assert thread.is_due(entry, entry.created + 10)
    tried = attrs.evolve(entry, attempts=2, last_attempt=entry.created)
    assert not thread.is_due(tried, entry.created + 39) and thread.is_due(tried, entry.created + 40)
    many = attrs.evolve(entry, attempts=20, last_attempt=entry.created)
    assert thread.is_due(many, entry.created + 100)


def test_a_due_outbox_entry_is_retried_and_its_attempt_recorded(tmp_path: Path, clean_registry: None) -> None:
    pipeline = Idle(data_directory=tmp_path, outbox_retry_delay=0.01)
    assert pipeline.outbox is not None
    pipeline.outbox.put("none", {}, synthetic_series(slices=1, rows=4, columns=4), "down")
    time.sleep(0.02)
    assert MaintenanceThread(pipeline).retry_outbox() == 0  # NoOutput cannot retry: the entry stays
    assert pipeline.outbox.entries()[0].attempts == 1


def test_quarantine_entries_past_the_retention_are_pruned(tmp_path: Path) -> None:
    pipeline = Idle(data_directory=tmp_path, quarantine_retention_days=1)
    assert pipeline.quarantine is not None
    entry = pipeline.quarantine.put("P", reason="r", datasets=synthetic_series(slices=1, rows=4, columns=4))
    assert MaintenanceThread(pipeline).prune_quarantine() == 0
    record = entry.directory / "reason.json"
    record.write_text(record.read_text().replace(str(entry.created), str(entry.created - 2 * 86400)))
    assert MaintenanceThread(pipeline).prune_quarantine() == 1


def test_the_thread_runs_its_chores_periodically_until_stopped(tmp_path: Path) -> None:
    pipeline = Idle(data_directory=tmp_path, maintenance_interval=0.05)
    pipeline.tree.add_image("OLD", synthetic_series(patient_id="OLD", slices=1, rows=4, columns=4)[0])
    pipeline.tree["OLD"].created -= 2 * 86400
    thread = MaintenanceThread(pipeline)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while "OLD" in pipeline.tree and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        thread.stop()
    assert "OLD" not in pipeline.tree
    assert not thread.is_alive()


@pytest.mark.parametrize("setting", ["maintenance_interval", "outbox_retry_delay"])
def test_a_non_positive_interval_is_refused(setting: str) -> None:
    from dicomnode.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=setting):
        Idle(**{setting: 0})


def test_a_patient_restored_at_start_ages_from_its_stored_files(tmp_path: Path) -> None:
    import os

    from dicomnode.server.storage import InstanceStore

    store = InstanceStore(tmp_path)
    two_days_ago = time.time() - 2 * 86400
    for image in synthetic_series(patient_id="STALE", slices=2, rows=4, columns=4):
        path = store.write_dataset("STALE", image)
        os.utime(path, (two_days_ago, two_days_ago))
    store.close()
    with Idle(data_directory=tmp_path, ip="127.0.0.1", port=0, maintenance_interval=0.05) as node:
        assert node.wait_for_restore(10)
        deadline = time.monotonic() + 5
        while "STALE" in node.tree and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "STALE" not in node.tree
    assert list(InstanceStore(tmp_path).files()) == []
