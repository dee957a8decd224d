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


@pytest.mark.parametrize("header_first", [False, True], ids=["nothing read yet", "header read before"])
def test_threads_asking_for_the_pixel_data_at_once_share_one_read(ct_file: Path, header_first: bool) -> None:
    dataset = LazyDataset(ct_file)
    if header_first:
        assert dataset.PatientID == "LAZY1"
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


# -- the header first, the pixel data when asked for ---------------------------------------------

PIXEL_BYTES = 8 * 6 * 2  # the ct_file's PixelData, the last element of the file


def _overwrite_pixels(path: Path, fill: int) -> bytes:
    """Replace the file's pixel bytes in place (same length, same layout) and return them."""
    new = bytes([fill]) * PIXEL_BYTES
    data = path.read_bytes()
    path.write_bytes(data[:-PIXEL_BYTES] + new)
    return new


def test_header_access_leaves_the_pixel_data_in_the_file(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert dataset.PatientID == "LAZY1"
    new = _overwrite_pixels(ct_file, 0xAB)
    # had the header access read the pixel data, the old bytes would come back
    assert dataset.PixelData == new


def test_pixel_data_is_counted_without_being_read(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert "PixelData" in dataset
    assert len(dataset) == len(dcmread(ct_file))
    assert 0x7FE00010 in list(dataset.keys())
    assert dataset.is_loaded and not dataset.pixels_loaded


def test_an_unread_element_is_a_raw_element_without_value_when_kept_deferred(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    raw = dataset.get_item("PixelData", keep_deferred=True)
    assert raw is not None and raw.value is None and raw.length == PIXEL_BYTES
    assert not dataset.pixels_loaded


def test_pixel_data_once_read_stay_in_memory(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    original = dataset.PixelData
    _overwrite_pixels(ct_file, 0xAB)
    assert dataset.pixels_loaded
    assert dataset.PixelData == original


def test_unload_forgets_the_pixel_data_too(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    _ = dataset.PixelData
    new = _overwrite_pixels(ct_file, 0x11)
    dataset.unload()
    assert not dataset.is_loaded and not dataset.pixels_loaded
    assert dataset.PixelData == new


def test_iteration_yields_the_pixel_data_read_when_reached(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    _ = dataset.PatientID
    elements = {element.tag: element.value for element in dataset}
    assert elements[0x7FE00010] == dcmread(ct_file).PixelData
    assert dataset.pixels_loaded


def test_save_as_after_header_access_writes_the_pixel_data(ct_file: Path, tmp_path: Path) -> None:
    dataset = LazyDataset(ct_file)
    dataset.PatientID = "SAVED"
    target = tmp_path / "saved.dcm"
    dataset.save_as(target)
    written = dcmread(target)
    assert written.PatientID == "SAVED"
    assert written.PixelData == dcmread(ct_file).PixelData


def test_a_file_cut_short_after_its_header_was_read_is_a_clear_error_on_pixel_access(
    ct_file: Path,
) -> None:
    dataset = LazyDataset(ct_file)
    assert dataset.PatientID == "LAZY1"
    ct_file.write_bytes(ct_file.read_bytes()[:-20])
    with pytest.raises(InvalidDatasetError, match=r"truncated.*\(7FE0,0010\) should hold 96 bytes"):
        _ = dataset.PixelData


def test_a_file_truncated_in_its_pixel_data_is_refused_on_first_use(ct_file: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(ct_file.read_bytes()[:-20])
    with pytest.raises(InvalidDatasetError, match=r"truncated.*\(7FE0,0010\) should hold 96 bytes"):
        _ = LazyDataset(truncated).PatientID


def test_pickling_a_header_leaves_its_pixel_data_in_the_file(tmp_path: Path) -> None:
    path = write_series(synthetic_series(slices=1, rows=64, columns=64), tmp_path)[0]
    dataset = LazyDataset(path)
    assert dataset.Rows == 64
    data = pickle.dumps(dataset)
    assert len(data) < 64 * 64 * 2  # the header, not the 8 KB of pixels
    restored = pickle.loads(data)
    assert restored.is_loaded and not restored.pixels_loaded
    assert restored.PixelData == dcmread(path).PixelData


def test_a_file_without_pixel_data_is_whole_once_its_header_is_read(tmp_path: Path) -> None:
    dataset = synthetic_series(slices=1, rows=2, columns=2)[0]
    del dataset.PixelData
    path = write_dataset(dataset, tmp_path / "no-pixels.dcm")
    lazy = LazyDataset(path).load()
    assert "PixelData" not in lazy
    assert lazy.pixels_loaded


def test_implicit_vr_pixel_data_is_read_when_asked_for(ct_file: Path, tmp_path: Path) -> None:
    eager = dcmread(ct_file)
    eager.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"  # Implicit VR Little Endian
    path = tmp_path / "implicit.dcm"
    eager.save_as(path, enforce_file_format=True)
    dataset = LazyDataset(path)
    assert dataset.PatientID == "LAZY1" and not dataset.pixels_loaded
    assert dataset.PixelData == eager.PixelData


def test_encapsulated_pixel_data_are_read_when_asked_for(ct_file: Path, tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate

    eager = dcmread(ct_file)
    eager.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"  # RLE Lossless: undefined length
    eager.PixelData = encapsulate([b"\x01\x02\x03\x04" * 10])
    eager["PixelData"].VR = "OB"
    path = tmp_path / "encapsulated.dcm"
    eager.save_as(path, enforce_file_format=True)
    dataset = LazyDataset(path)
    assert dataset.PatientID == "LAZY1" and not dataset.pixels_loaded
    assert dataset.PixelData == eager.PixelData


def test_a_file_replaced_by_another_layout_is_a_clear_error_on_pixel_access(
    ct_file: Path,
) -> None:
    dataset = LazyDataset(ct_file)
    assert dataset.PatientID == "LAZY1"
    longer = dcmread(ct_file)
    longer.StudyDescription = "a description long enough to move the pixel data"
    longer.save_as(ct_file)
    with pytest.raises(InvalidDatasetError, match=r"changed on disk after its header was read"):
        _ = dataset.PixelData


def test_load_reads_the_whole_file_so_the_dataset_outlives_it(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file).load()
    assert dataset.pixels_loaded
    ct_file.unlink()
    assert dataset.PixelData == bytes(dataset.PixelData) and len(dataset.PixelData) == PIXEL_BYTES


def test_unload_pixels_keeps_the_header_and_reads_the_pixel_data_again(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    dataset.PatientID = "IN-MEMORY"
    _ = dataset.PixelData
    new = _overwrite_pixels(ct_file, 0x22)
    dataset.unload_pixels()
    assert dataset.is_loaded and not dataset.pixels_loaded
    assert dataset.PatientID == "IN-MEMORY"  # the header in memory, changes included
    assert dataset.PixelData == new


def test_unload_pixels_on_an_unloaded_dataset_reads_nothing(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    dataset.unload_pixels()
    assert not dataset.is_loaded


def test_a_deflated_file_is_read_whole_on_first_use(ct_file: Path, tmp_path: Path) -> None:
    eager = dcmread(ct_file)
    eager.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
    path = tmp_path / "deflated.dcm"
    eager.save_as(path, enforce_file_format=True)
    dataset = LazyDataset(path)
    assert dataset.PatientID == "LAZY1"
    assert dataset.pixels_loaded  # one compressed stream: no place to come back to for the pixels
    assert dataset.PixelData == eager.PixelData
