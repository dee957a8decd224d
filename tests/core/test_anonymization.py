"""anonymize(): identifying attributes removed or emptied, identifiers replaced reversibly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import require_peer
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence

from dicomnode.dicom.anonymization import DEIDENTIFICATION_METHOD, EMPTIED, REMOVED, anonymize
from dicomnode.dicom.lazy import LazyDataset
from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.dicom.tree import DicomTree, IdentityMapping
from dicomnode.errors import ConfigurationError


def identified(modality: str = "CT", slices: int = 2) -> list[Dataset]:
    """A series carrying the identifying attributes a hospital's images carry."""
    series = synthetic_series(slices=slices, rows=4, columns=4, modality=modality,
                              patient_id="0101701234", patient_name="Doe^Jane")
    for dataset in series:
        dataset.PatientAge = "056Y"
        dataset.PatientWeight = "71.5"
        dataset.PatientAddress = "Main Street 1"
        dataset.OtherPatientIDs = "998877"
        dataset.InstitutionName = "General Hospital"
        dataset.StationName = "CT01"
        dataset.OperatorsName = "Smith^Tom"
        dataset.ReferringPhysicianName = "Who^Doctor"
        dataset.AcquisitionDate = "20260101"
        person = Dataset()
        person.PatientID = "0101701234"
        person.PatientAddress = "Main Street 1"
        dataset.ReferencedPatientSequence = Sequence([person])
        request = Dataset()
        request.RequestedProcedureID = "RP1"
        request.ScheduledProcedureStepDescription = "CT chest for Jane Doe"
        dataset.RequestAttributesSequence = Sequence([request])
        block = dataset.private_block(0x0029, "ACME 1.0", create=True)
        block.add_new(0x01, "LO", "Jane Doe, ward 7")
    return series


def test_removed_attributes_are_gone() -> None:
    dataset = anonymize(identified()[0])
    for keyword in ("PatientAge", "PatientWeight", "PatientAddress", "OtherPatientIDs", "InstitutionName",
                    "StationName", "OperatorsName", "AcquisitionDate", "StudyDescription", "SeriesDescription",
                    "ReferencedPatientSequence", "RequestAttributesSequence"):
        assert keyword not in dataset, keyword


def test_emptied_attributes_stay_present_and_empty() -> None:
    dataset = anonymize(identified()[0])
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyDate", "StudyTime",
                    "StudyID"):
        assert keyword in dataset and dataset[keyword].is_empty, keyword


def test_private_elements_are_removed() -> None:
    dataset = anonymize(identified()[0])
    assert not any(element.tag.is_private for element in dataset)


def test_keep_private_keeps_them() -> None:
    dataset = anonymize(identified()[0], keep_private=True)
    assert any(element.tag.is_private for element in dataset)


def test_identifiers_and_uids_are_replaced() -> None:
    dataset = identified()[0]
    old_study = dataset.StudyInstanceUID
    anonymize(dataset)
    assert dataset.PatientID == "ANON0001" and dataset.PatientName == "ANON0001"
    assert dataset.AccessionNumber.startswith("ANON")
    assert dataset.StudyInstanceUID != old_study


def test_the_dataset_says_it_was_deidentified() -> None:
    dataset = anonymize(identified()[0])
    assert dataset.PatientIdentityRemoved == "YES"
    assert dataset.DeidentificationMethod == DEIDENTIFICATION_METHOD


def test_identifying_attributes_in_sequences_are_removed_too() -> None:
    dataset = identified()[0]
    item = Dataset()
    item.InstitutionName = "General Hospital"
    item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
    dataset.SourceImageSequence = Sequence([item])
    anonymize(dataset)
    assert "InstitutionName" not in dataset.SourceImageSequence[0]
    assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID == dataset.SOPInstanceUID


def test_keep_leaves_named_attributes_alone() -> None:
    dataset = anonymize(identified()[0], keep=["PatientWeight", "PatientSex"])
    assert dataset.PatientWeight == 71.5 and dataset.PatientSex == "O"
    assert "PatientAge" not in dataset


def test_keep_refuses_a_name_anonymize_does_not_touch() -> None:
    with pytest.raises(ConfigurationError, match="Modality"):
        anonymize(identified()[0], keep=["Modality"])


def test_keep_explains_that_identifiers_are_replaced() -> None:
    with pytest.raises(ConfigurationError, match="replaced, not removed"):
        anonymize(identified()[0], keep=["PatientID"])


def test_the_lists_do_not_overlap() -> None:
    assert not set(EMPTIED) & set(REMOVED)


def test_a_list_is_anonymized_in_place_and_returned() -> None:
    series = identified()
    assert anonymize(series) is series
    assert {dataset.PatientID for dataset in series} == {"ANON0001"}


def test_any_iterable_comes_back_as_a_list() -> None:
    result = anonymize(dataset for dataset in identified())
    assert isinstance(result, list) and len(result) == 2


def test_a_tree_is_returned_sorted_under_the_new_identifiers() -> None:
    tree = DicomTree(identified() + identified("MR"))
    assert anonymize(tree) is tree
    assert tree.keys() == ["ANON0001"]
    assert len(tree) == 4


def test_one_mapping_over_two_batches_keeps_one_identity() -> None:
    series = identified(slices=4)
    mapping = IdentityMapping()
    anonymize(series[:2], mapping)
    anonymize(series[2:], mapping)
    assert len({d.StudyInstanceUID for d in series}) == 1
    assert len({d.SeriesInstanceUID for d in series}) == 1
    assert {d.PatientID for d in series} == {"ANON0001"}


def test_the_reverse_mapping_restores_the_identifiers() -> None:
    dataset = identified()[0]
    patient_id, name, study = dataset.PatientID, str(dataset.PatientName), dataset.StudyInstanceUID
    mapping = IdentityMapping()
    anonymize(dataset, mapping)
    mapping.reverse().apply(dataset)
    assert (dataset.PatientID, str(dataset.PatientName), dataset.StudyInstanceUID) == (patient_id, name, study)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_an_anonymized_image_passes_dciodvfy_without_errors(tmp_path: Path, modality: str) -> None:
    dciodvfy = require_peer("dciodvfy")
    path = write_series(anonymize(identified(modality, slices=1)), tmp_path)[0]
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert errors == []


def test_a_tree_of_lazy_datasets_is_anonymized_and_saved_without_touching_the_originals(
    tmp_path: Path,
) -> None:
    originals = write_series(identified(), tmp_path / "in")
    before = [path.read_bytes() for path in originals]
    tree = anonymize(DicomTree(LazyDataset(path) for path in originals))
    written = tree.save(tmp_path / "out")
    assert [path.read_bytes() for path in originals] == before
    assert {dcmread(path).PatientID for path in written} == {"ANON0001"}
    assert all(path.relative_to(tmp_path / "out").parts[0] == "ANON0001" for path in written)
