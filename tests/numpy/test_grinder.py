"""NumpyGrinder: a series becomes one volume with its geometry, or a clear refusal."""

from __future__ import annotations

import random

import numpy as np
import pytest
from geometry_series import (
    CASES,
    SeriesSpec,
    build_series,
    expected,
    position_of,
    rotated,
    write_series,
)
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless

from dicomnode.errors import ConfigurationError, GrindingError, InvalidDatasetError
from dicomnode_numpy.grinder import NumpyGrinder
from dicomnode_numpy.volume import Volume

pytestmark = pytest.mark.plugin("numpy")


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_geometry_case_grinds_to_its_true_values_and_affine(name: str) -> None:
    spec = CASES[name]
    values, affine = expected(spec)

    volume = NumpyGrinder()(build_series(spec))

    assert volume.shape == values.shape
    assert np.array_equal(volume.array, values)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)


def test_slices_are_ordered_by_position_not_by_instance_number() -> None:
    spec = SeriesSpec("numbers-lie", orientation=rotated(15.0, 0.0))
    datasets = build_series(spec)
    numbers = list(range(1, len(datasets) + 1))
    random.Random(3).shuffle(numbers)
    for ds, number in zip(datasets, numbers):
        ds.InstanceNumber = number
    random.Random(4).shuffle(datasets)

    volume = NumpyGrinder()(datasets)

    positions = {ds.SOPInstanceUID: np.array([float(v) for v in ds.ImagePositionPatient]) for ds in datasets}
    for k, uid in enumerate(volume.source_uids):
        np.testing.assert_allclose(positions[uid], position_of(spec, k), atol=1e-6)


def test_slice_positions_of_the_volume_are_the_source_image_positions() -> None:
    spec = CASES["oblique-ct"]
    datasets = build_series(spec)
    by_uid = {ds.SOPInstanceUID: ds for ds in datasets}

    volume = NumpyGrinder()(datasets)

    for k, uid in enumerate(volume.source_uids):
        source = [float(v) for v in by_uid[uid].ImagePositionPatient]
        np.testing.assert_allclose(volume.slice_position(k), source, atol=1e-6)
        np.testing.assert_allclose(volume.voxel_to_patient([k, 0, 0]), source, atol=1e-6)
    np.testing.assert_allclose(volume.image_orientation, [float(v) for v in datasets[0].ImageOrientationPatient])
    assert volume.pixel_spacing == [0.8, 0.8]


def test_integral_rescale_gives_integers_and_fractional_rescale_gives_float32() -> None:
    ct = NumpyGrinder()(build_series(CASES["axial-ct"]))
    pt = NumpyGrinder()(build_series(CASES["thick-slices-pt"]))

    assert ct.array.dtype == np.int16  # 12 stored bits - 1024 fits int16
    assert pt.array.dtype == np.float32  # slopes 0.25, 0.375, ... per slice


def test_rescale_can_be_turned_off_to_get_the_stored_values() -> None:
    spec = CASES["axial-ct"]
    volume = NumpyGrinder(rescale=False)(build_series(spec))
    values, _ = expected(spec)

    assert volume.array.dtype == np.uint16
    assert np.array_equal(volume.array.astype(np.int32) - 1024, values)


def test_dtype_option_forces_the_output_type() -> None:
    volume = NumpyGrinder(dtype="float64")(build_series(CASES["axial-ct"]))

    assert volume.array.dtype == np.float64
    assert np.array_equal(volume.array, expected(CASES["axial-ct"])[0])


def test_integer_rescale_that_overflows_the_stored_width_widens_the_output() -> None:
    spec = CASES["axial-ct"]
    datasets = build_series(spec)
    for ds in datasets:
        ds.RescaleIntercept = "-40000"

    volume = NumpyGrinder()(datasets)

    assert volume.array.dtype == np.int32
    stored = NumpyGrinder(rescale=False)(build_series(spec)).array
    assert np.array_equal(volume.array, stored.astype(np.int64) - 40000)


def test_signed_values_with_fewer_stored_bits_are_sign_extended() -> None:
    spec = CASES["axial-ct"]
    datasets = build_series(spec)
    truth = []
    for ds in datasets:
        stored = np.frombuffer(ds.PixelData, "<u2").astype(np.int32) - 2048  # 12-bit signed values
        truth.append(stored)
        garbage_high_bits = (stored & 0x0FFF) | 0x5000  # bits above BitsStored must be ignored
        ds.PixelRepresentation = 1
        ds.PixelData = garbage_high_bits.astype("<u2").tobytes()
        ds.RescaleIntercept = "0"

    volume = NumpyGrinder()(datasets)

    by_uid = dict(zip([ds.SOPInstanceUID for ds in datasets], truth))
    for k, uid in enumerate(volume.source_uids):
        assert np.array_equal(volume.array[k].ravel(), by_uid[uid])


def test_a_4d_series_is_split_into_volumes_in_temporal_order() -> None:
    spec = CASES["4d-mr"]
    values, _ = expected(spec)

    volume = NumpyGrinder()(build_series(spec))

    assert volume.is_4d and volume.shape == (3, 10, 24, 32)
    assert np.array_equal(volume.array, values)


def test_a_4d_series_without_temporal_position_is_split_by_acquisition_number() -> None:
    spec = CASES["4d-mr"]
    datasets = build_series(spec)
    for ds in datasets:
        del ds.TemporalPositionIdentifier
        ds.AcquisitionTime = "101600"  # only AcquisitionNumber tells the volumes apart

    volume = NumpyGrinder()(datasets)

    assert np.array_equal(volume.array, expected(spec)[0])


def test_an_enhanced_multiframe_object_is_ground_from_its_functional_groups() -> None:
    spec = CASES["enhanced-ct"]
    (enhanced,) = build_series(spec)

    volume = NumpyGrinder()([enhanced])

    values, affine = expected(spec)
    assert np.array_equal(volume.array, values)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    assert volume.source_uids == (enhanced.SOPInstanceUID,) * spec.slices


def test_a_4d_enhanced_object_is_split_by_temporal_position_index() -> None:
    spec = CASES["enhanced-ct"].with_(volumes=2, name="enhanced-4d")

    volume = NumpyGrinder()(build_series(spec))

    assert np.array_equal(volume.array, expected(spec)[0])


def test_rle_compressed_images_grind_to_the_same_volume() -> None:
    spec = CASES["shuffled-ct"]
    datasets = build_series(spec)
    for ds in datasets:
        ds.compress(RLELossless, encoding_plugin="pydicom")

    volume = NumpyGrinder()(datasets)

    assert datasets[0].file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(volume.array, expected(spec)[0])


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_jp2klossless.dcm"])
def test_pydicom_test_files_in_other_transfer_syntaxes_equal_the_little_endian_original(name: str) -> None:
    original = NumpyGrinder()([dcmread(get_testdata_file("MR_small.dcm"))])

    other = NumpyGrinder()([dcmread(get_testdata_file(name))])

    assert other.array.dtype == original.array.dtype == np.int16
    assert np.array_equal(other.array, original.array)
    np.testing.assert_allclose(other.affine, original.affine)


def test_pydicom_ct_file_matches_its_rescaled_pixel_array() -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))

    volume = NumpyGrinder()([ds])

    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert np.array_equal(volume.array[0], ds.pixel_array * slope + intercept)
    np.testing.assert_allclose(volume.origin, [float(v) for v in ds.ImagePositionPatient])
    assert volume.slice_spacing == float(ds.SliceThickness)  # one slice: its thickness


def test_lazy_datasets_on_disk_forget_their_pixel_data_after_grinding(tmp_path) -> None:
    from dicomnode.dicom.lazy import LazyDataset

    spec = CASES["axial-ct"]
    paths = write_series(build_series(spec), tmp_path)
    datasets = [LazyDataset(path) for path in paths]

    volume = NumpyGrinder()(datasets)

    assert np.array_equal(volume.array, expected(spec)[0])
    assert not any(ds.pixels_loaded for ds in datasets)


def test_lazy_datasets_not_read_yet_stay_unread_by_grinding(tmp_path) -> None:
    from dicomnode.dicom.lazy import LazyDataset

    spec = CASES["shuffled-ct"]
    paths = write_series(build_series(spec), tmp_path)
    datasets = [LazyDataset(path) for path in paths]

    volume = NumpyGrinder()(datasets)

    assert np.array_equal(volume.array, expected(spec)[0])
    assert not any(ds.is_loaded for ds in datasets)  # scanned, not parsed: read again when used
    assert datasets[0].PatientID == "GEO-shuffled-ct"


def test_lazy_datasets_whose_header_was_read_keep_it_and_forget_their_pixel_data(tmp_path) -> None:
    from dicomnode.dicom.lazy import LazyDataset

    spec = CASES["axial-ct"]
    datasets = [LazyDataset(path) for path in write_series(build_series(spec), tmp_path)]
    for ds in datasets:
        assert ds.Rows == spec.rows

    volume = NumpyGrinder()(datasets)

    assert np.array_equal(volume.array, expected(spec)[0])
    assert all(ds.is_loaded and not ds.pixels_loaded for ds in datasets)


def test_a_file_replaced_after_its_header_was_scanned_is_an_error_not_other_pixels(tmp_path) -> None:
    from dicomnode.dicom.lazy import LazyDataset
    from dicomnode_numpy.frames import frames_of
    from dicomnode_numpy.geometry import arrange
    from dicomnode_numpy.pixels import fill

    spec = CASES["axial-ct"]
    paths = write_series(build_series(spec), tmp_path)
    layout = arrange(frames_of([LazyDataset(path) for path in paths]))
    shorter = build_series(spec.with_(name="other"))[0]
    shorter.PatientName = "A^Much^Longer^Name^That^Moves^The^Pixel^Data"
    shorter.save_as(paths[0], enforce_file_format=True)

    with pytest.raises(InvalidDatasetError, match="changed on disk"):
        fill(layout, np.dtype(np.int16), rescale=True)


def test_an_empty_input_is_refused() -> None:
    with pytest.raises(GrindingError, match="no images"):
        NumpyGrinder()([])


def test_a_missing_slice_is_refused_with_the_gap() -> None:
    datasets = build_series(CASES["axial-ct"].with_(skip_slices=(4,)))

    with pytest.raises(GrindingError, match=r"unevenly spaced.*3\.000 mm.*slice is probably missing"):
        NumpyGrinder()(datasets)


def test_mixed_orientations_are_refused() -> None:
    datasets = build_series(CASES["axial-ct"])
    datasets[3].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    with pytest.raises(GrindingError, match="mixed orientations"):
        NumpyGrinder()(datasets)


def test_mixed_rows_and_columns_are_refused() -> None:
    datasets = build_series(CASES["axial-ct"])
    datasets[2].Rows = 12
    datasets[2].PixelData = datasets[2].PixelData[: 12 * 32 * 2]

    with pytest.raises(GrindingError, match=r"different sizes.*24x32 \(9 images\).*12x32 \(1 images\)"):
        NumpyGrinder()(datasets)


def test_gantry_tilt_is_refused_by_default() -> None:
    datasets = build_series(CASES["axial-ct"].with_(tilt_mm=0.3, name="tilted"))

    with pytest.raises(GrindingError, match=r"gantry tilt of 11\.31°.*accept_gantry_tilt=True"):
        NumpyGrinder()(datasets)


def test_accepted_gantry_tilt_keeps_the_sheared_geometry() -> None:
    spec = CASES["axial-ct"].with_(tilt_mm=0.3, name="tilted")
    values, affine = expected(spec)

    volume = NumpyGrinder(accept_gantry_tilt=True)(build_series(spec))

    assert np.array_equal(volume.array, values)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)


def test_an_incomplete_4d_volume_is_refused() -> None:
    datasets = build_series(CASES["4d-mr"])
    del datasets[5]

    with pytest.raises(GrindingError, match="different numbers of images"):
        NumpyGrinder()(datasets)


def test_a_colour_image_is_refused() -> None:
    ds = dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))

    with pytest.raises(GrindingError, match="SamplesPerPixel 3"):
        NumpyGrinder()([ds])


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="not a numpy type"):
        NumpyGrinder(dtype="floaty")
    with pytest.raises(ConfigurationError, match="spacing_tolerance"):
        NumpyGrinder(spacing_tolerance=2.0)


def test_the_grinder_allocates_about_one_volume() -> None:
    import tracemalloc

    spec = SeriesSpec("memory", rows=128, columns=128, slices=40)
    datasets = build_series(spec)
    tracemalloc.start()
    try:
        volume = NumpyGrinder()(datasets)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak <= 1.5 * volume.array.nbytes


def test_the_registered_numpy_grinder_is_this_class(clean_registry: None) -> None:
    from dicomnode.plugins import get_registry

    assert get_registry().grinder("numpy") is NumpyGrinder


def test_volume_refuses_an_array_that_is_not_3d_or_4d() -> None:
    with pytest.raises(ValueError, match=r"\(slices, rows, columns\)"):
        Volume(np.zeros((4, 4)), [0, 0, 0], [1, 1, 1], np.eye(3))


def test_a_4d_series_with_no_time_attributes_is_split_by_instance_number() -> None:
    spec = CASES["4d-mr"]
    datasets = build_series(spec)  # InstanceNumber counts volume by volume
    for ds in datasets:
        del ds.TemporalPositionIdentifier
        del ds.AcquisitionNumber
        del ds.AcquisitionTime

    volume = NumpyGrinder()(datasets)

    assert np.array_equal(volume.array, expected(spec)[0])


def test_spacing_tolerance_decides_how_uneven_slices_may_be() -> None:
    datasets = build_series(CASES["axial-ct"])
    for ds in datasets:
        if ds.InstanceNumber == 5:  # 0.15 mm (10 % of the 1.5 mm spacing) off
            ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.15]

    with pytest.raises(GrindingError, match="unevenly spaced"):
        NumpyGrinder()(datasets)
    volume = NumpyGrinder(spacing_tolerance=0.2)(datasets)
    assert volume.slice_spacing == pytest.approx(1.5)


def test_pixel_data_that_cannot_be_decoded_is_refused_with_the_transfer_syntax() -> None:
    datasets = build_series(CASES["axial-ct"])
    datasets[0].compress(RLELossless, encoding_plugin="pydicom")
    datasets[0].PixelData = datasets[0].PixelData[:40]  # a truncated fragment

    with pytest.raises(GrindingError, match=r"cannot decode the pixel data.*RLE Lossless"):
        NumpyGrinder()(datasets)


def test_8_bit_values_with_a_large_intercept_go_straight_to_a_wide_type() -> None:
    datasets = build_series(CASES["axial-ct"])
    stored = []
    for ds in datasets:
        values = (np.frombuffer(ds.PixelData, "<u2") % 256).astype(np.uint8)
        stored.append(values)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = values.tobytes()

    volume = NumpyGrinder()(datasets)

    assert volume.array.dtype == np.int16
    by_uid = dict(zip([ds.SOPInstanceUID for ds in datasets], stored))
    for k, uid in enumerate(volume.source_uids):
        assert np.array_equal(volume.array[k].ravel(), by_uid[uid].astype(np.int16) - 1024)


def test_laying_out_lazy_datasets_reads_their_headers_only(tmp_path) -> None:
    from dicomnode.dicom.lazy import LazyDataset

    paths = write_series(build_series(CASES["axial-ct"]), tmp_path)
    datasets = [LazyDataset(path) for path in paths]

    layout = NumpyGrinder().layout(datasets)

    assert not any(ds.is_loaded for ds in datasets)  # their files were scanned, not parsed
    assert all(frame.pixel_file is not None and frame.pixel_file.element.value is None for frame in layout.frames)


def test_lazy_datasets_whose_header_was_read_before_grinding_forget_their_pixel_data_too(tmp_path) -> None:
    from dicomnode.dicom.lazy import LazyDataset

    paths = write_series(build_series(CASES["axial-ct"]), tmp_path)
    datasets = [LazyDataset(path) for path in paths]
    assert all(ds.Modality == "CT" for ds in datasets)  # headers read, pixel data still on disk

    NumpyGrinder()(datasets)

    assert not any(ds.pixels_loaded for ds in datasets)
