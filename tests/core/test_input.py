"""Inputs: which images they accept, what they hold, when they are complete, what they grind to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom import Dataset

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import InvalidDatasetError
from dicomnode.extension.grinders import ListGrinder, TagGrinder
from dicomnode.extension.inputs import AbstractInput, DynamicInput
from dicomnode.plugins import load_plugins


def _ct(count: int = 3, **options: object) -> list[Dataset]:
    return synthetic_series(slices=count, rows=4, columns=4, **options)  # type: ignore[arg-type]


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    required_tags = ["SeriesInstanceUID"]
    image_grinder = ListGrinder()

    def validate(self) -> bool:
        return self.images >= 3


def test_an_image_with_the_required_value_is_accepted_and_counted() -> None:
    ct = CT()
    assert ct.add_image(_ct(1)[0]) == 1
    assert ct.images == 1


def test_an_image_with_another_value_is_refused_with_the_reason() -> None:
    mr = _ct(1)[0]
    mr.Modality = "MR"
    with pytest.raises(InvalidDatasetError, match=r"CT requires Modality 'CT', the image has 'MR'"):
        CT().add_image(mr)


def test_an_image_lacking_a_required_tag_is_refused() -> None:
    image = _ct(1)[0]
    del image.SeriesInstanceUID
    assert "requires SeriesInstanceUID" in (CT().rejection(image) or "")


def test_required_values_may_be_a_regex_that_must_match_the_whole_value() -> None:
    class Either(AbstractInput):
        required_values = {"Modality": re.compile("CT|PT")}

    image = _ct(1)[0]
    assert Either().accepts(image)
    image.Modality = "CTX"
    assert not Either().accepts(image)


def test_required_values_may_be_a_callable() -> None:
    class Thin(AbstractInput):
        required_values = {"SliceThickness": lambda value: float(value) <= 2.0}

    assert Thin().accepts(_ct(1, slice_thickness=1.0)[0])
    assert not Thin().accepts(_ct(1, slice_thickness=5.0)[0])


def test_required_values_compare_numbers_and_text_alike() -> None:
    class First(AbstractInput):
        required_values = {0x00200013: "1"}  # InstanceNumber, by integer tag, as text

    images = _ct(2)
    assert First().accepts(images[0]) and not First().accepts(images[1])


def test_the_same_instance_sent_twice_counts_once() -> None:
    ct = CT()
    image = _ct(1)[0]
    ct.add_image(image)
    ct.add_image(image)
    assert ct.images == 1


def test_validate_says_when_the_input_is_complete() -> None:
    ct = CT()
    images = _ct(3)
    for image in images[:2]:
        ct.add_image(image)
    assert not ct.validate()
    ct.add_image(images[2])
    assert ct.validate()


def test_the_default_validate_wants_one_image() -> None:
    class Any_(AbstractInput):
        pass

    empty = Any_()
    assert not empty.validate()
    empty.add_image(_ct(1)[0])
    assert empty.validate()


def test_iteration_yields_the_images_in_arrival_order_and_paths_are_kept() -> None:
    ct = CT()
    images = _ct(3)
    for index, image in enumerate(images):
        ct.add_image(image, Path(f"/data/{index}.dcm"))
    assert list(ct) == images
    assert ct.paths == [Path("/data/0.dcm"), Path("/data/1.dcm"), Path("/data/2.dcm")]


def test_get_data_applies_the_grinder() -> None:
    class Numbers(AbstractInput):
        image_grinder = TagGrinder(["InstanceNumber"])

    numbers = Numbers()
    for image in _ct(2):
        numbers.add_image(image)
    assert numbers.get_data() == [{"InstanceNumber": 1}, {"InstanceNumber": 2}]


def test_enforce_single_series_refuses_a_second_series() -> None:
    class One(AbstractInput):
        enforce_single_series = True

    one = One()
    one.add_image(_ct(1)[0])
    other = _ct(1)[0]
    assert "holds series" in (one.rejection(other) or "")


def test_dynamic_input_grinds_each_series_separately() -> None:
    class Series(DynamicInput):
        image_grinder = ListGrinder()

    first, second = _ct(2), _ct(3)
    series = Series()
    for image in first + second:
        series.add_image(image)
    data = series.get_data()
    assert data == {first[0].SeriesInstanceUID: first, second[0].SeriesInstanceUID: second}


def test_dynamic_input_refuses_an_image_without_its_key_tag() -> None:
    image = _ct(1)[0]
    del image.SeriesInstanceUID
    assert "groups images by SeriesInstanceUID" in (DynamicInput().rejection(image) or "")


def test_routing_tags_name_what_the_input_looks_at() -> None:
    assert {0x00080060, 0x0020000E, 0x00080018} <= CT().routing_tags()


def test_the_core_registers_its_inputs_by_name(clean_registry: None) -> None:
    registry = load_plugins()
    assert registry.input("dicom") is AbstractInput
    assert registry.input("dynamic") is DynamicInput
