"""Compressed series (JPEG Lossless, JPEG-LS, JPEG 2000, RLE) grind to the same volume as uncompressed ones.

The series are compressed with gdcmconv (python-gdcm, a test requirement);
decoding uses the decoders of ``dicomnode-numpy[jpeg]``, which a test run in
a fresh interpreter checks without python-gdcm, and without any decoder the
refusal names the extra to install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from geometry_series import CASES, build_series, expected, write_series
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from dicomnode.dicom.lazy import LazyDataset
from dicomnode_nifti import NiftiGrinder
from dicomnode_numpy import NumpyGrinder

pytestmark = pytest.mark.plugin("nifti")

#: gdcmconv's option for each transfer syntax
SYNTAXES = {"-J": JPEGLosslessSV1, "-L": JPEGLSLossless, "-K": JPEG2000Lossless, "-R": RLELossless}
SPEC = CASES["shuffled-ct"].with_(slices=6)


def gdcmconv() -> str:
    local = Path(sys.executable).parent / "gdcmconv"
    program = str(local) if local.exists() else shutil.which("gdcmconv")
    assert program, "gdcmconv (python-gdcm, a test requirement of the numpy plugin) is not installed"
    return program


def compressed_series(option: str, folder: Path) -> list[Path]:
    plain = write_series(build_series(SPEC), folder / "plain")
    (folder / "compressed").mkdir()
    paths = []
    for path in plain:
        target = folder / "compressed" / path.name
        subprocess.run([gdcmconv(), option, str(path), str(target)], check=True, capture_output=True, timeout=60)
        paths.append(target)
    assert dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == SYNTAXES[option]
    return paths


@pytest.mark.parametrize("option", list(SYNTAXES), ids=[uid.keyword for uid in SYNTAXES.values()])
def test_a_compressed_series_grinds_to_the_values_of_the_uncompressed_one(option: str, tmp_path: Path) -> None:
    paths = compressed_series(option, tmp_path)

    from_files = NumpyGrinder()([LazyDataset(path) for path in paths])
    in_memory = NumpyGrinder()([dcmread(path) for path in paths])

    values, affine = expected(SPEC)
    assert np.array_equal(from_files.array, values)
    assert np.array_equal(in_memory.array, values)
    np.testing.assert_allclose(from_files.affine, affine, atol=1e-4)


def test_a_compressed_series_gives_the_same_nifti_image(tmp_path: Path) -> None:
    paths = compressed_series("-K", tmp_path)

    compressed = NiftiGrinder()([LazyDataset(path) for path in paths])
    plain = NiftiGrinder()([LazyDataset(path) for path in sorted((tmp_path / "plain").glob("*.dcm"))])

    assert np.array_equal(compressed.get_fdata(), plain.get_fdata())
    assert np.array_equal(compressed.affine, plain.affine)


#: runs in a fresh interpreter in which the named modules cannot be imported
BLOCKED = """
import sys
for name in sys.argv[2].split(","):
    sys.modules[name] = None  # import fails, as if not installed
from pathlib import Path
from dicomnode.dicom.lazy import LazyDataset
from dicomnode.errors import GrindingError
from dicomnode_numpy import NumpyGrinder
try:
    volume = NumpyGrinder()([LazyDataset(p) for p in sorted(Path(sys.argv[1]).glob("*.dcm"))])
except GrindingError as error:
    print("REFUSED", error)
else:
    print("GROUND", volume.array.shape)
"""


def run_without(modules: list[str], folder: Path) -> str:
    result = subprocess.run([sys.executable, "-c", BLOCKED, str(folder), ",".join(modules)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("option", ["-J", "-L", "-K"], ids=["JPEGLossless", "JPEG-LS", "JPEG2000"])
def test_the_jpeg_extra_alone_decodes_the_series(option: str, tmp_path: Path) -> None:
    compressed_series(option, tmp_path)

    assert run_without(["gdcm", "jpeg_ls"], tmp_path / "compressed").startswith("GROUND (6, 24, 32)")


def test_without_decoders_the_refusal_names_the_extra_to_install(tmp_path: Path) -> None:
    compressed_series("-L", tmp_path)

    output = run_without(["gdcm", "jpeg_ls", "pylibjpeg", "libjpeg", "openjpeg", "rle"], tmp_path / "compressed")

    assert output.startswith("REFUSED cannot decode the pixel data of image ")
    assert "JPEG-LS Lossless" in output
    assert "pip install 'dicomnode-numpy[jpeg]'" in output
