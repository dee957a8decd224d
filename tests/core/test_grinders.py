"""Grinders: each turns the datasets of an input into the value process() receives."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import GrindingError
from dicomnode.extension.grinders import (
    DicomTreeGrinder,
    Grinder,
    IdentityGrinder,
    ListGrinder,
    ManyGrinder,
    TagGrinder,
    resolve_tag,
)
from dicomnode.plugins import load_plugins


def _series(count: int = 3) -> list[Dataset]:
    return synthetic_series(slices=count, rows=4, columns=4)


def test_identity_grinder_returns_the_very_same_object() -> None:
    datasets = _series()
    assert IdentityGrinder()(datasets) is datasets


def test_list_grinder_materialises_an_iterator_in_order() -> None:
    datasets = _series()
    result = ListGrinder()(iter(datasets))
    assert result == datasets and result is not datasets


def test_tag_grinder_gives_one_dict_per_dataset_keyed_by_keyword() -> None:
    result = TagGrinder(["InstanceNumber", 0x00080060])(_series(2))
    assert result == [{"InstanceNumber": 1, "Modality": "CT"}, {"InstanceNumber": 2, "Modality": "CT"}]


def test_tag_grinder_gives_none_for_a_missing_tag_unless_required() -> None:
    datasets = _series(1)
    assert TagGrinder(["PatientWeight"])(datasets) == [{"PatientWeight": None}]
    with pytest.raises(GrindingError, match="PatientWeight"):
        TagGrinder(["PatientWeight"], required=True)(datasets)


def test_tag_grinder_refuses_an_unknown_keyword_at_construction() -> None:
    with pytest.raises(ValueError, match="NotATag"):
        TagGrinder(["NotATag"])


def test_many_grinder_feeds_every_grinder_the_whole_sequence() -> None:
    datasets = _series(3)
    listed, tags = ManyGrinder(ListGrinder(), TagGrinder(["InstanceNumber"]))(iter(datasets))
    assert listed == datasets
    assert [row["InstanceNumber"] for row in tags] == [1, 2, 3]


def test_many_grinder_needs_callables() -> None:
    with pytest.raises(ValueError, match="callable"):
        ManyGrinder(ListGrinder(), "list")


def test_dicom_tree_grinder_builds_a_tree_of_all_images() -> None:
    tree = DicomTreeGrinder()(_series(4))
    assert len(tree) == 4


def test_the_base_grinder_says_what_a_subclass_must_define() -> None:
    with pytest.raises(NotImplementedError, match="__call__"):
        Grinder()([])


def test_resolve_tag_accepts_keywords_and_integers_only() -> None:
    assert resolve_tag("PatientID") == 0x00100020
    assert resolve_tag(0x00100020) == 0x00100020
    with pytest.raises(ValueError, match="keyword or an integer"):
        resolve_tag(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "cls"), [("identity", IdentityGrinder), ("list", ListGrinder),
                                           ("dicom-tree", DicomTreeGrinder), ("tag", TagGrinder),
                                           ("many", ManyGrinder)])
def test_the_core_registers_its_grinders_by_name(name: str, cls: type, clean_registry: None) -> None:
    assert load_plugins().grinder(name) is cls
