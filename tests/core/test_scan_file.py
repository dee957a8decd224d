"""scan_file: a file's elements located with one read equal what pydicom's reader makes of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomnode.dicom.encoded import scan_elements
from dicomnode.dicom.lazy import LazyDataset, scan_file

#: explicit and implicit VR, big endian, nested sequences, encapsulated (JPEG 2000, RLE, JPEG-LS)
FILES = ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtplan.dcm",
         "JPEG2000.dcm", "MR_small_RLE.dcm", "JPEGLSNearLossless_16.dcm"]


def _copy(name: str, folder: Path) -> Path:
    target = folder / name
    shutil.copyfile(get_testdata_file(name), target)
    return target


@pytest.mark.parametrize("name", FILES)
def test_a_scanned_header_equals_pydicoms_read_element_for_element(name: str, tmp_path: Path) -> None:
    path = _copy(name, tmp_path)
    reference = dcmread(path)

    scanned = scan_file(path)
    assert scanned is not None
    header = scanned.header()

    assert header.file_meta == reference.file_meta
    assert header.original_encoding == reference.original_encoding
    assert header.preamble == reference.preamble
    assert list(header.keys()) == list(reference.keys())
    for tag in reference.keys():  # noqa: SIM118 (iterating a Dataset yields its elements)
        if tag >= 0x7FE00008:
            continue  # the pixel data are located, not read
        assert header[tag] == reference[tag], tag


def test_a_lazy_dataset_reads_its_pixel_data_from_where_the_scan_located_them(tmp_path: Path) -> None:
    path = _copy("MR_small_bigendian.dcm", tmp_path)

    lazy = LazyDataset(path)

    assert lazy.Rows == 64 and not lazy.pixels_loaded
    assert lazy.PixelData == dcmread(path).PixelData


@pytest.mark.parametrize("name", ["image_dfl.dcm", "no_meta.dcm", "rtstruct.dcm"])
def test_deflated_files_and_files_without_file_meta_or_preamble_are_left_to_pydicom(name: str, tmp_path: Path) -> None:
    assert scan_file(_copy(name, tmp_path)) is None


def test_a_cut_file_is_left_to_pydicom_which_names_the_damage(tmp_path: Path) -> None:
    path = _copy("CT_small.dcm", tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:1000])  # inside the header

    assert scan_file(path) is None


def test_scan_elements_lists_only_the_elements_kept_and_the_pixel_data(tmp_path: Path) -> None:
    path = _copy("CT_small.dcm", tmp_path)
    everything = scan_file(path)
    some = scan_file(path, keep_tags={0x00280010, 0x00280011}, keep_groups={0x0099})
    assert everything is not None and some is not None

    # and from the pixel data on, everything (here the trailing padding)
    assert [int(tag) for tag in some.elements] == [0x00280010, 0x00280011, 0x7FE00010, 0xFFFCFFFC]
    assert some.elements[0x00280010] == everything.elements[0x00280010]


def test_scan_elements_stops_at_before_and_lists_an_element_cut_by_the_buffer() -> None:
    meta = b"\x02\x00\x10\x00UI\x04\x001.2\x00"
    patient = b"\x10\x00\x20\x00LO\x08\x00PAT"

    elements, stop = scan_elements(meta + patient, implicit=False, before=0x00030000)
    assert [e.tag for e in elements] == [0x00020010] and stop == len(meta)

    elements, stop = scan_elements(meta + patient, implicit=False)
    assert elements[-1].tag == 0x00100020 and elements[-1].end > len(meta + patient)
