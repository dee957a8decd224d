"""LazyDataset.pixel_array, which pydicom offers only with numpy (brought by the numpy plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.dicom.synthetic import synthetic_series, write_series

pytestmark = pytest.mark.plugin("numpy")


def test_pixel_array_is_the_files_pixels(tmp_path: Path) -> None:
    path = write_series(synthetic_series(slices=1, rows=12, columns=10), tmp_path)[0]
    dataset = LazyDataset(path)
    pixels = dataset.pixel_array
    assert pixels.shape == (12, 10)
    assert (pixels == dcmread(path).pixel_array).all()


def _zero_pixels(path: Path) -> None:
    """Rewrite the file with the same layout and every pixel 0, behind the dataset's back."""
    rewritten = dcmread(path)
    rewritten.PixelData = bytes(len(rewritten.PixelData))
    rewritten.save_as(path)


def test_pixel_array_is_read_again_after_unload(tmp_path: Path) -> None:
    path = write_series(synthetic_series(slices=1, rows=4, columns=4), tmp_path)[0]
    dataset = LazyDataset(path)
    assert dataset.pixel_array.max() > 0
    _zero_pixels(path)
    dataset.unload()
    assert dataset.pixel_array.max() == 0


def test_pixel_array_after_header_access_reads_the_pixels_then(tmp_path: Path) -> None:
    path = write_series(synthetic_series(slices=1, rows=4, columns=4), tmp_path)[0]
    dataset = LazyDataset(path)
    assert dataset.Rows == 4 and not dataset.pixels_loaded
    _zero_pixels(path)
    assert dataset.pixel_array.max() == 0


def test_pixel_array_is_read_again_after_unload_pixels(tmp_path: Path) -> None:
    path = write_series(synthetic_series(slices=1, rows=4, columns=4), tmp_path)[0]
    dataset = LazyDataset(path)
    assert dataset.pixel_array.max() > 0
    _zero_pixels(path)
    dataset.unload_pixels()
    assert dataset.pixel_array.max() == 0
