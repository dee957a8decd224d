"""MASK_BLUEPRINT with NumpyFactory: a 0/1 mask as an image series a viewer shows as a mask, valid by dciodvfy."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest
from result_checks import blob_mask, dciodvfy, source_and_volume

from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT, MR_IMAGE_BLUEPRINT
from dicomnode_highdicom import MASK_BLUEPRINT
from dicomnode_numpy import NumpyFactory, NumpyGrinder

pytestmark = pytest.mark.plugin("highdicom")

BLUEPRINTS = {"axial-ct": CT_IMAGE_BLUEPRINT, "sagittal-mr": MR_IMAGE_BLUEPRINT, "oblique-ct": CT_IMAGE_BLUEPRINT}


@pytest.mark.parametrize("case", sorted(BLUEPRINTS))
def test_a_mask_series_reads_as_a_mask_and_is_valid(case: str, tmp_path: Path) -> None:
    sources, volume = source_and_volume(case)
    mask = attrs.evolve(volume, array=blob_mask(volume.array.shape))
    factory = NumpyFactory(pipeline_name="bone")
    header = factory.build_series_header(sources, DEFAULT_BLUEPRINT + BLUEPRINTS[case] + MASK_BLUEPRINT,
                                         kwargs={"series_key": "mask"})
    series = factory.build_series(mask, header)
    first = series[0]
    assert first.get("RescaleType") != "HU"
    if first.Modality == "CT":
        assert first.RescaleType == "US"
    assert (float(first.WindowCenter), float(first.WindowWidth)) == (0.5, 1.0)
    assert list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"] and list(first.ImageType)[-1] == "MASK"
    assert "segment number" in first.DerivationDescription
    assert np.array_equal(NumpyGrinder()(series).array, mask.array)
    errors, _ = dciodvfy(series[3], tmp_path / "mask.dcm")
    assert errors == [], "\n".join(errors)


def test_labels_get_a_window_that_shows_every_label() -> None:
    sources, volume = source_and_volume("axial-ct")
    factory = NumpyFactory()
    header = factory.build_series_header(sources, DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT + MASK_BLUEPRINT)
    first = factory.build_series(attrs.evolve(volume, array=blob_mask(volume.array.shape, 3)), header)[0]
    assert (float(first.WindowCenter), float(first.WindowWidth)) == (1.5, 3.0)
