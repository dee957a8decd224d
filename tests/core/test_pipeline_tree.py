"""The pipeline tree: patients kept apart, completeness, stable time, the InputContainer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import Dataset

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.grinders import ListGrinder, TagGrinder
from dicomnode.extension.inputs import AbstractInput
from dicomnode.net import Address
from dicomnode.server.pipeline_tree import PatientContainer, PipelineTree


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    image_grinder = ListGrinder()

    def validate(self) -> bool:
        return self.images >= 2


class Numbers(AbstractInput):
    image_grinder = TagGrinder(["InstanceNumber"])


def _images(patient: str, count: int = 2) -> list[Dataset]:
    return synthetic_series(patient_id=patient, slices=count, rows=4, columns=4)


def test_patients_are_kept_apart() -> None:
    tree = PipelineTree({"CT": CT})
    for a, b in zip(_images("A"), _images("B")):
        tree.add_image("A", a)
        tree.add_image("B", b)
    assert sorted(tree.keys()) == ["A", "B"]
    assert {ds.PatientID for ds in tree["A"].datasets()} == {"A"}


def test_an_image_no_input_accepts_creates_no_patient() -> None:
    tree = PipelineTree({"CT": CT})
    image = _images("A", 1)[0]
    image.Modality = "MR"
    assert tree.add_image("A", image) == []
    assert "A" not in tree
    assert "requires Modality 'CT'" in (tree.rejection("A", image) or "")


def test_an_image_goes_to_every_input_that_accepts_it() -> None:
    tree = PipelineTree({"CT": CT, "numbers": Numbers})
    assert tree.add_image("A", _images("A", 1)[0]) == ["CT", "numbers"]
    assert tree["A"].images == 1


def test_take_ready_removes_only_complete_patients() -> None:
    tree = PipelineTree({"CT": CT})
    for image in _images("A", 2):
        tree.add_image("A", image)
    tree.add_image("B", _images("B", 1)[0])
    ready = tree.take_ready()
    assert [c.patient_key for c in ready] == ["A"]
    assert tree.keys() == ["B"]


def test_take_ready_waits_for_the_stable_time() -> None:
    tree = PipelineTree({"CT": CT})
    for image in _images("A", 2):
        tree.add_image("A", image)
    assert tree.take_ready(stable_time=5.0) == []
    assert [c.patient_key for c in tree.take_ready(stable_time=5.0, now=time.monotonic() + 6)] == ["A"]


def test_take_expired_removes_patients_whose_first_image_is_old() -> None:
    tree = PipelineTree({"CT": CT})
    tree.add_image("A", _images("A", 1)[0])
    tree["A"].created -= 3600
    tree.add_image("B", _images("B", 1)[0])
    assert [c.patient_key for c in tree.take_expired(1800)] == ["A"]
    assert tree.keys() == ["B"]


def test_the_input_container_maps_names_to_ground_values_with_the_raw_material() -> None:
    endpoint = Address("127.0.0.1", 104, "SCANNER")
    tree = PipelineTree({"CT": CT, "numbers": Numbers}, {"SCANNER": endpoint})
    images = _images("A", 2)
    for index, image in enumerate(images):
        tree.add_image("A", image, Path(f"/d/{index}.dcm"), "SCANNER")
    container = tree.take_ready()[0].get_input_container()
    assert isinstance(container, InputContainer)
    assert container["CT"] == images
    assert container["numbers"] == [{"InstanceNumber": 1}, {"InstanceNumber": 2}]
    assert container.datasets["CT"] == images
    assert container.paths == {"CT": [Path("/d/0.dcm"), Path("/d/1.dcm")],
                               "numbers": [Path("/d/0.dcm"), Path("/d/1.dcm")]}
    assert container.responding_address == endpoint
    assert (container.patient_key, container.calling_aet) == ("A", "SCANNER")
    assert sorted(container) == ["CT", "numbers"] and len(container) == 2


def test_an_unknown_sender_has_no_responding_address_and_in_memory_data_no_paths() -> None:
    container = PatientContainer("A", {"CT": CT})
    for image in _images("A", 2):
        container.add_image(image)
    container.calling_aet = "STRANGER"
    result = container.get_input_container()
    assert result.responding_address is None
    assert result.paths is None


def test_asking_for_an_input_that_does_not_exist_names_the_inputs() -> None:
    with pytest.raises(KeyError, match=r"no input 'MR'; the inputs are \['CT'\]"):
        InputContainer({"CT": 1}, {"CT": []})["MR"]
