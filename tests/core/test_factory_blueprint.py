"""Blueprint: an ordered collection of virtual elements keyed by tag."""

from __future__ import annotations

import pytest

from dicomnode import Blueprint, CopyElement, DiscardElement, StaticElement
from dicomnode.errors import BlueprintError
from dicomnode.plugins import get_registry


def test_a_blueprint_holds_its_elements_in_order() -> None:
    first, second = StaticElement("Modality", "CS", "OT"), CopyElement("PatientID")
    blueprint = Blueprint([first, second])
    assert list(blueprint) == [first, second]
    assert len(blueprint) == 2


def test_an_element_for_a_tag_already_there_replaces_it() -> None:
    blueprint = Blueprint([StaticElement("Modality", "CS", "OT")])
    blueprint.add_virtual_element(StaticElement("Modality", "CS", "CT"))
    assert len(blueprint) == 1
    assert blueprint["Modality"].value == "CT"  # type: ignore[attr-defined]


def test_in_takes_a_keyword_an_int_or_a_tag() -> None:
    blueprint = Blueprint([CopyElement("PatientID")])
    assert "PatientID" in blueprint
    assert 0x00100020 in blueprint
    assert "PatientName" not in blueprint
    assert "NotAKeyword" not in blueprint


def test_adding_blueprints_gives_a_new_one_where_the_right_side_wins() -> None:
    left = Blueprint([StaticElement("Modality", "CS", "OT"), CopyElement("PatientID")])
    right = Blueprint([StaticElement("Modality", "CS", "CT"), DiscardElement("PatientName")])
    combined = left + right
    assert [element.tag for element in combined] == [0x00080060, 0x00100020, 0x00100010]
    assert combined["Modality"].value == "CT"  # type: ignore[attr-defined]
    assert left["Modality"].value == "OT"  # type: ignore[attr-defined]
    assert len(right) == 2


def test_only_virtual_elements_go_into_a_blueprint() -> None:
    with pytest.raises(BlueprintError, match="holds virtual elements"):
        Blueprint(["PatientID"])  # type: ignore[list-item]


def test_asking_for_a_tag_the_blueprint_lacks_names_it() -> None:
    with pytest.raises(KeyError, match=r"PatientID \(0010,0020\)"):
        Blueprint()["PatientID"]


def test_the_repr_lists_the_elements() -> None:
    assert repr(Blueprint([CopyElement("PatientID")])) == "Blueprint([CopyElement(PatientID (0010,0020))])"


@pytest.mark.usefixtures("clean_registry")
@pytest.mark.parametrize("name, cls", [
    ("static", "StaticElement"), ("copy", "CopyElement"), ("attr", "AttrElement"),
    ("discard", "DiscardElement"), ("series", "SeriesElement"), ("sequence", "SequenceElement"),
    ("functional", "FunctionalElement"), ("instance-copy", "InstanceCopyElement"),
])
def test_the_core_contributes_its_element_kinds_by_name(name: str, cls: str) -> None:
    import dicomnode.dicom.factory as factory

    assert get_registry().virtual_element(name) is getattr(factory, cls)
