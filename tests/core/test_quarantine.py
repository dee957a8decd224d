"""Quarantine: failed jobs kept with reason and traceback, listed, retried, restored, pruned."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.server.nodes import AbstractPipeline
from dicomnode.server.quarantine import Quarantine
from dicomnode.server.storage import InstanceStore


class Anything(AbstractInput):
    def validate(self) -> bool:
        return self.images >= 3


class Counting(AbstractPipeline):
    input = {"all": Anything}
    fails = False

    def post_init(self) -> None:
        self.seen: list[int] = []

    def process(self, input_container: InputContainer) -> PipelineOutput:
        if type(self).fails:
            raise RuntimeError("still broken")
        self.seen.append(len(input_container.datasets["all"]))
        return NoOutput()


def _entry(quarantine: Quarantine, tmp_path: Path, patient: str = "P1") -> str:
    paths = write_series(synthetic_series(patient_id=patient, slices=3, rows=4, columns=4), tmp_path / "src")
    return quarantine.put(patient, reason="process raised RuntimeError: boom", traceback="Traceback …",
                          calling_aet="SCANNER", paths=paths).id


def test_put_moves_the_files_and_records_reason_and_traceback(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    entry = quarantine.get(_entry(quarantine, tmp_path))
    assert len(entry.paths) == 3 and not list((tmp_path / "src").iterdir())
    record = json.loads((entry.directory / "reason.json").read_text())
    assert record["reason"].startswith("process raised RuntimeError")
    assert record["traceback"] == "Traceback …" and record["calling_aet"] == "SCANNER"


def test_list_shows_every_entry_oldest_first(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    first = _entry(quarantine, tmp_path, "P1")
    second = _entry(quarantine, tmp_path, "P2")
    assert [entry.id for entry in quarantine.list()] == [first, second]


def test_an_unknown_id_is_a_lookup_error_listing_the_ids(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    known = _entry(quarantine, tmp_path)
    with pytest.raises(LookupError, match=known):
        quarantine.get("nope")


def test_retry_processes_the_entry_with_a_pipeline_and_removes_it(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    entry_id = _entry(quarantine, tmp_path)
    pipeline = Counting()
    assert quarantine.retry(entry_id, pipeline)
    assert pipeline.seen == [3]
    assert quarantine.list() == []


def test_a_failed_retry_keeps_the_entry_with_the_new_reason(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    entry_id = _entry(quarantine, tmp_path)
    Counting.fails = True
    try:
        assert not quarantine.retry(entry_id, Counting())
    finally:
        Counting.fails = False
    entry = quarantine.get(entry_id)
    assert "still broken" in entry.reason and "RuntimeError" in entry.traceback


def test_restore_puts_the_files_back_into_the_incoming_folder(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    entry_id = _entry(quarantine, tmp_path)
    assert quarantine.restore(entry_id, tmp_path / "data") == 3
    assert len(list(InstanceStore(tmp_path / "data").files())) == 3
    assert quarantine.list() == []


def test_prune_deletes_only_entries_older_than_the_retention(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q")
    old = quarantine.get(_entry(quarantine, tmp_path, "OLD"))
    record = json.loads((old.directory / "reason.json").read_text())
    record["created"] = time.time() - 10 * 86400
    (old.directory / "reason.json").write_text(json.dumps(record))
    young = _entry(quarantine, tmp_path, "YOUNG")
    assert quarantine.prune(7) == [old.id]
    assert [entry.id for entry in quarantine.list()] == [young]
