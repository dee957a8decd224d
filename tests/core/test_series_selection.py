"""Series selection: an input accepts a study's many series and grinds the one it chooses."""

from __future__ import annotations

import logging
import re

import pytest
from pydicom import Dataset

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError
from dicomnode.extension.grinders import ListGrinder
from dicomnode.extension.inputs import AbstractInput, DynamicInput
from dicomnode.extension.series import SeriesSummary, contains
from dicomnode.server.pipeline_tree import PipelineTree


def _study() -> dict[str, list[Dataset]]:
    """A CT study as a PACS holds it: a two-image scout, a thin and a thick reconstruction."""
    study = "1.2.826.0.1.3680043.8.498.77"
    scout = synthetic_series(slices=2, rows=4, columns=4, study_uid=study, series_number=1,
                             series_description="Scout", slice_thickness=10.0)
    for image in scout:
        image.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    thin = synthetic_series(slices=12, rows=4, columns=4, study_uid=study, series_number=2,
                            series_description="AX 1.0", slice_thickness=1.0)
    thick = synthetic_series(slices=4, rows=4, columns=4, study_uid=study, series_number=3,
                             series_description="AX 3.0", slice_thickness=3.0)
    return {"scout": scout, "thin": thin, "thick": thick}


def _filled(inp: AbstractInput, *series: list[Dataset]) -> AbstractInput:
    for images in series:
        for image in images:
            inp.add_image(image)
    return inp


class AnyCT(AbstractInput):
    required_values = {"Modality": "CT"}
    image_grinder = ListGrinder()


def test_largest_grinds_the_series_with_the_most_instances_whatever_came_first() -> None:
    study = _study()
    ct = _filled(AnyCT(series_selection="largest"), study["scout"], study["thick"], study["thin"])
    chosen = study["thin"][0].SeriesInstanceUID
    assert ct.selected_series() == chosen
    assert ct.images == 12 and ct.held_images == 18
    assert {image.SeriesInstanceUID for image in ct.get_data()} == {chosen}


def test_thinnest_grinds_the_series_with_the_smallest_slice_spacing() -> None:
    study = _study()
    thin_but_short = synthetic_series(slices=3, rows=4, columns=4, slice_thickness=0.5)
    ct = _filled(AnyCT(series_selection="thinnest"), study["thick"], study["thin"], thin_but_short)
    assert ct.selected_series() == thin_but_short[0].SeriesInstanceUID
    [summary] = [s for s in ct.series() if s.uid == ct.selected_series()]
    assert summary.spacing == pytest.approx(0.5)


def test_a_tag_rule_chooses_the_series_whose_first_image_matches() -> None:
    study = _study()
    rule = {"SeriesDescription": re.compile(r"AX 3\..*"), "ImageType": contains("AXIAL")}
    ct = _filled(AnyCT(series_selection=rule), study["scout"], study["thin"], study["thick"])
    assert ct.selected_series() == study["thick"][0].SeriesInstanceUID
    assert len(ct.datasets) == 4


def test_a_tag_rule_nothing_matches_chooses_none_and_the_input_says_why() -> None:
    study = _study()
    ct = _filled(AnyCT(series_selection={"SeriesDescription": "AX 5.0"}), study["thin"])
    assert ct.selected_series() is None and ct.images == 0
    assert not ct.validate()
    assert ct.unmet() == "series_selection chooses none of the 1 series held"


def test_a_function_gets_a_summary_of_every_series() -> None:
    study = _study()
    seen: list[list[SeriesSummary]] = []

    def second_series(summaries: list[SeriesSummary]) -> str | None:
        seen.append(summaries)
        return next((s.uid for s in summaries if s.number == 2), None)

    ct = _filled(AnyCT(series_selection=second_series), study["scout"], study["thin"], study["thick"])
    assert ct.selected_series() == study["thin"][0].SeriesInstanceUID
    scout, thin, thick = seen[-1]
    assert (scout.description, scout.count, scout.image_type) == ("Scout", 2, ("ORIGINAL", "PRIMARY", "LOCALIZER"))
    assert (thin.count, thin.spacing, thin.thickness) == (12, pytest.approx(1.0), 1.0)
    assert thick.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert thin.study_uid == thick.study_uid


def test_a_function_that_chooses_a_series_the_input_does_not_hold_is_an_error() -> None:
    ct = _filled(AnyCT(series_selection=lambda summaries: "1.2.3"), _study()["thin"])
    with pytest.raises(ValueError, match="not a series the input holds"):
        ct.selected_series()


def test_the_selection_follows_the_images_as_they_arrive() -> None:
    study = _study()
    ct = _filled(AnyCT(series_selection="largest"), study["scout"])
    assert ct.selected_series() == study["scout"][0].SeriesInstanceUID
    _filled(ct, study["thick"])
    assert ct.selected_series() == study["thick"][0].SeriesInstanceUID


def test_a_dynamic_input_groups_only_the_chosen_series() -> None:
    class Series(DynamicInput):
        image_grinder = ListGrinder()

    study = _study()
    groups = _filled(Series(series_selection="largest"), study["scout"], study["thin"]).get_data()
    assert list(groups) == [study["thin"][0].SeriesInstanceUID]


@pytest.mark.parametrize("value", ["biggest", 3, {}])
def test_a_bad_selection_says_what_is_allowed(value: object) -> None:
    with pytest.raises(ConfigurationError, match="series_selection must be 'largest', 'thinnest', a tag rule"):
        AnyCT(series_selection=value)


def test_selection_and_enforce_single_series_together_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="give one"):
        AnyCT(series_selection="largest", enforce_single_series=True)


def test_a_selection_given_as_a_class_attribute_function_is_not_bound_as_a_method() -> None:
    def first(summaries: list[SeriesSummary]) -> SeriesSummary:
        return summaries[0]

    class First(AnyCT):
        series_selection = first

    study = _study()
    assert _filled(First(), study["thick"], study["thin"]).selected_series() == study["thick"][0].SeriesInstanceUID


def test_the_job_grinds_the_chosen_series_and_logs_each_dropped_one_once(caplog: pytest.LogCaptureFixture) -> None:
    study = _study()
    tree = PipelineTree({"CT": AnyCT.configured(series_selection="largest")})
    for images in study.values():
        for image in images:
            tree.add_image("P1", image)
    [container] = tree.take_ready()
    with caplog.at_level(logging.INFO, logger="dicomnode.inputs"):
        ground = container.get_input_container()
    assert len(ground["CT"]) == 12 and len(ground.datasets["CT"]) == 12
    assert container.images == 18  # every series stays the patient's (its files go when the job ends)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2
    assert all(study["thin"][0].SeriesInstanceUID in line for line in dropped)
    assert any("'Scout', 2 instances" in line for line in dropped)
