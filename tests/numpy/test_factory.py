"""NumpyFactory: a numpy volume written back as a valid DICOM series in the right place."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import require_peer
from geometry_series import CORONAL, SeriesSpec, build_series, rotated
from pet_series import pet_series
from pydicom import dcmread

from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT, MR_IMAGE_BLUEPRINT
from dicomnode.dicom.factory import Blueprint, StaticElement
from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError, InvalidDatasetError
from dicomnode_numpy import NumpyCaller, NumpyFactory, NumpyGrinder
from dicomnode_numpy.encoding import Window
from dicomnode_numpy.pet import PET_IMAGE_BLUEPRINT
from dicomnode_numpy.volume import Volume

pytestmark = pytest.mark.plugin("numpy")

BLUEPRINTS = {
    "CT": DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT,
    "MR": DEFAULT_BLUEPRINT + MR_IMAGE_BLUEPRINT,
    "PT": DEFAULT_BLUEPRINT + PET_IMAGE_BLUEPRINT,
}


def parents_of(modality: str, shuffle: bool = False) -> list:
    if modality == "PT":
        return pet_series(slices=6, shuffle=shuffle)
    return synthetic_series(modality=modality, slices=6, rows=16, columns=20, shuffle=shuffle)


def build(parents, image, modality=None, factory=None, blueprint=None):
    factory = factory or NumpyFactory()
    modality = modality or str(parents[0].Modality)
    header = factory.build_series_header(parents, blueprint or BLUEPRINTS[modality])
    return factory.build_series(image, header)


def dciodvfy_errors(datasets, folder: Path) -> list[str]:
    """Every 'Error' line dciodvfy prints for any of the datasets."""
    program = require_peer("dciodvfy")
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for number, dataset in enumerate(datasets):
        path = folder / f"{number}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        result = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=60)
        errors += [f"{path.name}: {line}" for line in (result.stdout + result.stderr).splitlines()
                   if line.startswith("Error")]
    return errors


def real_values(dataset) -> np.ndarray:
    stored = dataset.pixel_array.astype(np.float64)
    return stored * float(dataset.get("RescaleSlope", 1)) + float(dataset.get("RescaleIntercept", 0))


def by_number(datasets):
    return sorted(datasets, key=lambda ds: int(ds.InstanceNumber))


# -- validity ------------------------------------------------------------------------------------

@pytest.mark.parametrize("modality", ["CT", "MR", "PT"])
@pytest.mark.parametrize("per_slice", [False, True], ids=["per-series", "per-slice"])
def test_a_float_result_on_a_parent_series_passes_dciodvfy_without_errors(modality, per_slice, tmp_path):
    parents = parents_of(modality, shuffle=True)
    volume = NumpyGrinder()(parents)
    result = volume.array.astype(np.float32) * 0.731 + 12.5
    datasets = build(parents, result, factory=NumpyFactory(per_slice_rescale=per_slice))
    assert dciodvfy_errors(datasets, tmp_path) == []


@pytest.mark.parametrize("modality", ["CT", "MR", "PT"])
def test_a_label_map_passes_dciodvfy_without_errors(modality, tmp_path):
    parents = parents_of(modality)
    volume = NumpyGrinder()(parents)
    labels = (volume.array > np.median(volume.array)).astype(np.uint8)
    datasets = build(parents, labels)
    assert dciodvfy_errors(datasets, tmp_path) == []


def test_written_files_read_back_with_the_same_values(tmp_path):
    parents = parents_of("CT")
    result = np.linspace(-1000, 2000.5, 6 * 16 * 20, dtype=np.float32).reshape(6, 16, 20)
    datasets = build(parents, result)
    for dataset in datasets:
        dataset.save_as(tmp_path / f"{dataset.InstanceNumber}.dcm", enforce_file_format=True)
    reread = by_number([dcmread(p) for p in tmp_path.glob("*.dcm")])
    step = float(reread[0].RescaleSlope)
    for k, dataset in enumerate(reread):
        assert np.abs(real_values(dataset) - result[k]).max() <= step / 2 + 1e-9


# -- geometry ------------------------------------------------------------------------------------

def test_positions_and_orientation_come_from_the_volume():
    spec = SeriesSpec("oblique", orientation=rotated(20.0, 20.0), pixel_spacing=(0.7, 1.1), slice_spacing=2.5)
    parents = build_series(spec)
    volume = NumpyGrinder()(parents)
    datasets = by_number(build(parents, volume, modality="CT"))
    assert len(datasets) == volume.slice_count
    for k, dataset in enumerate(datasets):
        assert np.allclose([float(v) for v in dataset.ImagePositionPatient], volume.slice_position(k), atol=1e-6)
        assert np.allclose([float(v) for v in dataset.ImageOrientationPatient], volume.image_orientation, atol=1e-9)
        assert [float(v) for v in dataset.PixelSpacing] == pytest.approx([0.7, 1.1])
        assert float(dataset.SliceThickness) == pytest.approx(2.5)


def test_a_bare_array_is_placed_on_the_parents_grid_even_when_they_arrived_shuffled():
    spec = SeriesSpec("shuffled", orientation=rotated(10.0, -20.0), shuffle=True)
    parents = build_series(spec)
    volume = NumpyGrinder()(parents)
    result = volume.array.astype(np.float32) / 7
    datasets = by_number(build(parents, result, modality="CT"))
    for k, dataset in enumerate(datasets):
        assert np.allclose([float(v) for v in dataset.ImagePositionPatient], volume.slice_position(k), atol=1e-6)
        step = float(dataset.RescaleSlope)
        assert np.abs(real_values(dataset) - result[k]).max() <= step / 2 + 1e-9


def test_instance_numbers_run_along_the_slice_normal():
    parents = parents_of("CT", shuffle=True)
    datasets = build(parents, NumpyGrinder()(parents))
    normal = np.cross([1.0, 0, 0], [0, 1.0, 0])
    along = [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in by_number(datasets)]
    assert [int(ds.InstanceNumber) for ds in by_number(datasets)] == list(range(1, 7))
    assert along == sorted(along)


def test_instance_numbers_run_along_the_normal_when_the_volume_runs_the_other_way():
    array = np.arange(4 * 3 * 3, dtype=np.float32).reshape(4, 3, 3)
    # rows run to the patient's right, so the normal points to the feet (-z); the slices go up
    direction = np.column_stack([(0, 0, 1), (0, 1, 0), (-1, 0, 0)])
    reversed_volume = Volume(array=array, origin=(0, 0, 30), spacing=(2, 1, 1), direction=direction)
    parents = parents_of("CT")
    header = NumpyFactory().build_series_header(parents, BLUEPRINTS["CT"])
    datasets = by_number(NumpyFactory().build_series(reversed_volume, header))
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert z == [36.0, 34.0, 32.0, 30.0]
    assert np.array_equal(datasets[0].pixel_array.astype(np.float32) * float(datasets[0].RescaleSlope)
                          + float(datasets[0].RescaleIntercept), array[3])


def test_grinding_the_output_gives_back_the_volume():
    spec = SeriesSpec("coronal", modality="MR", orientation=CORONAL, slice_spacing=3.0)
    parents = build_series(spec)
    volume = NumpyGrinder()(parents)
    result = volume.array.astype(np.float32) * 1.37
    datasets = build(parents, Volume(result, volume.origin, volume.spacing, volume.direction))
    again = NumpyGrinder()(datasets)
    assert np.allclose(again.affine, volume.affine, atol=1e-6)
    step = float(datasets[0].RescaleSlope)
    assert np.abs(again.array - result).max() <= step / 2 + 1e-3


def test_source_image_references_name_the_parent_at_the_same_position():
    parents = parents_of("CT", shuffle=True)
    by_uid = {p.SOPInstanceUID: p for p in parents}
    datasets = build(parents, NumpyGrinder()(parents))
    for dataset in datasets:
        reference = dataset.SourceImageSequence[0]
        source = by_uid[reference.ReferencedSOPInstanceUID]
        assert reference.ReferencedSOPClassUID == source.SOPClassUID
        assert [float(v) for v in source.ImagePositionPatient] == [float(v) for v in dataset.ImagePositionPatient]


def test_a_bare_array_without_parents_is_refused():
    factory = NumpyFactory()
    header = factory.build_series_header(parents_of("CT"), BLUEPRINTS["CT"])
    with pytest.raises(InvalidDatasetError, match="Volume"):
        factory.build_series(np.zeros((6, 16, 20)), header, parent_series=[])


def test_a_bare_array_of_another_shape_than_the_parents_is_refused():
    parents = parents_of("CT")
    with pytest.raises(InvalidDatasetError, match=r"\(5, 16, 20\)"):
        build(parents, np.zeros((5, 16, 20)))


# -- pixel encoding in the datasets ----------------------------------------------------------------

def test_per_slice_rescale_writes_a_slope_per_slice():
    parents = parents_of("CT")
    result = np.stack([np.full((16, 20), 10.0 ** k) * np.linspace(0, 1, 20) for k in range(6)])
    datasets = by_number(build(parents, result, factory=NumpyFactory(per_slice_rescale=True)))
    slopes = [float(ds.RescaleSlope) for ds in datasets]
    assert len(set(slopes)) == 6
    for k, dataset in enumerate(datasets):
        assert np.abs(real_values(dataset) - result[k]).max() <= slopes[k] / 2 + 1e-9


def test_pet_results_keep_rescale_intercept_zero_and_number_their_images():
    parents = parents_of("PT")
    result = NumpyGrinder()(parents).array - 100.0  # some negative values
    datasets = by_number(build(parents, result, factory=NumpyFactory(per_slice_rescale=True)))
    assert {ds.RescaleIntercept for ds in datasets} == {0}
    assert [ds.ImageIndex for ds in datasets] == list(range(1, 7))
    assert {ds.NumberOfSlices for ds in datasets} == {6}
    assert datasets[0].PixelRepresentation == 1
    assert list(datasets[0].ImageType[:2]) == ["DERIVED", "PRIMARY"]


def test_ct_results_are_derived_axial_images_in_hounsfield_units():
    datasets = build(parents_of("CT"), np.zeros((6, 16, 20)))
    assert list(datasets[0].ImageType[:3]) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert datasets[0].RescaleType == "HU"


def test_whole_number_mr_results_are_stored_without_rescale():
    datasets = build(parents_of("MR"), np.ones((6, 16, 20), dtype=np.int16))
    assert "RescaleSlope" not in datasets[0] and "RescaleIntercept" not in datasets[0]


def test_window_defaults_to_the_range_of_the_data():
    result = np.linspace(-100, 300, 6 * 16 * 20).reshape(6, 16, 20)
    datasets = build(parents_of("CT"), result)
    assert (float(datasets[0].WindowCenter), float(datasets[0].WindowWidth)) == pytest.approx((100, 400))


def test_a_given_window_is_written():
    factory = NumpyFactory(window=Window(center=40, width=400))
    datasets = build(parents_of("CT"), np.zeros((6, 16, 20)), factory=factory)
    assert (datasets[0].WindowCenter, datasets[0].WindowWidth) == (40, 400)


def test_no_window_keeps_the_blueprint_without_one():
    datasets = build(parents_of("CT"), np.zeros((6, 16, 20)), factory=NumpyFactory(window=None))
    assert "WindowCenter" not in datasets[0]


def test_instances_do_not_share_element_values():
    datasets = build(parents_of("CT"), np.zeros((6, 16, 20)))
    datasets[0].ImageType[2] = "LOCALIZER"
    datasets[0].PatientName = "Changed"
    assert datasets[1].ImageType[2] == "AXIAL" and datasets[1].PatientName == "Demo^Patient"


def test_a_pipeline_name_makes_the_uids_repeatable():
    parents = parents_of("CT")
    first = build(parents, np.zeros((6, 16, 20)), factory=NumpyFactory(pipeline_name="seg"))
    second = build(parents, np.zeros((6, 16, 20)), factory=NumpyFactory(pipeline_name="seg"))
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in second]
    assert first[0].SeriesInstanceUID == second[0].SeriesInstanceUID


def test_a_multi_frame_parent_gives_single_frame_images():
    spec = SeriesSpec("enhanced", multiframe=True)
    parents = build_series(spec)
    volume = NumpyGrinder()(parents)
    # the image plane of an enhanced parent is in its functional groups: the factory writes its own
    datasets = build(parents, volume, blueprint=DEFAULT_BLUEPRINT)
    assert len(datasets) == volume.slice_count
    assert {str(ds.SOPClassUID) for ds in datasets} == {"1.2.840.10008.5.1.4.1.1.2"}
    assert all("NumberOfFrames" not in ds for ds in datasets)


def test_a_4d_volume_is_written_volume_after_volume():
    spec = SeriesSpec("dynamic", modality="MR", volumes=3, slices=4, shuffle=True)
    parents = build_series(spec)
    volume = NumpyGrinder()(parents)
    datasets = by_number(build(parents, volume))
    assert len(datasets) == 12
    assert [int(ds.TemporalPositionIdentifier) for ds in datasets] == [1] * 4 + [2] * 4 + [3] * 4
    again = NumpyGrinder()(datasets)
    assert again.shape == volume.shape
    assert np.allclose(again.affine, volume.affine, atol=1e-6)
    assert np.array_equal(again.array, volume.array)


# -- NumpyCaller ------------------------------------------------------------------------------------

def test_numpy_caller_computes_a_value_from_each_stored_slice():
    blueprint = BLUEPRINTS["CT"] + Blueprint([
        NumpyCaller("SmallestImagePixelValue", "SS", np.min),
        NumpyCaller("LargestImagePixelValue", "SS", np.max),
    ])
    result = np.arange(6 * 16 * 20, dtype=np.int16).reshape(6, 16, 20)
    datasets = by_number(build(parents_of("CT"), result, blueprint=blueprint))
    for dataset in datasets:
        stored = dataset.pixel_array
        assert dataset.SmallestImagePixelValue == stored.min()
        assert dataset.LargestImagePixelValue == stored.max()


def test_numpy_caller_can_see_the_real_values():
    blueprint = BLUEPRINTS["CT"] + Blueprint([
        NumpyCaller("ImageComments", "LT", lambda s: f"mean {s.mean():.2f}", values="real"),
    ])
    result = np.stack([np.full((16, 20), k + 0.25) for k in range(6)])
    datasets = by_number(build(parents_of("CT"), result, blueprint=blueprint))
    assert [ds.ImageComments for ds in datasets] == [f"mean {k + 0.25:.2f}" for k in range(6)]


def test_numpy_caller_rejects_a_value_kind_it_does_not_know():
    with pytest.raises(ValueError, match="stored"):
        NumpyCaller("LargestImagePixelValue", "US", np.max, values="raw")


def test_a_window_given_as_a_pair_is_written():
    datasets = build(parents_of("CT"), np.zeros((6, 16, 20)), factory=NumpyFactory(window=(50, 350)))
    assert (datasets[0].WindowCenter, datasets[0].WindowWidth) == (50, 350)


def test_a_window_option_that_is_not_a_window_is_refused():
    with pytest.raises(ConfigurationError, match="window must be"):
        NumpyFactory(window="soft tissue")


def test_numpy_caller_is_the_registered_virtual_element_numpy_caller(clean_registry):
    from dicomnode.plugins import get_registry

    assert get_registry().virtual_element("numpy-caller") is NumpyCaller


def test_a_4d_mr_result_passes_dciodvfy_without_errors(tmp_path):
    parents = build_series(SeriesSpec("dynamic-mr", modality="MR", volumes=2, slices=3))
    datasets = build(parents, NumpyGrinder()(parents).array.astype(np.float32) / 3)
    assert dciodvfy_errors(datasets, tmp_path) == []


def test_a_gantry_tilted_volume_keeps_its_slice_positions_and_the_distance_between_planes():
    spec = SeriesSpec("tilted", tilt_mm=0.3, slice_spacing=2.0)
    parents = build_series(spec)
    volume = NumpyGrinder(accept_gantry_tilt=True)(parents)
    datasets = by_number(build(parents, volume, modality="CT"))
    for k, dataset in enumerate(datasets):
        assert np.allclose([float(v) for v in dataset.ImagePositionPatient], volume.slice_position(k), atol=1e-6)
    # the planes are 2 mm apart along the normal, though each slice shifts 0.3 mm in-plane
    assert float(datasets[0].SliceThickness) == pytest.approx(2.0)


def test_a_blueprint_may_give_ct_results_another_rescale_type():
    blueprint = BLUEPRINTS["CT"] + Blueprint([StaticElement("RescaleType", "LO", "US")])
    datasets = build(parents_of("CT"), np.linspace(0, 1, 6 * 16 * 20).reshape(6, 16, 20), blueprint=blueprint)
    assert {ds.RescaleType for ds in datasets} == {"US"}


def test_numpy_caller_rejects_a_vr_the_tag_cannot_have():
    with pytest.raises(ValueError, match="the DICOM dictionary gives US or SS"):
        NumpyCaller("LargestImagePixelValue", "DS", np.max)


def test_building_on_lazy_parents_reads_their_headers_only(tmp_path):
    from dicomnode.dicom.lazy import LazyDataset
    from dicomnode.dicom.synthetic import write_series

    paths = write_series(parents_of("CT"), tmp_path)
    volume = NumpyGrinder()([LazyDataset(path) for path in paths])  # leaves them unloaded
    parents = [LazyDataset(path) for path in paths]

    build(parents, volume.array.astype(np.float32))  # a bare array: placed by the parents' geometry

    assert not any(parent.pixels_loaded for parent in parents)
