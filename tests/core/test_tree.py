"""Image trees: DicomTree -> PatientTree -> StudyTree -> SeriesTree -> datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.dicom.tree import (
    DicomTree,
    IdentityMapping,
    ImageTreeInterface,
    PatientTree,
    SeriesTree,
    StudyTree,
    instance_path,
)
from dicomnode.errors import IncompatibleImagesError, InvalidDatasetError


def small(**kwargs: object) -> list[Dataset]:
    return synthetic_series(rows=4, columns=4, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def two_patients() -> list[Dataset]:
    first = small(slices=3, patient_id="P1")
    second_series = small(slices=2, patient_id="P1", study_uid=first[0].StudyInstanceUID, series_number=2)
    other = small(slices=2, patient_id="P2")
    return first + second_series + other


def test_every_level_is_an_image_tree() -> None:
    for tree in (DicomTree(), PatientTree(), StudyTree(), SeriesTree()):
        assert isinstance(tree, ImageTreeInterface)
        assert len(tree) == 0


def test_a_dicom_tree_sorts_images_by_patient_study_and_series(two_patients: list[Dataset]) -> None:
    tree = DicomTree(two_patients)
    assert len(tree) == 7
    assert tree.keys() == ["P1", "P2"]
    study = tree["P1"][two_patients[0].StudyInstanceUID]
    assert isinstance(study, StudyTree)
    assert len(study.keys()) == 2
    series = study[two_patients[0].SeriesInstanceUID]
    assert isinstance(series, SeriesTree) and len(series) == 3
    assert series[two_patients[0].SOPInstanceUID] is two_patients[0]


def test_iteration_yields_every_dataset_once(two_patients: list[Dataset]) -> None:
    tree = DicomTree()
    tree.add_images(two_patients)
    assert sorted(map(id, tree)) == sorted(map(id, two_patients))


def test_add_image_adds_one(two_patients: list[Dataset]) -> None:
    tree = DicomTree()
    tree.add_image(two_patients[0])
    assert len(tree) == 1 and two_patients[0].PatientID in tree


def test_a_series_tree_refuses_a_duplicate_sop_instance_uid() -> None:
    series = small(slices=2)
    tree = SeriesTree(series)
    with pytest.raises(IncompatibleImagesError, match=series[0].SOPInstanceUID):
        tree.add_image(series[0])
    assert len(tree) == 2


def test_a_series_tree_refuses_an_image_of_another_series() -> None:
    tree = SeriesTree(small(slices=2))
    stranger = small(slices=1)[0]
    with pytest.raises(IncompatibleImagesError, match="belongs to series"):
        tree.add_image(stranger)
    assert len(tree) == 2


def test_a_study_tree_refuses_an_image_of_another_study() -> None:
    tree = StudyTree(small(slices=1))
    with pytest.raises(IncompatibleImagesError, match="StudyInstanceUID"):
        tree.add_image(small(slices=1)[0])


def test_a_patient_tree_refuses_an_image_of_another_patient() -> None:
    tree = PatientTree(small(slices=1, patient_id="A"))
    with pytest.raises(IncompatibleImagesError, match="PatientID 'B'"):
        tree.add_image(small(slices=1, patient_id="B")[0])


def test_a_refused_image_leaves_no_empty_branch(two_patients: list[Dataset]) -> None:
    tree = DicomTree(two_patients)
    with pytest.raises(IncompatibleImagesError):
        tree.add_image(two_patients[0])
    assert tree.keys() == ["P1", "P2"] and len(tree) == 7


def test_an_image_without_a_series_uid_is_refused_by_name() -> None:
    image = small(slices=1)[0]
    del image.SeriesInstanceUID
    with pytest.raises(InvalidDatasetError, match="without SeriesInstanceUID"):
        DicomTree([image])


def test_an_empty_patient_id_is_one_patient() -> None:
    images = small(slices=2, patient_id="")
    assert DicomTree(images).keys() == [""]


def test_save_writes_patient_study_series_instance(tmp_path: Path) -> None:
    images = small(slices=2, patient_id="P1")
    paths = DicomTree(images).save(tmp_path)
    first = images[0]
    expected = tmp_path / "P1" / first.StudyInstanceUID / first.SeriesInstanceUID / f"{first.SOPInstanceUID}.dcm"
    assert expected in paths
    assert dcmread(expected).SOPInstanceUID == first.SOPInstanceUID
    assert len(paths) == 2


def test_a_subtree_saves_where_the_whole_tree_would(tmp_path: Path) -> None:
    images = small(slices=2, patient_id="P1")
    tree = DicomTree(images)
    series = tree["P1"][images[0].StudyInstanceUID][images[0].SeriesInstanceUID]
    from_series = {path.relative_to(tmp_path / "a") for path in series.save(tmp_path / "a")}
    from_tree = {path.relative_to(tmp_path / "b") for path in tree.save(tmp_path / "b")}
    assert from_series == from_tree


@pytest.mark.filterwarnings("ignore:The value length")
@pytest.mark.parametrize("patient_id", ["../../etc", "/abs/path", "..", "a/../../b", "CON", "x" * 200])
def test_no_patient_id_can_leave_the_save_directory(tmp_path: Path, patient_id: str) -> None:
    root = tmp_path / "out"
    paths = DicomTree(small(slices=1, patient_id=patient_id)).save(root)
    for path in paths:
        assert root.resolve() in path.resolve().parents
        assert path.exists()
    assert [p for p in tmp_path.iterdir()] == [root]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_instance_path_of_a_hostile_uid_stays_inside(tmp_path: Path) -> None:
    image = small(slices=1)[0]
    image.SOPInstanceUID = "../../../escape"
    path = instance_path(tmp_path, image)
    assert tmp_path.resolve() in path.resolve().parents


def test_lazy_datasets_stay_unloaded_in_a_tree(tmp_path: Path) -> None:
    paths = write_series(small(slices=3, patient_id="P1"), tmp_path)
    lazy = [LazyDataset(path) for path in paths]
    tree = DicomTree(lazy)
    assert len(tree) == 3 and tree.keys() == ["P1"]
    assert not any(dataset.is_loaded for dataset in lazy)


def test_saving_unloaded_lazy_datasets_copies_their_files_and_keeps_them_unloaded(tmp_path: Path) -> None:
    paths = write_series(small(slices=2, patient_id="P1"), tmp_path / "in")
    lazy = [LazyDataset(path) for path in paths]
    written = DicomTree(lazy).save(tmp_path / "out")
    assert not any(dataset.is_loaded for dataset in lazy)
    assert sorted(p.read_bytes() for p in written) == sorted(p.read_bytes() for p in paths)


def test_saving_a_changed_lazy_dataset_writes_its_changes(tmp_path: Path) -> None:
    dataset = LazyDataset(write_series(small(slices=1, patient_id="P1"), tmp_path / "in")[0])
    tree = DicomTree([dataset])
    dataset.SeriesDescription = "changed in memory"
    [written] = tree.save(tmp_path / "out")
    assert dcmread(written).SeriesDescription == "changed in memory"


def test_a_loaded_lazy_dataset_stays_loaded(tmp_path: Path) -> None:
    dataset = LazyDataset(write_series(small(slices=1), tmp_path)[0]).load()
    DicomTree([dataset])
    assert dataset.is_loaded


def test_map_sorts_the_tree_under_the_new_identifiers(two_patients: list[Dataset]) -> None:
    tree = DicomTree(two_patients)
    tree.map(IdentityMapping())
    assert tree.keys() == ["ANON0001", "ANON0002"]
    assert len(tree) == 7
    for dataset in tree:
        assert dataset.SOPInstanceUID in tree[dataset.PatientID][dataset.StudyInstanceUID][dataset.SeriesInstanceUID]


def test_mapping_a_subtree_moves_it_to_its_new_place(two_patients: list[Dataset]) -> None:
    tree = DicomTree(two_patients)
    tree["P2"].map(IdentityMapping())
    assert tree.keys() == ["P1", "ANON0001"]
    assert len(tree) == 7


def test_mapping_one_series_leaves_its_sibling_series_in_place(two_patients: list[Dataset]) -> None:
    tree = DicomTree(two_patients)
    study_uid, series_uid = two_patients[0].StudyInstanceUID, two_patients[0].SeriesInstanceUID
    tree["P1"][study_uid][series_uid].map(IdentityMapping())
    assert len(tree["P1"][study_uid].keys()) == 1
    assert len(tree["ANON0001"]) == 3
    assert len(tree) == 7
