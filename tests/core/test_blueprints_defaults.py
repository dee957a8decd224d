"""The default blueprints: what a derived series takes from its parent and what is new."""

from __future__ import annotations

import pytest
from parent_series import RawFactory, ct_series, mr_series, slices
from pydicom import Dataset

from dicomnode import Blueprint, StaticElement
from dicomnode.dicom.blueprints import (
    CT_IMAGE_BLUEPRINT,
    DEFAULT_BLUEPRINT,
    FRAME_OF_REFERENCE_BLUEPRINT,
    GENERAL_EQUIPMENT_BLUEPRINT,
    GENERAL_IMAGE_BLUEPRINT,
    GENERAL_SERIES_BLUEPRINT,
    GENERAL_STUDY_BLUEPRINT,
    IMAGE_PIXEL_DERIVED_BLUEPRINT,
    MR_IMAGE_BLUEPRINT,
    PATIENT_BLUEPRINT,
    SOP_COMMON_BLUEPRINT,
    SOURCE_IMAGE_BLUEPRINT,
)

MODULES = [
    SOP_COMMON_BLUEPRINT, PATIENT_BLUEPRINT, GENERAL_STUDY_BLUEPRINT, GENERAL_SERIES_BLUEPRINT,
    FRAME_OF_REFERENCE_BLUEPRINT, GENERAL_EQUIPMENT_BLUEPRINT, GENERAL_IMAGE_BLUEPRINT,
    IMAGE_PIXEL_DERIVED_BLUEPRINT, SOURCE_IMAGE_BLUEPRINT,
]


def derive(parents: list[Dataset], blueprint: Blueprint = DEFAULT_BLUEPRINT,
           factory: RawFactory | None = None, **kwargs: object) -> list[Dataset]:
    factory = factory or RawFactory()
    header = factory.build_series_header(parents, blueprint, kwargs)
    return factory.build_series(slices(len(parents)), header, parents, kwargs)


def test_the_default_blueprint_is_every_module_blueprint() -> None:
    tags = [element.tag for module in MODULES for element in module]
    assert [element.tag for element in DEFAULT_BLUEPRINT] == tags
    assert len(set(tags)) == len(tags), "two module blueprints claim the same tag"


def test_the_result_belongs_to_the_parents_patient_and_study() -> None:
    parents = ct_series(2)
    for ds in derive(parents):
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                        "StudyInstanceUID", "StudyDate", "AccessionNumber", "FrameOfReferenceUID"):
            assert ds[keyword].value == parents[0][keyword].value, keyword


def test_the_result_is_a_new_series_of_new_instances() -> None:
    parents = ct_series(2)
    datasets = derive(parents)
    assert datasets[0].SeriesInstanceUID != parents[0].SeriesInstanceUID
    assert datasets[0].SeriesInstanceUID == datasets[1].SeriesInstanceUID
    assert {ds.SOPInstanceUID for ds in datasets}.isdisjoint({p.SOPInstanceUID for p in parents})
    assert datasets[0].SOPInstanceUID != datasets[1].SOPInstanceUID
    assert [ds.InstanceNumber for ds in datasets] == [1, 2]


def test_the_series_number_is_the_parents_plus_1000_unless_given() -> None:
    parents = ct_series(1)
    assert derive(parents)[0].SeriesNumber == 1003
    assert derive(parents, series_number=77)[0].SeriesNumber == 77


def test_the_series_description_comes_from_kwargs() -> None:
    parents = ct_series(1)
    assert "SeriesDescription" not in derive(parents)[0]
    assert derive(parents, series_description="Liver mask")[0].SeriesDescription == "Liver mask"


def test_the_image_type_is_derived_and_keeps_the_parents_third_value() -> None:
    assert list(derive(ct_series(1))[0].ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]


def test_the_equipment_is_this_software() -> None:
    ds = derive(ct_series(1))[0]
    assert ds.Manufacturer == "dicomnode"
    assert ds.SoftwareVersions.startswith("dicomnode ")
    assert "InstitutionName" not in ds


def test_the_equipment_can_be_configured_on_the_factory() -> None:
    factory = RawFactory(manufacturer="Rigshospitalet Physics", institution_name="Rigshospitalet",
                         station_name="NODE-1", software_versions="liver 2.1")
    ds = derive(ct_series(1), factory=factory)[0]
    assert (ds.Manufacturer, ds.InstitutionName, ds.StationName, ds.SoftwareVersions) == (
        "Rigshospitalet Physics", "Rigshospitalet", "NODE-1", "liver 2.1")


def test_each_instance_references_the_parent_instance_it_came_from() -> None:
    parents = ct_series(3)
    for ds, parent in zip(derive(list(reversed(parents))), parents):
        (reference,) = ds.SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == parent.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == parent.SOPClassUID


def test_no_source_reference_when_parents_share_an_instance_number() -> None:
    parents = ct_series(2)
    parents[1].InstanceNumber = 1
    assert all("SourceImageSequence" not in ds for ds in derive(parents))


def test_the_pixel_description_is_16_bit_unsigned_monochrome() -> None:
    ds = derive(ct_series(1))[0]
    assert (ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored,
            ds.HighBit, ds.PixelRepresentation) == (1, "MONOCHROME2", 16, 16, 15, 0)


def test_text_is_written_as_utf8() -> None:
    ds = derive(ct_series(1))[0]
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientName == "Hansen^Jørgen"


def test_ct_image_blueprint_carries_geometry_per_slice_and_acquisition() -> None:
    parents = ct_series(3)
    datasets = derive(parents, DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT)
    assert [list(ds.ImagePositionPatient) for ds in datasets] == [list(p.ImagePositionPatient) for p in parents]
    assert [ds.SliceLocation for ds in datasets] == [p.SliceLocation for p in parents]
    assert datasets[0].KVP == 120
    assert list(datasets[0].PixelSpacing) == [0.8, 0.8]


def test_mr_image_blueprint_carries_the_sequence_parameters() -> None:
    ds = derive(mr_series(2), DEFAULT_BLUEPRINT + MR_IMAGE_BLUEPRINT)[0]
    assert (ds.ScanningSequence, ds.SequenceVariant, ds.EchoTime, ds.RepetitionTime) == ("SE", "NONE", 15, 500)


def test_a_users_element_wins_over_the_default() -> None:
    ds = derive(ct_series(1), DEFAULT_BLUEPRINT + Blueprint([StaticElement("Modality", "CS", "OT")]))[0]
    assert ds.Modality == "OT"


def test_a_parent_without_a_study_uid_is_named_in_the_error() -> None:
    parents = ct_series(1)
    del parents[0].StudyInstanceUID
    with pytest.raises(ValueError, match=r"StudyInstanceUID \(0020,000D\)"):
        derive(parents)
