"""IdentityMapping: consistent, recordable, reversible replacement of UIDs and patient identifiers."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.dicom.tree import DicomTree, IdentityMapping
from dicomnode.errors import ConfigurationError


def test_the_same_old_uid_always_gets_the_same_new_uid() -> None:
    mapping = IdentityMapping()
    assert mapping.uid("1.2.3.4") == mapping.uid("1.2.3.4")
    assert mapping.uid("1.2.3.4") != "1.2.3.4"


def test_different_old_uids_get_different_new_uids() -> None:
    mapping = IdentityMapping()
    assert len({mapping.uid(f"1.2.3.{n}") for n in range(500)}) == 500


def test_new_uids_use_the_prefix() -> None:
    assert IdentityMapping(uid_prefix="1.2.999.").uid("1.2.3").startswith("1.2.999.")


def test_standard_dicom_uids_are_kept() -> None:
    assert IdentityMapping().uid(CTImageStorage) == CTImageStorage


def test_patient_ids_are_numbered_in_order_of_appearance() -> None:
    mapping = IdentityMapping(identifier_prefix="STUDY-")
    assert [mapping.patient_id(v) for v in ("b", "a", "b")] == ["STUDY-0001", "STUDY-0002", "STUDY-0001"]


def test_empty_values_stay_empty() -> None:
    mapping = IdentityMapping()
    assert mapping.patient_id("") == "" and mapping.uid("") == ""


def test_a_seed_makes_new_values_independent_of_order_and_process() -> None:
    one, two = IdentityMapping(seed="trial-7"), IdentityMapping(seed="trial-7")
    one.uid("1.2.3.9")
    assert one.uid("1.2.3.4") == two.uid("1.2.3.4")
    assert one.patient_id("123") == two.patient_id("123")
    assert IdentityMapping(seed="other").uid("1.2.3.4") != two.uid("1.2.3.4")


def test_original_gives_back_the_replaced_value() -> None:
    mapping = IdentityMapping()
    new = mapping.uid("1.2.3.4")
    assert mapping.original(new) == "1.2.3.4"
    assert mapping.original(mapping.patient_id("123456"), "PatientID") == "123456"
    with pytest.raises(KeyError, match="not a value this mapping made"):
        mapping.original("9.9.9")


def test_json_round_trip_continues_the_mapping() -> None:
    mapping = IdentityMapping(seed="s")
    uid, patient = mapping.uid("1.2.3.4"), mapping.patient_id("123")
    restored = IdentityMapping.from_json(mapping.to_json())
    assert restored.uid("1.2.3.4") == uid and restored.patient_id("123") == patient
    assert restored.seed == "s" and len(restored) == 2


def test_json_numbering_continues_after_a_round_trip() -> None:
    mapping = IdentityMapping()
    mapping.patient_id("a")
    restored = IdentityMapping.from_json(mapping.to_json())
    assert restored.patient_id("b") == "ANON0002"


@pytest.mark.parametrize("text", ["{", "[]", '{"format": "other"}',
                                  '{"format": "dicomnode-identity-mapping", "version": 9}',
                                  '{"format": "dicomnode-identity-mapping", "version": 1, "tables": {"uid": [1]}}'])
def test_json_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        IdentityMapping.from_json(text)


@pytest.mark.parametrize("prefix", ["1.2.3", "01.2.", "a.b.", "1." * 40])
def test_a_bad_uid_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="uid_prefix"):
        IdentityMapping(uid_prefix=prefix)


@pytest.mark.parametrize("prefix", ["TOO-LONG-PREFIX", "A B", "Ä"])
def test_a_bad_identifier_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="identifier_prefix"):
        IdentityMapping(identifier_prefix=prefix)


def test_apply_replaces_uids_identifiers_and_file_meta() -> None:
    dataset = synthetic_series(slices=1, rows=2, columns=2, patient_id="123")[0]
    before = {k: str(dataset.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                               "FrameOfReferenceUID", "AccessionNumber", "PatientName")}
    mapping = IdentityMapping()
    mapping.apply(dataset)
    for keyword, old in before.items():
        assert str(dataset.get(keyword)) != old, keyword
    assert dataset.PatientID == "ANON0001" and dataset.PatientName == "ANON0001"
    assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
    assert dataset.SOPClassUID == CTImageStorage


def test_references_between_series_stay_valid_after_mapping() -> None:
    source = synthetic_series(slices=2, rows=2, columns=2)
    derived = synthetic_series(slices=1, rows=2, columns=2, study_uid=source[0].StudyInstanceUID,
                               frame_of_reference_uid=source[0].FrameOfReferenceUID)[0]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source[1].SOPClassUID
    reference.ReferencedSOPInstanceUID = source[1].SOPInstanceUID
    derived.SourceImageSequence = Sequence([reference])
    tree = DicomTree([*source, derived])
    tree.map(IdentityMapping())
    referenced = derived.SourceImageSequence[0].ReferencedSOPInstanceUID
    assert referenced == source[1].SOPInstanceUID
    assert derived.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert derived.StudyInstanceUID == source[0].StudyInstanceUID


def test_the_reverse_mapping_restores_the_originals() -> None:
    dataset = synthetic_series(slices=1, rows=2, columns=2, patient_id="123", patient_name="Doe^Jane")[0]
    original = dataset.copy()
    mapping = IdentityMapping()
    mapping.apply(dataset)
    mapping.reverse().apply(dataset)
    assert dataset == original


def test_a_reversed_mapping_leaves_unknown_values_alone() -> None:
    reverse = IdentityMapping().reverse()
    assert reverse.uid("1.2.3.4") == "1.2.3.4"
    assert reverse.patient_id("someone") == "someone"


def test_the_reverse_survives_a_json_round_trip() -> None:
    mapping = IdentityMapping()
    new = mapping.uid("1.2.3.4")
    reverse = IdentityMapping.from_json(mapping.reverse().to_json())
    assert reverse.uid(new) == "1.2.3.4"
    assert reverse.uid("5.6.7") == "5.6.7"
