"""SecondaryCaptureFactory: source slices with the outlines burned in, flagged as such, on the right slices."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest
from result_checks import blob_mask, dciodvfy, position, source_and_volume

from dicomnode.errors import ConfigurationError, InvalidDatasetError
from dicomnode_highdicom import SecondaryCaptureFactory, Segment
from dicomnode_highdicom.capture import outline, patient_orientation

pytestmark = pytest.mark.plugin("highdicom")


def factory(**options: object) -> SecondaryCaptureFactory:
    return SecondaryCaptureFactory(algorithm_name="bone-threshold", algorithm_version="1.0", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", ["axial-ct", "sagittal-mr", "oblique-ct", "shuffled-ct", "enhanced-ct"])
def test_each_capture_has_no_dciodvfy_error_and_shows_its_source_slice(case: str, tmp_path: Path) -> None:
    sources, volume = source_and_volume(case)
    mask = attrs.evolve(volume, array=blob_mask(volume.array.shape, 2))
    captures = factory().build(mask, sources, segments=["liver", "spleen"])
    with_mask = [k for k in range(volume.slice_count) if mask.array[k].any()]
    assert [int(c.InstanceNumber) for c in captures] == [k + 1 for k in with_mask]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    for capture, k in zip(captures, with_mask):
        reference = capture.SourceImageSequence[0]
        source = by_uid[str(reference.ReferencedSOPInstanceUID)]
        frame = int(reference.ReferencedFrameNumber) if "ReferencedFrameNumber" in reference else None
        assert np.allclose(position(source, frame), volume.slice_position(k), atol=1e-3)
        assert (capture.BurnedInAnnotation, list(capture.ImageType)[:2]) == ("YES", ["DERIVED", "SECONDARY"])
        assert "burned in" in capture.DerivationDescription and "bone-threshold 1.0" in capture.DerivationDescription
    errors, _ = dciodvfy(captures[0], tmp_path / "sc.dcm")
    assert errors == [], "\n".join(errors)


def test_the_outline_is_drawn_in_the_segments_colour_and_nothing_else_is_coloured() -> None:
    sources, volume = source_and_volume("axial-ct")
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[4, 5:15, 6:20] = 1
    [capture] = factory(window=(0.0, 4096.0)).build(labels, sources, segments=[Segment(1, "bone", color=(255, 0, 0))])
    rgb = capture.pixel_array
    red = (rgb[..., 0] == 255) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)
    assert np.array_equal(red, outline(labels[4] == 1))
    gray = ~red
    assert np.array_equal(rgb[gray][:, 0], rgb[gray][:, 1]) and np.array_equal(rgb[gray][:, 1], rgb[gray][:, 2])


def test_all_slices_on_request_and_the_same_uids_on_a_rerun() -> None:
    sources, volume = source_and_volume("shuffled-ct")
    mask = attrs.evolve(volume, array=blob_mask(volume.array.shape))
    every = factory(slices="all").build(mask, sources, segments=["bone"])
    assert len(every) == volume.slice_count
    again = factory().build(mask, list(reversed(sources)), segments=["bone"])
    by_number = {int(c.InstanceNumber): c.SOPInstanceUID for c in every}
    assert all(by_number[int(c.InstanceNumber)] == c.SOPInstanceUID for c in again)
    assert len({c.SeriesInstanceUID for c in [*every, *again]}) == 1


def test_the_image_may_be_given_as_the_volume_the_pipeline_already_has() -> None:
    sources, volume = source_and_volume("oblique-mr")
    mask = blob_mask(volume.array.shape)
    ground = factory().build(mask, sources, segments=["bone"])
    given = factory().build(mask, sources, segments=["bone"], image=volume)
    assert [c.PixelData for c in ground] == [c.PixelData for c in given]


def test_a_mask_off_the_source_slices_is_refused() -> None:
    sources, volume = source_and_volume("axial-ct")
    shifted = attrs.evolve(volume, array=blob_mask(volume.array.shape), origin=volume.origin + np.array([0, 0, 0.7]))
    with pytest.raises(InvalidDatasetError, match="must lie on them"):
        factory().build(shifted, sources, segments=["bone"])


def test_options_are_checked_when_the_factory_is_made() -> None:
    with pytest.raises(ConfigurationError, match="window"):
        factory(window=(40, 0))
    with pytest.raises(ConfigurationError, match="slices"):
        factory(slices="some")


def test_patient_orientation_names_the_directions_most_significant_first() -> None:
    assert patient_orientation(np.array([1.0, 0.0, 0.0])) == "L"
    assert patient_orientation(np.array([0.0, 0.0, -1.0])) == "F"
    assert patient_orientation(np.array([0.8, -0.6, 0.0])) == "LA"
