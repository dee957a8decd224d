"""NiftiGrinder: dcm2niix's layout, affine, scaling and file form, checked against known geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from geometry_series import CASES, build_series, expected
from pydicom import dcmread

from dicomnode.errors import GrindingError
from dicomnode_nifti.grinder import NiftiGrinder
from dicomnode_numpy.grinder import NumpyGrinder

pytestmark = pytest.mark.plugin("nifti")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def test_voxels_are_columns_then_rows_bottom_up_then_slices() -> None:
    spec = CASES["oblique-ct"]
    values, _ = expected(spec)  # (slice, row, column)

    image = NiftiGrinder()(build_series(spec))

    data = image.get_fdata()
    assert data.shape == (spec.columns, spec.rows, spec.slices)
    assert np.array_equal(data[:, ::-1, :], values.transpose(2, 1, 0))


def test_the_affine_is_the_dicom_geometry_in_ras() -> None:
    spec = CASES["oblique-mr"]
    _, lps = expected(spec)  # (slice, row, column) -> LPS

    affine = NiftiGrinder()(build_series(spec)).affine

    for i, j, k in [(0, 0, 0), (5, 3, 2), (31, 23, 9)]:
        dicom_voxel = [k, spec.rows - 1 - j, i, 1]
        np.testing.assert_allclose(affine @ [i, j, k, 1], LPS_TO_RAS @ lps @ dicom_voxel, atol=1e-6)


def test_sform_and_qform_are_both_set_with_code_1() -> None:
    image = NiftiGrinder()(build_series(CASES["sagittal-mr"]))

    sform, sform_code = image.header.get_sform(coded=True)
    qform, qform_code = image.header.get_qform(coded=True)
    assert (int(sform_code), int(qform_code)) == (1, 1)
    np.testing.assert_allclose(sform, image.affine, atol=1e-6)
    np.testing.assert_allclose(qform, image.affine, atol=1e-4)


def test_ct_keeps_stored_integers_with_the_rescale_as_scl_fields(tmp_path) -> None:
    spec = CASES["axial-ct"]
    image = NiftiGrinder()(build_series(spec))
    path = tmp_path / "ct.nii"

    image.to_filename(path)

    written = nib.load(path)
    assert written.get_data_dtype() == np.int16
    assert (float(written.dataobj.slope), float(written.dataobj.inter)) == (1.0, -1024.0)
    stored = NumpyGrinder(rescale=False)(build_series(spec)).array
    assert np.array_equal(np.asarray(written.dataobj.get_unscaled()), stored[:, ::-1, :].transpose(2, 1, 0))
    assert np.array_equal(written.get_fdata(), image.get_fdata())


def test_slices_with_different_rescales_become_float32() -> None:
    spec = CASES["thick-slices-pt"]

    image = NiftiGrinder()(build_series(spec))

    assert image.get_data_dtype() == np.float32
    values, _ = expected(spec)
    assert np.array_equal(image.get_fdata()[:, ::-1, :], values.transpose(2, 1, 0))


def test_a_4d_series_is_a_4d_image_with_the_repetition_time() -> None:
    spec = CASES["4d-mr"]

    image = NiftiGrinder()(build_series(spec))

    assert image.shape == (32, 24, 10, 3)
    assert image.header.get_zooms()[3] == pytest.approx(0.5)  # RepetitionTime 500 ms
    values, _ = expected(spec)
    assert np.array_equal(image.get_fdata()[:, ::-1, :, :], values.transpose(3, 2, 1, 0))


def test_3d_acquisitions_are_turned_to_the_nearest_ras_unless_asked_not_to() -> None:
    spec = CASES["coronal-mr"].with_(acquisition_3d=True, name="coronal-3d")

    turned = NiftiGrinder()(build_series(spec))
    kept = NiftiGrinder(rotate_3d_to_ras=False)(build_series(spec))

    assert nib.aff2axcodes(turned.affine) == ("R", "A", "S")
    assert nib.aff2axcodes(kept.affine) == ("L", "S", "P")
    assert turned.shape == (32, 10, 24)
    # kept voxel (x, y, z) is turned voxel (31 - x, 9 - z, y): the same place, the same value
    for x, y, z in [(0, 0, 0), (3, 4, 5), (31, 23, 9)]:
        np.testing.assert_allclose(turned.affine @ [31 - x, 9 - z, y, 1], kept.affine @ [x, y, z, 1], atol=1e-6)
        assert turned.get_fdata()[31 - x, 9 - z, y] == kept.get_fdata()[x, y, z]


def test_2d_acquisitions_are_not_turned() -> None:
    image = NiftiGrinder()(build_series(CASES["coronal-mr"]))

    assert nib.aff2axcodes(image.affine) == ("L", "S", "P")


def test_saving_writes_the_scaled_image_nibabel_reads_back_equal(tmp_path) -> None:
    image = NiftiGrinder()(build_series(CASES["enhanced-ct"]))
    nib.save(image, tmp_path / "x.nii.gz")

    back = nib.load(tmp_path / "x.nii.gz")

    assert np.array_equal(back.get_fdata(), image.get_fdata())
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-6)


def test_refusals_of_the_numpy_grinder_apply() -> None:
    with pytest.raises(GrindingError, match="slice is probably missing"):
        NiftiGrinder()(build_series(CASES["axial-ct"].with_(skip_slices=(2,))))


def test_the_registered_nifti_grinder_is_this_class(clean_registry: None) -> None:
    from dicomnode.plugins import get_registry

    assert get_registry().grinder("nifti") is NiftiGrinder


def test_numpy_grinder_cuts_a_siemens_mosaic_into_the_same_slices(tmp_path: Path) -> None:
    data = Path(nib.__file__).parent / "nicom" / "tests" / "data"
    datasets = []
    for name in ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"):
        path = tmp_path / name.removesuffix(".gz")
        path.write_bytes(gzip.decompress((data / name).read_bytes()))
        datasets.append(dcmread(path))

    volume = NumpyGrinder()(datasets)
    image = NiftiGrinder()(datasets)

    assert volume.shape == (2, 48, 128, 128)  # two volumes of 48 slices cut from 896x896 mosaics
    assert np.array_equal(volume.array[:, :, ::-1, :].transpose(3, 2, 1, 0), image.get_fdata())


def test_lazy_datasets_forget_their_pixel_data_after_grinding(tmp_path: Path) -> None:
    from geometry_series import write_series

    from dicomnode.dicom.lazy import LazyDataset

    spec = CASES["shuffled-ct"]
    datasets = [LazyDataset(path) for path in write_series(build_series(spec), tmp_path)]

    image = NiftiGrinder()(datasets)

    assert not any(ds.pixels_loaded for ds in datasets)
    assert np.array_equal(image.get_fdata()[:, ::-1, :], expected(spec)[0].transpose(2, 1, 0))


def test_slices_of_the_data_object_are_scaled_like_the_whole() -> None:
    image = NiftiGrinder()(build_series(CASES["axial-ct"]))

    whole = image.get_fdata()

    assert np.array_equal(image.dataobj[:, :, 4], whole[:, :, 4])
    assert np.array_equal(np.asarray(image.dataobj), whole)
    assert image.dataobj.get_unscaled().dtype == np.int16


def test_asking_for_another_disk_type_converts_the_values(tmp_path: Path) -> None:
    image = NiftiGrinder()(build_series(CASES["axial-ct"]))
    image.set_data_dtype(np.float32)

    image.to_filename(tmp_path / "float.nii")

    back = nib.load(tmp_path / "float.nii")
    assert back.get_data_dtype() == np.float32
    assert np.array_equal(back.get_fdata(), image.get_fdata())


def test_an_enhanced_philips_dwi_leaves_out_its_trace_volume_read_per_frame() -> None:
    from pydicom import Dataset
    from pydicom.sequence import Sequence

    (dataset,) = build_series(CASES["enhanced-4d-mr"])  # 3 volumes: b=0, one direction, then the trace
    dataset.Manufacturer = "Philips Medical Systems"
    volumes = {1: (0.0, (0.0, 0.0, 0.0)), 2: (1000.0, (0.0, 1.0, 0.0)), 3: (1000.0, (0.0, 0.0, 0.0))}
    for item in dataset.PerFrameFunctionalGroupsSequence:
        b, direction = volumes[int(item.FrameContentSequence[0].TemporalPositionIndex)]
        diffusion, gradient = Dataset(), Dataset()
        diffusion.DiffusionBValue = b
        gradient.DiffusionGradientOrientation = list(direction)
        diffusion.DiffusionGradientDirectionSequence = Sequence([gradient])
        item.MRDiffusionSequence = Sequence([diffusion])

    image = NiftiGrinder()([dataset])
    kept = NiftiGrinder(keep_derived_diffusion=True)([dataset])
    assert (image.shape[3], kept.shape[3]) == (2, 3)
    assert np.array_equal(image.get_fdata(), kept.get_fdata()[..., :2])
