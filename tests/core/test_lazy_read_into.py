"""LazyDataset.read_value_into: part of a value still in the file, read straight into the caller's buffer."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.errors import InvalidDatasetError

PIXEL_BYTES = 8 * 6 * 2


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    return write_series(synthetic_series(slices=1, rows=8, columns=6, patient_id="READ1"), tmp_path)[0]


def test_the_bytes_asked_for_are_the_files_and_the_dataset_keeps_none(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    buffer = bytearray(40)

    assert dataset.read_value_into("PixelData", buffer, offset=24) is True

    assert bytes(buffer) == dcmread(ct_file).PixelData[24:64]
    assert not dataset.pixels_loaded


def test_the_whole_value_can_be_read_into_a_memoryview(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    buffer = bytearray(PIXEL_BYTES)

    assert dataset.read_value_into(0x7FE00010, memoryview(buffer))

    assert bytes(buffer) == dcmread(ct_file).PixelData


def test_implicit_vr_files_are_read_the_same_way(ct_file: Path, tmp_path: Path) -> None:
    eager = dcmread(ct_file)
    eager.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"  # Implicit VR Little Endian
    path = tmp_path / "implicit.dcm"
    eager.save_as(path, enforce_file_format=True)
    buffer = bytearray(PIXEL_BYTES)

    assert LazyDataset(path).read_value_into("PixelData", buffer)

    assert bytes(buffer) == eager.PixelData


def test_big_endian_files_are_read_the_same_way() -> None:
    path = get_testdata_file("MR_small_bigendian.dcm")
    eager = dcmread(path)
    buffer = bytearray(len(eager.PixelData))

    assert LazyDataset(path).read_value_into("PixelData", buffer)

    assert bytes(buffer) == eager.PixelData


def test_a_value_already_in_memory_is_not_read_again(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert len(dataset.PixelData) == PIXEL_BYTES
    buffer = bytearray(4)

    assert dataset.read_value_into("PixelData", buffer) is False
    assert buffer == bytearray(4)


def test_encapsulated_pixel_data_are_not_read_in_parts(ct_file: Path, tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate

    eager = dcmread(ct_file)
    eager.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"  # RLE Lossless: undefined length
    eager.PixelData = encapsulate([b"\x01\x02\x03\x04" * 10])
    eager["PixelData"].VR = "OB"
    path = tmp_path / "encapsulated.dcm"
    eager.save_as(path, enforce_file_format=True)
    dataset = LazyDataset(path)

    assert dataset.read_value_into("PixelData", bytearray(4)) is False
    assert not dataset.pixels_loaded


def test_a_deflated_file_read_whole_is_not_read_again(ct_file: Path, tmp_path: Path) -> None:
    eager = dcmread(ct_file)
    eager.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
    path = tmp_path / "deflated.dcm"
    eager.save_as(path, enforce_file_format=True)

    assert LazyDataset(path).read_value_into("PixelData", bytearray(4)) is False


def test_bytes_beyond_the_value_are_refused(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)

    with pytest.raises(ValueError, match=rf"bytes 90 to 100 of element \(7FE0,0010\).*holds {PIXEL_BYTES}"):
        dataset.read_value_into("PixelData", bytearray(10), offset=90)
    with pytest.raises(ValueError, match="bytes -2 to 2"):
        dataset.read_value_into("PixelData", bytearray(4), offset=-2)


def test_a_missing_element_is_a_key_error(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert "FloatPixelData" not in dataset

    with pytest.raises(KeyError):
        dataset.read_value_into("FloatPixelData", bytearray(4))


def test_a_file_cut_short_after_its_header_was_read_is_a_clear_error(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert dataset.PatientID == "READ1"
    ct_file.write_bytes(ct_file.read_bytes()[:-20])

    with pytest.raises(InvalidDatasetError, match=rf"truncated.*\(7FE0,0010\) should hold {PIXEL_BYTES} bytes"):
        dataset.read_value_into("PixelData", bytearray(PIXEL_BYTES))


def test_a_file_replaced_by_another_layout_is_a_clear_error(ct_file: Path) -> None:
    dataset = LazyDataset(ct_file)
    assert dataset.PatientID == "READ1"
    longer = dcmread(ct_file)
    longer.StudyDescription = "a description long enough to move the pixel data"
    longer.save_as(ct_file)

    with pytest.raises(InvalidDatasetError, match=r"changed on disk after its header was read"):
        dataset.read_value_into("PixelData", bytearray(PIXEL_BYTES))
