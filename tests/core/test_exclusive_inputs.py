"""Exclusive inputs, patient_started and arrival order: what an input that fetches its own images builds on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.grinders import ListGrinder
from dicomnode.extension.inputs import AbstractInput
from dicomnode.net import Address
from dicomnode.server.pipeline_tree import PipelineTree
from dicomnode.server.storage import InstanceStore


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    image_grinder = ListGrinder()


class OldCT(AbstractInput):
    """Takes CT images dated before 2026, away from the other inputs; records its starts."""

    required_values = {"Modality": "CT", "StudyDate": lambda date: str(date) < "20260101"}
    exclusive = True
    starts: list[tuple[str, str, Any]] = []

    def patient_started(self, dataset: Dataset, patient_key: str, node: Any) -> None:
        type(self).starts.append((patient_key, str(dataset.SOPInstanceUID), node))


class Exploding(AbstractInput):
    required_values = {"Modality": "MR"}

    def patient_started(self, dataset: Dataset, patient_key: str, node: Any) -> None:
        raise RuntimeError("bug in user code")


def _image(date: str) -> Dataset:
    return synthetic_series(patient_id="P", slices=1, rows=4, columns=4, study_date=date)[0]


def test_an_image_an_exclusive_input_accepts_goes_to_it_alone() -> None:
    tree = PipelineTree({"today": CT, "old": OldCT})
    tree.add_image("P", _image("20260301"))
    assert tree.add_image("P", _image("20250101")) == ["old"]
    assert tree["P"].inputs["today"].images == 1
    assert tree["P"].inputs["old"].images == 1


def test_images_no_exclusive_input_accepts_go_to_every_accepting_input() -> None:
    class AlsoCT(CT):
        pass

    tree = PipelineTree({"a": CT, "b": AlsoCT, "old": OldCT})
    assert tree.add_image("P", _image("20260301")) == ["a", "b"]


def test_patient_started_is_called_once_with_the_first_image_and_the_node() -> None:
    OldCT.starts = []
    node = object()
    tree = PipelineTree({"today": CT, "old": OldCT}, node=node)  # type: ignore[arg-type]
    first, second = _image("20260301"), _image("20260301")
    tree.add_image("P", first)
    tree.add_image("P", second)
    assert OldCT.starts == [("P", str(first.SOPInstanceUID), node)]


def test_an_image_only_an_exclusive_input_takes_does_not_start_the_patient() -> None:
    OldCT.starts = []
    tree = PipelineTree({"today": CT, "old": OldCT})
    tree.add_image("P", _image("20250101"))
    assert OldCT.starts == []
    today = _image("20260301")
    tree.add_image("P", today)
    assert OldCT.starts == [("P", str(today.SOPInstanceUID), None)]


def test_images_of_an_exclusive_input_do_not_change_whom_the_job_answers_to() -> None:
    scanner = Address("127.0.0.1", 11112, "SCANNER")
    tree = PipelineTree({"today": CT, "old": OldCT}, known_endpoints={"SCANNER": scanner})
    tree.add_image("P", _image("20260301"), calling_aet="SCANNER")
    tree.add_image("P", _image("20250101"), calling_aet="PACS")
    assert tree["P"].calling_aet == "SCANNER"
    assert tree["P"].responding_address == scanner


def test_a_failing_patient_started_does_not_refuse_the_image(caplog: Any) -> None:
    tree = PipelineTree({"mr": Exploding})
    mr = synthetic_series(patient_id="P", modality="MR", slices=1, rows=4, columns=4)[0]
    assert tree.add_image("P", mr) == ["mr"]
    assert "failed in patient_started" in caplog.text


def test_stored_instances_come_back_in_the_order_they_were_written(tmp_path: Path) -> None:
    # after a restart the first image of a patient is still the first: it started the patient
    store = InstanceStore(tmp_path, "none")
    uids = ["9.9", "1.1", "5.5"]  # names that sort otherwise
    for uid in uids:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        store.write_encoded("P", uid, meta, b"")
        time.sleep(0.01)
    assert [dcmread(path, force=True).file_meta.MediaStorageSOPInstanceUID for path in store.files()] == uids


def test_a_patients_datasets_come_in_arrival_order_whatever_the_order_of_the_inputs() -> None:
    # a quarantined patient without a data directory is written in this order, and replayed in it
    tree = PipelineTree({"old": OldCT, "today": CT})
    today, prior, later = _image("20260301"), _image("20250101"), _image("20260301")
    for dataset in (today, prior, later):
        tree.add_image("P", dataset)
    assert [ds.SOPInstanceUID for ds in tree["P"].datasets()] == [
        today.SOPInstanceUID, prior.SOPInstanceUID, later.SOPInstanceUID]
