"""Saving a ground image as ``.nii``: the array is written in one piece, and the file is nibabel's, byte for byte.

The reference is the same image saved as ``.nii.gz``, which nibabel writes
itself (decompressed, a ``.nii.gz`` holds exactly the ``.nii`` bytes).
"""

from __future__ import annotations

import gzip
import io
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import require_peer
from geometry_series import CASES, build_series, write_series

from dicomnode.dicom.lazy import LazyDataset
from dicomnode_nifti.grinder import NiftiGrinder
from dicomnode_nifti.image import ScaledNifti1Image

pytestmark = pytest.mark.plugin("nifti")


def nii_and_nibabels(image: nib.Nifti1Image, folder: Path) -> tuple[bytes, bytes]:
    """The bytes of ``image`` saved as ``.nii``, and of the ``.nii`` nibabel writes (inside a ``.nii.gz``)."""
    image.to_filename(folder / "image.nii")
    image.to_filename(folder / "image.nii.gz")
    return (folder / "image.nii").read_bytes(), gzip.decompress((folder / "image.nii.gz").read_bytes())


@pytest.mark.parametrize("name", ["shuffled-ct", "4d-mr", "thick-slices-pt", "4d-pt", "enhanced-oblique-mr"])
def test_a_ground_series_saved_as_nii_is_the_file_nibabel_writes(name: str, tmp_path: Path) -> None:
    image = NiftiGrinder()(build_series(CASES[name]))

    mine, nibabels = nii_and_nibabels(image, tmp_path)

    assert mine == nibabels
    assert len(mine) == 352 + int(np.prod(image.shape)) * image.get_data_dtype().itemsize


def test_a_volume_turned_to_ras_is_written_in_the_files_voxel_order(tmp_path: Path) -> None:
    spec = CASES["oblique-mr"].with_(acquisition_3d=True)
    image = NiftiGrinder()(build_series(spec))
    assert not np.asarray(image.dataobj.get_unscaled()).flags.f_contiguous  # flipped and permuted views

    mine, nibabels = nii_and_nibabels(image, tmp_path)

    assert mine == nibabels
    assert np.array_equal(nib.load(tmp_path / "image.nii").get_fdata(), image.get_fdata())


def test_8_bit_unscaled_values_are_written_as_stored(tmp_path: Path) -> None:
    stored = np.asfortranarray(np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2))
    image = ScaledNifti1Image.from_stored(stored, np.diag([-0.5, -0.5, 2.0, 1.0]))

    mine, nibabels = nii_and_nibabels(image, tmp_path)

    assert mine == nibabels
    assert mine[352:] == stored.tobytes(order="F")


def test_an_image_saved_to_a_file_object_is_the_same_file(tmp_path: Path) -> None:
    image = NiftiGrinder()(build_series(CASES["axial-ct"]))
    stream = io.BytesIO()

    image.to_file_map(nib.Nifti1Image.make_file_map({"image": stream}))
    image.to_filename(tmp_path / "image.nii")

    assert stream.getvalue() == (tmp_path / "image.nii").read_bytes()


def test_a_series_ground_from_files_on_disk_equals_dcm2niix(tmp_path: Path) -> None:
    program = require_peer("dcm2niix")
    paths = write_series(build_series(CASES["oblique-ct"]), tmp_path / "dicom")
    out = tmp_path / "dcm2niix"
    out.mkdir()
    subprocess.run([program, "-z", "n", "-b", "n", "-f", "reference", "-o", str(out), str(tmp_path / "dicom")],
                   capture_output=True, timeout=120, check=True)
    reference = nib.load(out / "reference.nii")

    NiftiGrinder()([LazyDataset(path) for path in paths]).to_filename(tmp_path / "mine.nii")
    mine = nib.load(tmp_path / "mine.nii")

    assert np.abs(mine.affine - reference.affine).max() <= 1e-3
    assert mine.get_data_dtype() == reference.get_data_dtype()
    assert (mine.dataobj.slope, mine.dataobj.inter) == (reference.dataobj.slope, reference.dataobj.inter)
    assert np.array_equal(np.asarray(mine.dataobj.get_unscaled()), np.asarray(reference.dataobj.get_unscaled()))
