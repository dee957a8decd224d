"""Pixel data still in a LazyDataset's file are read from there into the volume, frame by frame.

Whatever the encoding, the volume equals the one ground from the same files
read whole; what the direct read cannot handle (compressed, deflated, already
in memory) takes the general path.
"""

from __future__ import annotations

import gc
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from geometry_series import CASES, SeriesSpec, build_series, expected, write_series
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.errors import GrindingError
from dicomnode_numpy.grinder import NumpyGrinder
from dicomnode_numpy.pixels import PixelFormat, PixelReader

pytestmark = pytest.mark.plugin("numpy")


def lazy_and_eager(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The stored values ground from lazy datasets of ``paths`` and from the same files read whole."""
    lazy = NumpyGrinder(rescale=False)([LazyDataset(path) for path in paths]).array
    eager = NumpyGrinder(rescale=False)([dcmread(path) for path in paths]).array
    return lazy, eager


def test_a_series_on_disk_grinds_to_its_values_with_the_pixel_data_left_in_the_files(tmp_path: Path) -> None:
    spec = CASES["shuffled-ct"]
    datasets = [LazyDataset(path) for path in write_series(build_series(spec), tmp_path)]

    volume = NumpyGrinder()(datasets)

    assert np.array_equal(volume.array, expected(spec)[0])
    assert not any(ds.pixels_loaded for ds in datasets)


def test_a_multi_frame_file_is_never_held_whole(tmp_path: Path) -> None:
    spec = CASES["enhanced-ct"].with_(rows=256, columns=256, slices=24)
    (path,) = write_series(build_series(spec), tmp_path)
    dataset = LazyDataset(path)
    assert dataset.NumberOfFrames == 24  # the header, read before measuring

    gc.collect()
    tracemalloc.start()
    try:
        volume = NumpyGrinder()([dataset])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert np.array_equal(volume.array, expected(spec)[0])
    # the volume and a frame or two (3 MB and 128 KB), not also the file's 3 MB of pixel data
    assert peak < 1.5 * volume.array.nbytes


def test_enhanced_4d_frames_read_from_the_file_equal_the_whole_file(tmp_path: Path) -> None:
    lazy, eager = lazy_and_eager(write_series(build_series(CASES["enhanced-4d-mr"]), tmp_path))

    assert lazy.shape == (3, 10, 24, 32)
    assert np.array_equal(lazy, eager)


def test_big_endian_pixel_data_read_from_the_file_are_the_same_values(tmp_path: Path) -> None:
    path = Path(shutil.copy(get_testdata_file("MR_small_bigendian.dcm"), tmp_path / "big.dcm"))

    lazy, eager = lazy_and_eager([path])

    assert np.array_equal(lazy, eager)
    assert lazy.max() > 0


def test_implicit_vr_files_read_from_disk_are_the_same_values(tmp_path: Path) -> None:
    datasets = build_series(CASES["axial-ct"])
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    paths = write_series(datasets, tmp_path)

    lazy, eager = lazy_and_eager(paths)

    assert np.array_equal(lazy, eager)


def test_signed_values_in_fewer_bits_read_from_disk_have_their_sign_extended(tmp_path: Path) -> None:
    datasets = build_series(CASES["axial-ct"])
    for ds in datasets:
        ds.PixelRepresentation = 1  # the 12 stored bits of values >= 2048 are negative numbers
    paths = write_series(datasets, tmp_path)

    lazy, eager = lazy_and_eager(paths)

    assert lazy.dtype == np.int16 and lazy.min() < 0
    assert np.array_equal(lazy, eager)


def test_8_bit_slices_of_odd_size_read_from_disk_are_the_same_values(tmp_path: Path) -> None:
    spec = SeriesSpec("odd-8-bit", modality="MR", rows=5, columns=7, slices=4)
    datasets = build_series(spec)
    for ds in datasets:
        values = np.frombuffer(ds.PixelData, dtype="<u2") % 256
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = values.astype(np.uint8).tobytes() + b"\0"  # 35 bytes, padded to an even length
    paths = write_series(datasets, tmp_path)

    lazy, eager = lazy_and_eager(paths)

    assert lazy.dtype == np.uint8 and lazy.shape == (4, 5, 7)
    assert np.array_equal(lazy, eager)
    assert np.array_equal(lazy, expected(spec)[0] % 256)


def test_compressed_files_on_disk_are_decoded(tmp_path: Path) -> None:
    spec = CASES["shuffled-ct"]
    datasets = build_series(spec)
    for ds in datasets:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    paths = write_series(datasets, tmp_path)

    volume = NumpyGrinder()([LazyDataset(path) for path in paths])

    assert np.array_equal(volume.array, expected(spec)[0])


def test_deflated_files_on_disk_are_read_whole_and_ground_the_same(tmp_path: Path) -> None:
    spec = CASES["axial-ct"]
    datasets = build_series(spec)
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    paths = write_series(datasets, tmp_path)

    volume = NumpyGrinder()([LazyDataset(path) for path in paths])

    assert np.array_equal(volume.array, expected(spec)[0])


def test_pixel_data_already_in_memory_are_used_from_there(tmp_path: Path) -> None:
    spec = CASES["axial-ct"]
    paths = write_series(build_series(spec), tmp_path)
    datasets = [LazyDataset(path) for path in paths]
    for ds in datasets:
        ds.load()
        path_of = ds.path
        path_of.unlink()  # nothing left to read: the values can only come from memory

    volume = NumpyGrinder()(datasets)

    assert np.array_equal(volume.array, expected(spec)[0])


def test_a_reader_whose_dataset_read_its_pixel_data_meanwhile_uses_them(tmp_path: Path) -> None:
    (path,) = write_series(build_series(CASES["axial-ct"].with_(slices=1)), tmp_path)
    dataset = LazyDataset(path)
    reader = PixelReader(dataset, PixelFormat.of(dataset))
    whole = np.frombuffer(dataset.PixelData, dtype="<u2").reshape(24, 32)  # another reader asked for them

    path.write_bytes(b"")  # the file is gone: the reader must not read it any more
    slot = np.zeros((24, 32), dtype=np.uint16)

    assert reader.read_into(0, slot) is False
    assert not slot.any()
    assert np.array_equal(reader.frame(0), whole)


def test_a_reader_puts_a_frame_read_from_the_file_straight_into_the_array_given(tmp_path: Path) -> None:
    spec = CASES["enhanced-ct"]
    (path,) = write_series(build_series(spec), tmp_path)
    dataset = LazyDataset(path)
    reader = PixelReader(dataset, PixelFormat.of(dataset))
    slot = np.empty((spec.rows, spec.columns), dtype=np.uint16)

    assert reader.read_into(3, slot) is True

    assert np.array_equal(slot, np.frombuffer(dcmread(path).PixelData, dtype="<u2").reshape(-1, 24, 32)[3])
    assert not dataset.pixels_loaded


def test_datasets_whose_values_pydicom_left_in_the_file_grind_the_same(tmp_path: Path) -> None:
    spec = CASES["shuffled-ct"]
    paths = write_series(build_series(spec), tmp_path)
    deferred = [dcmread(path, defer_size=8) for path in paths]  # positions, orientation, rescale: all deferred
    assert deferred[0].get_item("ImagePositionPatient", keep_deferred=True).value is None

    volume = NumpyGrinder()(deferred)

    assert np.array_equal(volume.array, expected(spec)[0])
    np.testing.assert_allclose(volume.affine, expected(spec)[1])


def test_a_file_with_too_few_bytes_of_pixel_data_is_refused_before_reading(tmp_path: Path) -> None:
    datasets = build_series(CASES["axial-ct"])
    datasets[3].PixelData = datasets[3].PixelData[:100]
    paths = write_series(datasets, tmp_path)

    with pytest.raises(GrindingError, match=r"has 100 bytes of PixelData, but 1 frame\(s\) of 24x32 at 16 bits need 1536"):
        NumpyGrinder()([LazyDataset(path) for path in paths])
