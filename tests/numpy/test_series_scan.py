"""Headers of a whole series located together: the same elements as one file's scan, and the same frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from geometry_series import CASES, build_series, write_series
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicomnode.dicom.lazy import LazyDataset, scan_file
from dicomnode.errors import GrindingError
from dicomnode_numpy import frames_of
from dicomnode_numpy.frames import _WANTED_PRIVATE_GROUPS, _WANTED_TAGS
from dicomnode_numpy.grinder import NumpyGrinder
from dicomnode_numpy.series_scan import scan_headers

pytestmark = pytest.mark.plugin("numpy")


def _same_elements(scanned: Dataset, path: Path) -> None:
    """Every element the scan kept is the element scan_file finds in that file (its offset aside for shared ones)."""
    reference = scan_file(path, keep_tags=_WANTED_TAGS, keep_groups=_WANTED_PRIVATE_GROUPS)
    assert reference is not None
    assert set(scanned._dict) == set(reference.elements)
    for tag, element in scanned._dict.items():
        mine, theirs = tuple(element), tuple(reference.elements[tag])
        assert mine[:4] + mine[5:] == theirs[:4] + theirs[5:], tag
        if tag < 0x7FE00008:  # the pixel data stay in the file
            assert scanned[tag].value == Dataset(reference.elements)[tag].value


def _written(tmp_path: Path, name: str = "shuffled-ct", **changes: object) -> list[Path]:
    return write_series(build_series(CASES[name].with_(**changes)), tmp_path / name)


@pytest.mark.parametrize("name", ["shuffled-ct", "4d-mr", "oblique-mr"])
def test_every_header_of_a_series_is_found_as_one_files_scan_finds_it(name: str, tmp_path: Path) -> None:
    paths = _written(tmp_path, name)
    headers = scan_headers(paths, _WANTED_TAGS, _WANTED_PRIVATE_GROUPS)
    assert all(header is not None for header in headers)
    for path, header in zip(paths, headers, strict=True):
        assert header is not None
        _same_elements(header.header, path)
        assert header.pixel_file.element.value_tell == dcmread(path, defer_size=0)["PixelData"].file_tell


def test_files_whose_headers_differ_in_length_and_elements_are_walked_each_at_its_own_pace(tmp_path: Path) -> None:
    datasets = build_series(CASES["axial-ct"])
    datasets[1].ReferencedImageSequence = Sequence([Dataset(), Dataset()])  # undefined length, as pydicom writes
    datasets[1].ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    datasets[2].ImageComments = "x" * 6000  # a header longer than the first read
    datasets[3].SeriesDescription = "a longer description than the others have"
    del datasets[4].SliceThickness
    paths = write_series(datasets, tmp_path)
    for path, header in zip(paths, scan_headers(paths, _WANTED_TAGS, _WANTED_PRIVATE_GROUPS), strict=True):
        assert header is not None
        _same_elements(header.header, path)


def test_implicit_vr_files_are_walked_too(tmp_path: Path) -> None:
    paths = _written(tmp_path)
    for path in paths:
        dataset = dcmread(path)
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        dataset.save_as(path, implicit_vr=True, enforce_file_format=True)
    headers = scan_headers(paths, _WANTED_TAGS, _WANTED_PRIVATE_GROUPS)
    for path, header in zip(paths, headers, strict=True):
        assert header is not None and header.syntax == ImplicitVRLittleEndian
        _same_elements(header.header, path)


@pytest.mark.parametrize("what", ["big endian", "deflated", "compressed", "no preamble", "cut short", "missing",
                                  "not dicom"])
def test_what_the_scan_cannot_walk_is_left_to_the_ordinary_reader(what: str, tmp_path: Path) -> None:
    paths = _written(tmp_path)
    odd = paths[2]
    if what == "big endian":
        source = get_testdata_file("MR_small_bigendian.dcm")
        odd.write_bytes(Path(str(source)).read_bytes())
    elif what == "deflated":
        dataset = dcmread(odd)
        dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        dataset.save_as(odd, enforce_file_format=True)
    elif what == "compressed":
        odd.write_bytes(Path(str(get_testdata_file("JPEG2000.dcm"))).read_bytes())
    elif what == "no preamble":
        odd.write_bytes(odd.read_bytes()[128:])
    elif what == "cut short":
        odd.write_bytes(odd.read_bytes()[:-100])
    elif what == "missing":
        odd.unlink()
    else:
        odd.write_bytes(b"not a DICOM file at all" * 20)
    headers = scan_headers(paths, _WANTED_TAGS, _WANTED_PRIVATE_GROUPS)
    assert headers[2] is None
    assert all(header is not None for index, header in enumerate(headers) if index != 2)
    assert ExplicitVRBigEndian  # the ordinary reader handles big endian: see the grinder test below


def test_lazy_files_grind_to_the_frames_and_volume_of_the_files_read_whole(tmp_path: Path) -> None:
    paths = _written(tmp_path, "4d-mr", shuffle=True)
    lazy = [LazyDataset(path) for path in paths]
    eager = [dcmread(path) for path in paths]
    for mine, theirs in zip(frames_of(lazy), frames_of(eager), strict=True):
        assert np.array_equal(mine.position, theirs.position)
        assert np.array_equal(mine.orientation, theirs.orientation)
        assert (mine.temporal_key, mine.sop_instance_uid, mine.instance_number, mine.slope, mine.intercept,
                mine.slice_thickness, mine.spacing_between_slices, mine.pixel_spacing, mine.pixel_format,
                mine.frame_of_reference_uid) == (
            theirs.temporal_key, theirs.sop_instance_uid, theirs.instance_number, theirs.slope, theirs.intercept,
            theirs.slice_thickness, theirs.spacing_between_slices, theirs.pixel_spacing, theirs.pixel_format,
            theirs.frame_of_reference_uid)
    assert np.array_equal(NumpyGrinder()(lazy).array, NumpyGrinder()(eager).array)
    assert not any(dataset.is_loaded for dataset in lazy)  # scanned, never read through pydicom


def test_a_series_with_one_odd_file_grinds_the_same_as_read_whole(tmp_path: Path) -> None:
    paths = _written(tmp_path)
    dataset = dcmread(paths[3])
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    dataset.save_as(paths[3], enforce_file_format=True)
    lazy = NumpyGrinder()([LazyDataset(path) for path in paths]).array
    assert np.array_equal(lazy, NumpyGrinder()([dcmread(path) for path in paths]).array)


def test_a_bad_value_in_a_scanned_file_gives_the_same_error_as_read_whole(tmp_path: Path) -> None:
    datasets = build_series(CASES["axial-ct"])
    datasets[2].ImagePositionPatient = ["1", "2222", "3"]
    paths = write_series(datasets, tmp_path)
    paths[2].write_bytes(paths[2].read_bytes().replace(b"1\\2222\\3", b"1\\2x22\\3"))  # not a number
    with pytest.raises(GrindingError) as lazy:
        NumpyGrinder()([LazyDataset(path) for path in paths])
    with pytest.raises(GrindingError) as eager:
        NumpyGrinder()([dcmread(path) for path in paths])
    assert str(lazy.value) == str(eager.value)
    assert "ImagePositionPatient" in str(lazy.value)
