"""NiftiFactory: a NIfTI image becomes a DICOM series, with or without a parent series."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from conftest import require_peer

from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT
from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import BlueprintError, ConfigurationError, InvalidDatasetError
from dicomnode_nifti import NiftiFactory
from dicomnode_nifti.factory import nifti_to_volume, standalone_blueprint

pytestmark = pytest.mark.plugin("nifti")

# 2 mm voxels along i, 1.5 mm along j, 3 mm along k; RAS origin (10, -20, 30)
AFFINE = np.array([
    [2.0, 0.0, 0.0, 10.0],
    [0.0, 1.5, 0.0, -20.0],
    [0.0, 0.0, 3.0, 30.0],
    [0.0, 0.0, 0.0, 1.0],
])


def image(shape=(12, 10, 5), dtype=np.float32, affine=AFFINE) -> nib.Nifti1Image:
    values = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) * 0.37 - 4.0
    return nib.Nifti1Image(values.astype(dtype), affine)


def build(img, modality="MR", kwargs=None, factory=None):
    factory = factory or NiftiFactory()
    header = factory.build_series_header(None, standalone_blueprint(modality), kwargs or {})
    return sorted(factory.build_series(img, header), key=lambda ds: int(ds.InstanceNumber))


def dciodvfy_errors(datasets, folder: Path) -> list[str]:
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


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_a_series_without_parent_passes_dciodvfy_without_errors(modality, tmp_path):
    datasets = build(image(), modality, {"patient_id": "N1", "patient_name": "Nifti^Test"})
    assert dciodvfy_errors(datasets, tmp_path) == []


def test_patient_and_study_come_from_kwargs():
    datasets = build(image(), kwargs={"patient_id": "N1", "patient_name": "Nifti^Test",
                                      "study_instance_uid": "1.2.3.4", "series_description": "map"})
    assert {(ds.PatientID, str(ds.PatientName), ds.StudyInstanceUID, ds.SeriesDescription)
            for ds in datasets} == {("N1", "Nifti^Test", "1.2.3.4", "map")}


def test_every_instance_shares_one_new_study_series_and_frame_of_reference():
    datasets = build(image())
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds[keyword].value for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)


def test_geometry_comes_from_the_affine():
    datasets = build(image())
    # RAS (10, -20, 30) is LPS (-10, 20, 30); the first DICOM row is NIfTI's last j (rows stored bottom first)
    top_left = np.array([-10.0, 20.0 + 9 * 1.5 * -1, 30.0])
    assert [float(v) for v in datasets[0].ImageOrientationPatient] == [-1, 0, 0, 0, 1, 0]
    assert [float(v) for v in datasets[0].PixelSpacing] == [1.5, 2.0]
    assert float(datasets[0].SliceThickness) == 3.0
    # the normal of this orientation points to the feet, so instance 1 is the highest slice
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert z == [42.0, 39.0, 36.0, 33.0, 30.0]
    assert np.allclose([float(v) for v in datasets[-1].ImagePositionPatient], top_left)


def test_voxel_values_land_on_the_right_pixels():
    img = image()
    data = np.asarray(img.dataobj, dtype=np.float64)
    datasets = build(img)
    step = float(datasets[0].RescaleSlope)
    for dataset in datasets:
        k = round((float(dataset.ImagePositionPatient[2]) - 30.0) / 3.0)
        real = dataset.pixel_array * step + float(dataset.RescaleIntercept)
        # DICOM row r, column c is NIfTI voxel (c, rows - 1 - r, k)
        expected = data[:, ::-1, k].T
        assert np.abs(real - expected).max() <= step / 2 + 1e-9


def test_a_4d_image_gives_one_instance_per_slice_of_every_volume():
    datasets = build(image(shape=(6, 4, 3, 2)))
    assert len(datasets) == 6
    assert [int(ds.TemporalPositionIdentifier) for ds in datasets] == [1, 1, 1, 2, 2, 2]


def test_a_copy_element_without_a_parent_is_a_clear_error():
    factory = NiftiFactory()
    with pytest.raises(BlueprintError, match=r"no parent dataset to copy from"):
        factory.build_series_header(None, DEFAULT_BLUEPRINT)


def test_with_a_parent_series_slices_in_the_parents_planes_reference_them():
    parents = synthetic_series(slices=4, rows=8, columns=8, pixel_spacing=(0.5, 0.5), slice_thickness=2.0)
    # the NIfTI of that grid: i along +x (RAS -x), j up the rows, k along +z
    affine = np.array([[-0.5, 0, 0, 2.0], [0, 0.5, 0, -(-2.0 + 7 * 0.5)], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.zeros((8, 8, 4), dtype=np.float32), affine)
    factory = NiftiFactory()
    header = factory.build_series_header(parents, DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT)
    datasets = factory.build_series(img, header)
    position_of = {p.SOPInstanceUID: [float(v) for v in p.ImagePositionPatient] for p in parents}
    for dataset in datasets:
        source = dataset.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert position_of[source] == [float(v) for v in dataset.ImagePositionPatient]


def test_a_zero_voxel_size_is_refused():
    affine = AFFINE.copy()
    affine[2, 2] = 0.0
    # nibabel itself refuses such an affine; other image objects with an affine may not
    flat = SimpleNamespace(affine=affine, dataobj=np.zeros((2, 2, 2), dtype=np.float32))
    with pytest.raises(InvalidDatasetError, match="voxel size of 0"):
        nifti_to_volume(flat)


def test_an_image_with_five_dimensions_is_refused():
    with pytest.raises(InvalidDatasetError, match="4D"):
        nifti_to_volume(nib.Nifti1Image(np.zeros((2, 2, 2, 2, 2), dtype=np.float32), AFFINE))


def test_standalone_blueprint_names_the_modalities_it_makes():
    with pytest.raises(ConfigurationError, match="CT or MR"):
        standalone_blueprint("US")


def test_something_that_is_not_an_image_is_refused():
    factory = NiftiFactory()
    header = factory.build_series_header(None, standalone_blueprint("MR"))
    with pytest.raises(InvalidDatasetError, match="nibabel image"):
        factory.build_series("result.nii", header)
