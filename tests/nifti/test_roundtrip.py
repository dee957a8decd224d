"""DICOM -> NIfTI -> DICOM keeps the geometry and the values (within half a quantisation step)."""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
import pytest
from conftest import require_peer
from geometry_series import CASES, build_series

from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT, MR_IMAGE_BLUEPRINT
from dicomnode_nifti import NiftiFactory, NiftiGrinder
from dicomnode_nifti.factory import standalone_blueprint
from dicomnode_numpy import NumpyGrinder

pytestmark = pytest.mark.plugin("nifti")

#: every generated single-frame case without gantry tilt (NIfTI has no tilt; dcm2niix resamples it)
ROUND_TRIP_CASES = [name for name, spec in CASES.items() if not spec.multiframe and not spec.tilt_mm]
PARENT_BLUEPRINTS = {
    "CT": DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT,
    "MR": DEFAULT_BLUEPRINT + MR_IMAGE_BLUEPRINT,
    # the geometry generator's PET images hold only what grinding needs, not the PET modules
    "PT": DEFAULT_BLUEPRINT,
}


def through_nifti(parents, tmp_path, via_file: bool, with_parent: bool):
    image = NiftiGrinder(rotate_3d_to_ras=False)(parents)
    if via_file:
        image.to_filename(tmp_path / "series.nii")
        image = nib.load(tmp_path / "series.nii")
    factory = NiftiFactory()
    if with_parent:
        header = factory.build_series_header(parents, PARENT_BLUEPRINTS[str(parents[0].Modality)])
    else:
        header = factory.build_series_header(None, standalone_blueprint("MR"))
    return factory.build_series(image, header)


def largest_half_step(datasets) -> float:
    return max(float(ds.get("RescaleSlope", 1)) for ds in datasets) / 2


@pytest.mark.parametrize("name", ROUND_TRIP_CASES)
def test_geometry_is_preserved_exactly_in_memory(name, tmp_path):
    parents = build_series(CASES[name])
    before = NumpyGrinder()(parents)
    after = NumpyGrinder()(through_nifti(parents, tmp_path, via_file=False, with_parent=True))
    assert after.shape == before.shape
    assert np.abs(after.affine - before.affine).max() <= 1e-9


@pytest.mark.parametrize("name", ROUND_TRIP_CASES)
def test_geometry_is_preserved_through_a_nifti_file(name, tmp_path):
    # the file keeps its affine in float32: oblique cosines keep about 7 digits
    parents = build_series(CASES[name])
    before = NumpyGrinder()(parents)
    after = NumpyGrinder()(through_nifti(parents, tmp_path, via_file=True, with_parent=False))
    assert after.shape == before.shape
    assert np.abs(after.affine - before.affine).max() <= 1e-5


@pytest.mark.parametrize("name", ROUND_TRIP_CASES)
def test_values_come_back_within_half_a_quantisation_step(name, tmp_path):
    parents = build_series(CASES[name])
    before = NumpyGrinder(dtype="float64")(parents)
    datasets = through_nifti(parents, tmp_path, via_file=True, with_parent=True)
    after = NumpyGrinder(dtype="float64")(datasets)
    # float32 NIfTI values (PET with per-slice slopes) add their own rounding, far below a step
    tolerance = largest_half_step(datasets) + np.abs(before.array).max() * 2.0**-23
    assert np.abs(after.array - before.array).max() <= tolerance


def test_integer_series_come_back_identical(tmp_path):
    parents = build_series(CASES["axial-ct"])
    before = NumpyGrinder()(parents)
    after = NumpyGrinder()(through_nifti(parents, tmp_path, via_file=True, with_parent=True))
    assert np.array_equal(after.array, before.array)


def test_shuffled_parents_give_the_same_series_as_ordered_ones(tmp_path):
    spec = CASES["shuffled-ct"]
    shuffled = through_nifti(build_series(spec), tmp_path, via_file=False, with_parent=True)
    ordered = through_nifti(build_series(spec.with_(shuffle=False)), tmp_path, via_file=False,
                            with_parent=True)
    assert len(shuffled) == len(ordered)
    for a, b in zip(shuffled, ordered):
        assert a.ImagePositionPatient == b.ImagePositionPatient
        assert a.PixelData == b.PixelData


def test_spacings_read_from_a_nifti_file_are_written_as_the_decimals_meant(tmp_path):
    parents = build_series(CASES["non-square-pixels-ct"])
    datasets = through_nifti(parents, tmp_path, via_file=True, with_parent=False)
    # the file holds 0.7 and 1.1 as float32 (0.69999998807907...); DICOM gets the decimals back
    assert [str(v) for v in datasets[0].PixelSpacing] == [str(v) for v in parents[0].PixelSpacing]
    assert str(datasets[0].SliceThickness) == str(parents[0].SliceThickness)


def test_a_round_trip_with_a_ct_parent_passes_dciodvfy_without_errors(tmp_path):
    program = require_peer("dciodvfy")
    parents = build_series(CASES["oblique-ct"])
    datasets = through_nifti(parents, tmp_path, via_file=True, with_parent=True)
    errors = []
    for number, dataset in enumerate(datasets):
        path = tmp_path / f"{number}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        result = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=60)
        errors += [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert errors == []
