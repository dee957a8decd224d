"""LazyDataset: a DICOM file on disk that behaves like a pydicom Dataset, read on first use."""

from __future__ import annotations

import copy
import pickle
import threading
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from dicomnode.dicom.lazy import LazyDataset, read_dataset, write_dataset
from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.errors import InvalidDatasetError


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    return write_series(synthetic_series(slices=1, rows=8, columns=6, patient_id="LAZY1"), tmp_path)[0]


def test_creating_one_reads_nothing(tmp_path: Path) -> None:
    dataset = LazyDataset(tmp_path / "not-written-yet.dcm")
    assert not dataset.is_loaded
    assert dataset.path == tmp_path / "not-written-yet.dcm"


def test_it_is_a_pydicom_dataset(ct_file: Path) -> None:
    assert isinstance(LazyDataset(ct_file), Dataset)


def test_keyword_access_reads_the_file(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert dataset.PatientID == "LAZY1"
    assert dataset.is_loaded


def test_tag_and_keyword_item_access(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert dataset[0x00100020].value == "LAZY1"
    assert dataset["PatientID"].value == "LAZY1"
    assert dataset.get("Modality") == "CT"
    assert dataset.get("PatientWeight", "absent") == "absent"


def test_membership_and_iteration(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert "PatientID" in LazyDataset(ct_file)
    assert "PatientWeight" not in dataset
    eager = dcmread(ct_file)
    assert [element.tag for element in dataset] == [element.tag for element in eager]
    assert len(dataset) == len(eager)


def test_file_meta_and_pixel_bytes_match_the_file(ct_file: Path) -> None:
    dataset, eager = LazyDataset(ct_file), dcmread(ct_file)
    assert dataset.file_meta.TransferSyntaxUID == eager.file_meta.TransferSyntaxUID
    assert dataset.PixelData == eager.PixelData
    assert len(dataset.PixelData) == 8 * 6 * 2


def test_a_missing_keyword_is_an_attribute_error(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    with pytest.raises(AttributeError):
        _ = dataset.PatientWeight
    assert not hasattr(dataset, "PatientWeight")


def test_it_equals_the_eagerly_read_dataset(ct_file: Path) -> None:
    assert LazyDataset(ct_file) == dcmread(ct_file)
    assert dcmread(ct_file) == LazyDataset(ct_file)


def test_unload_forgets_and_the_next_use_reads_the_file_again(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert dataset.PatientID == "LAZY1"
    changed = dcmread(ct_file)
    changed.PatientID = "CHANGED"
    changed.save_as(ct_file)
    assert dataset.PatientID == "LAZY1"  # still the contents read before
    dataset.unload()
    assert not dataset.is_loaded
    assert dataset.PatientID == "CHANGED"


def test_unload_drops_changes_made_in_memory(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    dataset.PatientID = "IN-MEMORY"
    dataset.unload()
    assert dataset.PatientID == "LAZY1"


def test_repr_does_not_load(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert "not loaded" in repr(dataset)
    assert not dataset.is_loaded


def test_threads_asking_at_once_share_one_read(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    barrier = threading.Barrier(16)
    seen: list[int] = []

    def read() -> None:
        barrier.wait()
        seen.append(id(dataset.PixelData))

    threads = [threading.Thread(target=read) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # a second read of the file would have produced a second bytes object
    assert len(seen) == 16 and len(set(seen)) == 1


def test_pickling_an_unloaded_dataset_sends_only_the_path(ct_file: Path) -> None:
    data = pickle.dumps(LazyDataset(ct_file))
    assert len(data) < 1000
    restored = pickle.loads(data)
    assert not restored.is_loaded
    assert restored.PatientID == "LAZY1"


def test_pickling_a_loaded_dataset_keeps_its_changes(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    dataset.PatientID = "CHANGED"
    restored = pickle.loads(pickle.dumps(dataset))
    assert restored.is_loaded
    assert restored.PatientID == "CHANGED"
    assert restored.path == ct_file


def test_a_deep_copy_is_independent(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    dataset.load()
    duplicate = copy.deepcopy(dataset)
    duplicate.PatientID = "COPY"
    assert dataset.PatientID == "LAZY1"
    assert isinstance(duplicate, LazyDataset)


def test_save_as_writes_the_contents(ct_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.dcm"
    LazyDataset(ct_file).save_as(target)
    assert dcmread(target).PatientID == "LAZY1"


def test_a_file_that_is_not_dicom_is_a_clear_error_on_first_use(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    dataset = LazyDataset(text)
    with pytest.raises(InvalidDatasetError, match=r"notes\.txt is not a DICOM file"):
        _ = dataset.PatientID


def test_a_missing_file_is_file_not_found_on_first_use(tmp_path: Path) -> None:
    dataset = LazyDataset(tmp_path / "gone.dcm")
    with pytest.raises(FileNotFoundError):
        _ = dataset.PatientID


def test_read_dataset_refuses_a_truncated_file(ct_file: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(ct_file.read_bytes()[:-20])
    with pytest.raises(InvalidDatasetError, match=r"truncated.*\(7FE0,0010\) should hold 96 bytes"):
        read_dataset(truncated)


def test_write_dataset_gives_an_in_memory_dataset_a_transfer_syntax(tmp_path: Path) -> None:
    dataset = synthetic_series(slices=1, rows=2, columns=2)[0]
    del dataset.file_meta
    path = write_dataset(dataset, tmp_path / "a" / "b.dcm")
    assert dcmread(path).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert [p.name for p in path.parent.iterdir()] == ["b.dcm"]  # no temporary file left
