"""Completeness judged from content: what the headers announce, and what holds a patient back."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError
from dicomnode.extension.completeness import announced
from dicomnode.extension.grinders import ListGrinder
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.series import InstanceFacts
from dicomnode.server.pipeline_tree import PipelineTree


class Announced(AbstractInput):
    image_grinder = ListGrinder()
    completeness = "announced"


def _ct(slices: int, announce: int | None = None, **options: object) -> list[Dataset]:
    series = synthetic_series(slices=slices, rows=4, columns=4, **options)  # type: ignore[arg-type]
    if announce is not None:
        for image in series:
            image.ImagesInAcquisition = announce
    return series


def _facts(series: list[Dataset]) -> list[InstanceFacts]:
    return [InstanceFacts.from_header(image, str(image.SOPInstanceUID)) for image in series]


def test_a_series_short_of_its_images_in_acquisition_is_incomplete_and_says_how_short() -> None:
    series = _ct(4, announce=6)
    verdict = announced(_facts(series))
    assert verdict.state == "incomplete"
    assert verdict.detail == (f"4 of 6 announced instances of series {series[0].SeriesInstanceUID} "
                              "(ImagesInAcquisition)")


def test_a_series_with_every_announced_image_is_complete() -> None:
    assert announced(_facts(_ct(6, announce=6))).complete


def test_more_images_than_announced_count_as_complete() -> None:
    assert announced(_facts(_ct(7, announce=6))).complete


def test_a_series_that_announces_nothing_cannot_tell() -> None:
    verdict = announced(_facts(_ct(6)))
    assert verdict.state == "unknown" and "announces no instance count" in verdict.detail


def test_every_series_must_be_complete() -> None:
    complete, short = _ct(3, announce=3), _ct(2, announce=5)
    assert announced(_facts(complete + short)).state == "incomplete"


def test_an_mr_series_in_one_acquisition_does_not_trust_images_in_acquisition_alone() -> None:
    # diffusion and fMRI series come as one acquisition per volume, each announcing its own slices
    verdict = announced(_facts(_ct(6, announce=6, modality="MR")))
    assert verdict.state == "unknown"


def _dynamic(volumes: int, slices: int, *, per_volume_acquisition: bool, announce: bool = True,
             identifiers: bool = True) -> list[Dataset]:
    series = synthetic_series(slices=volumes * slices, rows=4, columns=4, modality="MR")
    for number, image in enumerate(series):
        volume = number // slices
        image.NumberOfTemporalPositions = volumes
        if identifiers:
            image.TemporalPositionIdentifier = volume + 1
        image.AcquisitionNumber = volume + 1 if per_volume_acquisition else 1
        if announce:
            image.ImagesInAcquisition = slices if per_volume_acquisition else volumes * slices
    return series


@pytest.mark.parametrize("per_volume_acquisition", [True, False])
@pytest.mark.parametrize("announce", [True, False])
def test_temporal_positions_times_slices_are_announced(per_volume_acquisition: bool, announce: bool) -> None:
    series = _dynamic(3, 4, per_volume_acquisition=per_volume_acquisition, announce=announce)
    assert announced(_facts(series)).complete
    first_two_volumes = announced(_facts(series[:8]))
    assert first_two_volumes.state == "incomplete" and first_two_volumes.detail.startswith("8 of 12 announced")
    missing_slice = announced(_facts(series[:5] + series[6:]))
    assert missing_slice.state == "incomplete"


def test_temporal_positions_without_identifiers_cannot_tell_from_one_volume() -> None:
    series = _dynamic(3, 4, per_volume_acquisition=True, identifiers=False)
    assert announced(_facts(series[:4])).state == "unknown"


def test_a_concatenation_needs_its_total_number_of_instances() -> None:
    parts = _ct(3)
    for number, image in enumerate(parts, start=1):
        image.NumberOfFrames = 10
        image.ConcatenationUID = "1.2.3.4"
        image.InConcatenationNumber = number
        image.InConcatenationTotalNumber = 4
    verdict = announced(_facts(parts))
    assert verdict.state == "incomplete" and "(InConcatenationTotalNumber)" in verdict.detail


def test_a_multi_frame_instance_is_whole_by_itself() -> None:
    [image] = _ct(1)
    image.NumberOfFrames = 40
    assert announced(_facts([image])).complete


def test_ge_images_in_series_is_read_where_the_standard_counts_are_absent() -> None:
    series = _ct(3, modality="MR")
    for image in series:
        block = image.private_block(0x0025, "GEMS_SERS_01", create=True)
        block.add_new(0x07, "SL", 5)
    verdict = announced(_facts(series))
    assert verdict.state == "incomplete" and "3 of 5" in verdict.detail and "GE Images in Series" in verdict.detail


def test_an_announced_input_is_ready_without_waiting_for_the_stable_time() -> None:
    tree = PipelineTree({"CT": Announced})
    for image in _ct(4, announce=4):
        tree.add_image("P1", image)
    assert len(tree.take_ready(stable_time=3600)) == 1


def test_an_announced_input_waits_for_the_rest_however_long_it_is_quiet() -> None:
    tree = PipelineTree({"CT": Announced})
    series = _ct(4, announce=6)
    for image in series:
        tree.add_image("P1", image)
    waiting: dict[str, str] = {}
    later = tree["P1"].last_update + 7200
    assert tree.take_ready(stable_time=5, now=later, waiting=waiting) == []
    assert waiting["P1"] == (f"CT: 4 of 6 announced instances of series {series[0].SeriesInstanceUID} "
                             "(ImagesInAcquisition), 7200 s since the last")


def test_an_input_whose_headers_say_nothing_falls_back_to_the_stable_time() -> None:
    tree = PipelineTree({"CT": Announced})
    for image in _ct(4):
        tree.add_image("P1", image)
    now = tree["P1"].last_update + 1
    waiting: dict[str, str] = {}
    assert tree.take_ready(stable_time=5, now=now, waiting=waiting) == []
    assert "stable_time 5 s not yet passed" in waiting["P1"] and "announces no instance count" in waiting["P1"]
    assert len(tree.take_ready(stable_time=5, now=now + 5)) == 1


def test_a_complete_input_must_still_validate() -> None:
    tree = PipelineTree({"CT": Announced.configured(minimum_images=10)})
    for image in _ct(4, announce=4):
        tree.add_image("P1", image)
    waiting: dict[str, str] = {}
    assert tree.take_ready(waiting=waiting) == []
    assert waiting["P1"].startswith("CT: 4 of at least 10 image(s)")


def test_the_default_validate_completeness_is_todays_behaviour() -> None:
    class Plain(AbstractInput):
        image_grinder = ListGrinder()

    tree = PipelineTree({"CT": Plain})
    for image in _ct(2, announce=6):
        tree.add_image("P1", image)
    assert tree["P1"].inputs["CT"].series() == []  # nothing is kept that no setting needs
    assert len(tree.take_ready()) == 1


def test_a_bad_completeness_says_what_is_allowed() -> None:
    with pytest.raises(ConfigurationError, match="completeness must be one of 'validate', 'announced', 'query'"):
        Announced(completeness="quiet")


@pytest.mark.parametrize(("setting", "value", "allowed"), [
    ("query_interval", 0, "positive number of seconds"),
    ("query_endpoint", 104, "AE title of a known endpoint"),
])
def test_bad_query_settings_say_what_is_allowed(setting: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigurationError, match=allowed):
        Announced(**{setting: value})
