"""NiftiGrinder equals dcm2niix: same voxels, same affine (within 1e-3 mm), same stored type.

Each test writes a series to disk, runs the real ``dcm2niix`` on it and
compares its NIfTI with the grinder's, read back from the file it saved.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import require_peer
from geometry_series import CASES, SAGITTAL, SeriesSpec, build_series, write_series
from mosaic_series import mosaic_series
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomnode.dicom.lazy import LazyDataset
from dicomnode_nifti.grinder import NiftiGrinder
from dicomnode_nifti.slices import SLICE_CODES

pytestmark = pytest.mark.plugin("nifti")

NIBABEL_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"

#: sagittal slices whose normal cross(row, column) points to the patient's left (+x), delivered in
#: order and shuffled, and a 4D sagittal series whose normal points right
SAGITTAL_CASES = {
    spec.name: spec for spec in (
        SeriesSpec("sagittal-mr-left", modality="MR", orientation=((0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
                   slice_spacing=3.0),
        SeriesSpec("sagittal-mr-left-shuffled", modality="MR", orientation=((0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
                   slice_spacing=3.0, shuffle=True),
        SeriesSpec("sagittal-ct-4d", orientation=SAGITTAL, volumes=2, shuffle=True),
    )
}

THREE_D_CASES = {
    name: CASES[base].with_(acquisition_3d=True, name=name)
    for name, base in (("coronal-mr-3d", "coronal-mr"), ("oblique-mr-3d", "oblique-mr"))
}


def dcm2niix(source: Path, out: Path, *options: str, files: int = 1) -> nib.Nifti1Image:
    """Run the real dcm2niix on the folder ``source``; its first NIfTI image (of ``files``)."""
    program = require_peer("dcm2niix")
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [program, "-z", "n", "-b", "n", "-f", "reference", *options, "-o", str(out), str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    images = sorted(out.glob("*.nii"))
    assert result.returncode == 0 and len(images) == files, result.stdout + result.stderr
    return nib.load(images[0])


def grind_and_save(datasets: list, path: Path, grinder: NiftiGrinder | None = None) -> nib.Nifti1Image:
    """The grinder's image, written to ``path`` and read back as any NIfTI reader would."""
    image = (grinder or NiftiGrinder())(datasets)
    image.to_filename(path)
    return nib.load(path)


def assert_same_nifti(mine: nib.Nifti1Image, reference: nib.Nifti1Image) -> None:
    assert mine.shape == reference.shape
    assert np.abs(mine.affine - reference.affine).max() <= 1e-3
    assert mine.get_data_dtype() == reference.get_data_dtype()
    assert (float(mine.dataobj.slope), float(mine.dataobj.inter)) == (
        float(reference.dataobj.slope), float(reference.dataobj.inter))
    assert np.array_equal(np.asarray(mine.dataobj.get_unscaled()), np.asarray(reference.dataobj.get_unscaled()))
    assert np.array_equal(mine.get_fdata(), reference.get_fdata())
    for header in (mine.header, reference.header):
        assert (int(header["sform_code"]), int(header["qform_code"])) == (1, 1)
    assert (int(mine.header["dim_info"]), int(mine.header["slice_code"])) == (
        int(reference.header["dim_info"]), int(reference.header["slice_code"]))


@pytest.mark.parametrize("name", sorted(CASES) + sorted(THREE_D_CASES))
def test_generated_series_equal_dcm2niix(name: str, tmp_path: Path) -> None:
    spec = CASES.get(name) or THREE_D_CASES[name]
    datasets = build_series(spec)
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save(datasets, tmp_path / "mine.nii")

    assert_same_nifti(mine, reference)


def test_3d_acquisition_kept_in_acquisition_order_equals_dcm2niix_x_i(tmp_path: Path) -> None:
    datasets = build_series(THREE_D_CASES["oblique-mr-3d"])
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix", "-x", "i")
    mine = grind_and_save(datasets, tmp_path / "mine.nii", NiftiGrinder(rotate_3d_to_ras=False))

    assert_same_nifti(mine, reference)


def _unpacked(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name.removesuffix(".gz")
    source = NIBABEL_DATA / name
    if name.endswith(".gz"):
        target.write_bytes(gzip.decompress(source.read_bytes()))
    else:
        shutil.copyfile(source, target)
    return target


def test_siemens_mosaic_diffusion_series_equals_dcm2niix(tmp_path: Path) -> None:
    paths = [_unpacked(name, tmp_path / "dicom") for name in ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz")]

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save([dcmread(path) for path in paths], tmp_path / "mine.nii")

    assert mine.shape == (128, 128, 48, 2)  # 48 slices cut from each 896x896 mosaic
    assert_same_nifti(mine, reference)


def test_philips_enhanced_3d_mprage_equals_dcm2niix_with_displayed_values(tmp_path: Path) -> None:
    path = _unpacked("philips_mprage.dcm.gz", tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix", "-p", "n")
    mine = grind_and_save([dcmread(path)], tmp_path / "mine.nii", NiftiGrinder(philips_precise_scaling=False))

    assert_same_nifti(mine, reference)


def test_philips_precise_scaling_equals_dcm2niix_default(tmp_path: Path) -> None:
    path = _unpacked("philips_mprage.dcm.gz", tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")  # -p y is its default
    mine = grind_and_save([dcmread(path)], tmp_path / "mine.nii")  # and ours

    assert float(mine.dataobj.slope) == pytest.approx(3727.86, rel=1e-5)  # 1 / private scale slope
    assert_same_nifti(mine, reference)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_pydicom_single_slices_equal_dcm2niix(name: str, tmp_path: Path) -> None:
    (tmp_path / "dicom").mkdir()
    shutil.copyfile(get_testdata_file(name), tmp_path / "dicom" / name)

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save([dcmread(tmp_path / "dicom" / name)], tmp_path / "mine.nii")

    assert_same_nifti(mine, reference)



def test_accepted_gantry_tilt_keeps_dcm2niix_voxels_with_the_true_sheared_affine(tmp_path: Path) -> None:
    spec = CASES["axial-ct"].with_(tilt_mm=0.3, name="tilted-ct")
    datasets = build_series(spec)
    for ds in datasets:
        ds.GantryDetectorTilt = 11.31
    write_series(datasets, tmp_path / "dicom")

    # dcm2niix writes the plain image and a resampled *_Tilt_1 image; the first is the plain one
    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix", files=2)
    mine = grind_and_save(datasets, tmp_path / "mine.nii", NiftiGrinder(accept_gantry_tilt=True))

    assert np.array_equal(mine.get_fdata(), reference.get_fdata())
    np.testing.assert_allclose(mine.affine[:, [0, 1, 3]], reference.affine[:, [0, 1, 3]], atol=1e-3)
    # dcm2niix's plain image steps straight along the normal; ours follows the slices (0.3 mm in-plane)
    np.testing.assert_allclose(mine.affine[:3, 2], [0.0, -0.3, 1.5], atol=1e-4)
    np.testing.assert_allclose(reference.affine[:3, 2], [0.0, 0.0, 1.5], atol=1e-4)


def test_per_slice_fractional_rescales_equal_dcm2niix_to_the_bit(tmp_path: Path) -> None:
    datasets = build_series(CASES["thick-slices-pt"])
    for ds in datasets:
        # slopes and an intercept that no binary float holds exactly, as real PET has
        ds.RescaleSlope = f"{0.0123456789 * ds.ImageIndex:.10g}"
        ds.RescaleIntercept = "-3.3"
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save(datasets, tmp_path / "mine.nii")

    assert mine.get_data_dtype() == np.float32
    assert_same_nifti(mine, reference)


def _classic_philips(intercept: str) -> list:
    datasets = build_series(CASES["oblique-mr"])
    for ds in datasets:
        ds.Manufacturer = "Philips Medical Systems"
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "2.10793650793650", intercept, "normalized"
        block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        block.add_new(0x0E, "FL", 0.0002682503836695105)  # the private scale slope
    return datasets


@pytest.mark.parametrize(("precise", "dcm2niix_option"), [(True, "y"), (False, "n")])
def test_classic_philips_private_scaling_equals_dcm2niix(precise: bool, dcm2niix_option: str,
                                                         tmp_path: Path) -> None:
    datasets = _classic_philips("0")
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix", "-p", dcm2niix_option)
    mine = grind_and_save(datasets, tmp_path / "mine.nii", NiftiGrinder(philips_precise_scaling=precise))

    assert_same_nifti(mine, reference)


def test_philips_precise_scaling_with_an_intercept_matches_dcm2niix_to_float32_rounding(tmp_path: Path) -> None:
    datasets = _classic_philips("-5.5")
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix", "-p", "y")
    mine = grind_and_save(datasets, tmp_path / "mine.nii", NiftiGrinder(philips_precise_scaling=True))

    # (stored * RS + RI) / (RS * SS): dcm2niix rounds its float32 scale fields a unit or two
    # in the last place differently; the stored integers are the same
    assert np.array_equal(np.asarray(mine.dataobj.get_unscaled()), np.asarray(reference.dataobj.get_unscaled()))
    np.testing.assert_allclose(float(mine.dataobj.slope), float(reference.dataobj.slope), rtol=1e-6)
    np.testing.assert_allclose(float(mine.dataobj.inter), float(reference.dataobj.inter), rtol=1e-6)
    np.testing.assert_allclose(mine.get_fdata(), reference.get_fdata(), rtol=1e-6, atol=1e-3)


def test_rle_compressed_series_equals_dcm2niix(tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    datasets = build_series(CASES["oblique-ct"])
    for ds in datasets:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save(datasets, tmp_path / "mine.nii")

    assert_same_nifti(mine, reference)


def test_the_time_step_of_a_ge_series_includes_its_slice_group_delay_as_dcm2niix_writes_it(tmp_path: Path) -> None:
    datasets = build_series(CASES["4d-mr"])
    for ds in datasets:
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        ds.RepetitionTime = 2000
        ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x7C, "FL", 3.0)  # seconds
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save([LazyDataset(path) for path in sorted((tmp_path / "dicom").glob("*.dcm"))],
                          tmp_path / "mine.nii")

    assert float(mine.header["pixdim"][4]) == pytest.approx(5.0)  # 2 s of TR + 3 s of delay
    assert float(mine.header["pixdim"][4]) == pytest.approx(float(reference.header["pixdim"][4]))
    assert_same_nifti(mine, reference)


@pytest.mark.parametrize("name", ["sagittal-mr-left", "sagittal-mr-left-shuffled", "sagittal-ct-4d"])
def test_sagittal_series_whose_normal_points_either_way_equal_dcm2niix(name: str, tmp_path: Path) -> None:
    spec = SAGITTAL_CASES[name]
    datasets = build_series(spec)
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save(datasets, tmp_path / "mine.nii")

    assert_same_nifti(mine, reference)


# --- Siemens mosaics built here, with a CSA header: slice order, dim_info, slice_code ------------------------

#: slice -> its place in the acquisition, for each order NIfTI names, and a multiband acquisition
ACQUISITION_ORDERS = {
    "seq_inc": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "seq_dec": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    "alt_inc": [0, 5, 1, 6, 2, 7, 3, 8, 4, 9], "alt_dec": [9, 4, 8, 3, 7, 2, 6, 1, 5, 0],
    "alt_inc2": [5, 0, 6, 1, 7, 2, 8, 3, 9, 4], "alt_dec2": [4, 9, 3, 8, 2, 7, 1, 6, 0, 5],
    "multiband": [0, 1, 2, 3, 4, 0, 1, 2, 3, 4],
}
MOSAIC_PLANES = {
    # sagittal, the slice normal against cross(row, column): dcm2niix's PSL, the tiles' own order
    "sagittal-against": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), -1.0),
    "sagittal-along": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), 1.0),
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), 1.0),
    "coronal-against": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), -1.0),
}


@pytest.mark.parametrize("plane", sorted(MOSAIC_PLANES))
def test_siemens_mosaics_whose_csa_normal_points_either_way_equal_dcm2niix(plane: str, tmp_path: Path) -> None:
    row, column, sign = MOSAIC_PLANES[plane]
    datasets, _ = mosaic_series(row=row, column=column, normal_sign=sign)
    paths = write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save([LazyDataset(path) for path in paths], tmp_path / "mine.nii")

    assert mine.shape == (12, 16, 10, 2)
    assert_same_nifti(mine, reference)
    slice_axis = mine.affine[:3, 2] / np.linalg.norm(mine.affine[:3, 2])
    csa_normal_in_ras = np.array([-1.0, -1.0, 1.0]) * sign * np.cross(row, column)
    assert np.allclose(slice_axis, csa_normal_in_ras)  # slice k is tile k, along the CSA normal


@pytest.mark.parametrize("order", sorted(ACQUISITION_ORDERS))
def test_the_slice_code_of_a_mosaic_is_dcm2niixs(order: str, tmp_path: Path) -> None:
    times = [50.0 * rank for rank in ACQUISITION_ORDERS[order]]
    datasets, _ = mosaic_series(row=(0.0, 1.0, 0.0), column=(0.0, 0.0, -1.0), normal_sign=-1.0, slice_times=times,
                                phase="ROW")
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save(datasets, tmp_path / "mine.nii")

    expected = 0 if order == "multiband" else SLICE_CODES[order]
    assert int(mine.header["slice_code"]) == int(reference.header["slice_code"]) == expected
    assert int(mine.header["dim_info"]) == int(reference.header["dim_info"]) == (3 << 4) | (1 << 2) | 2


@pytest.mark.parametrize("direction", ["ROW", "COL"])
def test_dim_info_of_a_series_with_a_phase_encoding_direction_is_dcm2niixs(direction: str, tmp_path: Path) -> None:
    datasets = build_series(CASES["coronal-mr"])
    for dataset in datasets:
        dataset.InPlanePhaseEncodingDirection = direction
    write_series(datasets, tmp_path / "dicom")

    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    mine = grind_and_save(datasets, tmp_path / "mine.nii")

    assert_same_nifti(mine, reference)
    assert int(mine.header["dim_info"]) == {"ROW": 54, "COL": 57}[direction]


# --- Philips DWI with its derived isotropic (trace) volumes in the series ----------------------------------------

#: volumes of a Philips DWI series: (b-value, gradient direction); (1000, (0, 0, 0)) is a derived trace
DWI_CASES = {
    "trace-last": [(0, (0, 0, 0)), (1000, (1, 0, 0)), (1000, (0, 1, 0)), (1000, (0, 0, 1)), (1000, (0, 0, 0))],
    "trace-between": [(0, (0, 0, 0)), (1000, (1, 0, 0)), (1000, (0, 0, 0)), (1000, (0, 1, 0)), (1000, (0, 0, 1))],
    "two-traces": [(0, (0, 0, 0)), (1000, (1, 0, 0)), (1000, (0, 1, 0)), (1000, (0, 0, 0)), (1000, (0, 0, 1)),
                   (1000, (0, 0, 0))],
    "b0-and-trace": [(0, (0, 0, 0)), (1000, (0, 0, 0))],  # a DWI that is nothing else: kept whole
}


def philips_dwi(name: str) -> list:
    volumes = DWI_CASES[name]
    datasets = build_series(CASES["4d-mr"].with_(volumes=len(volumes), name=f"dwi-{name}"))
    for dataset in datasets:
        b, direction = volumes[int(dataset.TemporalPositionIdentifier) - 1]
        dataset.Manufacturer = "Philips Medical Systems"
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"]
        dataset.DiffusionBValue = float(b)
        dataset.DiffusionGradientOrientation = [float(x) for x in direction]
        dataset.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", float(b))
        block = dataset.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        for offset, value in zip((0xB0, 0xB1, 0xB2), direction, strict=True):
            block.add_new(offset, "FL", float(value))
    return datasets


@pytest.mark.parametrize(("name", "kept"), [("trace-last", 4), ("trace-between", 4), ("two-traces", 4),
                                            ("b0-and-trace", 2)])
def test_derived_trace_volumes_of_a_philips_dwi_are_left_out_as_dcm2niix_leaves_them(
        name: str, kept: int, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    datasets = philips_dwi(name)
    paths = write_series(datasets, tmp_path / "dicom")

    # dcm2niix writes the volumes it leaves out to a file of their own, "<name>_ADC.nii"
    reference = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix", files=1 if kept == len(DWI_CASES[name]) else 2)
    with caplog.at_level("INFO", logger="dicomnode.nifti"):
        mine = grind_and_save([LazyDataset(path) for path in paths], tmp_path / "mine.nii")

    assert mine.shape[3] == kept
    assert_same_nifti(mine, reference)
    left_out = [r.getMessage() for r in caplog.records if "derived trace/ADC" in r.getMessage()]
    if kept < len(DWI_CASES[name]):
        assert left_out == [f"left out {len(DWI_CASES[name]) - kept} derived trace/ADC volume(s) of "
                            f"{len(DWI_CASES[name])} in series {datasets[0].SeriesInstanceUID} (b > 0 without a "
                            "gradient direction), as dcm2niix does"]
    else:
        assert left_out == []


def test_the_derived_volumes_can_be_kept(tmp_path: Path) -> None:
    image = NiftiGrinder(keep_derived_diffusion=True)(philips_dwi("trace-last"))
    assert image.shape[3] == 5
