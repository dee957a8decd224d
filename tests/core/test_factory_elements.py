"""Each kind of virtual element: the value it gives, and the error when it cannot."""

from __future__ import annotations

import pytest
from parent_series import RawFactory, ct_series, slices
from pydicom import Dataset
from pydicom.tag import Tag

from dicomnode import (
    AttrElement,
    Blueprint,
    CopyElement,
    DiscardElement,
    FunctionalElement,
    InstanceCopyElement,
    InstancedVirtualElement,
    InstanceEnvironment,
    SequenceElement,
    SeriesElement,
    StaticElement,
    VirtualElement,
)
from dicomnode.dicom.factory import SeriesContext
from dicomnode.errors import BlueprintError


def parent() -> Dataset:
    ds = Dataset()
    ds.PatientID = "PID-7"
    ds.PatientName = "Doe^Jane"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.InstanceNumber = 1
    return ds


def build(blueprint: Blueprint, parent_ds: Dataset | None = None, **kwargs: object) -> Dataset:
    return RawFactory().build_instance(parent_ds, blueprint, kwargs)


# --------------------------------------------------------------------------- tags


@pytest.mark.parametrize("tag", ["PatientID", 0x00100020, Tag(0x00100020), (0x0010, 0x0020)])
def test_a_tag_may_be_a_keyword_an_int_a_tag_or_a_pair(tag: object) -> None:
    assert StaticElement(tag, "LO", "x").tag == 0x00100020  # type: ignore[arg-type]


def test_an_unknown_keyword_names_the_keyword_and_suggests_close_ones() -> None:
    with pytest.raises(BlueprintError, match=r"'PatientNam' is not a keyword.*'PatientName'"):
        StaticElement("PatientNam", "PN", "Doe^Jane")


def test_a_tag_that_is_not_a_tag_is_refused() -> None:
    with pytest.raises(BlueprintError, match=r"got 1\.5"):
        CopyElement(1.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- static


def test_static_element_gives_its_value() -> None:
    ds = build(Blueprint([StaticElement("Modality", "CS", "OT")]))
    assert ds.Modality == "OT"
    assert ds["Modality"].VR == "CS"


def test_static_element_with_none_gives_an_empty_element() -> None:
    ds = build(Blueprint([StaticElement("AccessionNumber", "SH", None)]))
    assert "AccessionNumber" in ds
    assert ds.AccessionNumber in (None, "")


def test_a_vr_that_does_not_exist_is_refused() -> None:
    with pytest.raises(BlueprintError, match=r"StaticElement\(Modality \(0008,0060\)\): 'XX' is not a DICOM VR"):
        StaticElement("Modality", "XX", "OT")


def test_a_vr_the_dictionary_does_not_give_the_tag_is_refused() -> None:
    with pytest.raises(BlueprintError, match=r"PatientName \(0010,0010\).*VR 'US' is wrong.*gives PN"):
        StaticElement("PatientName", "US", 3)


def test_a_tag_with_two_allowed_vrs_accepts_either() -> None:
    assert StaticElement("SmallestImagePixelValue", "SS", -3).value == -3
    assert StaticElement("SmallestImagePixelValue", "US", 3).value == 3


def test_a_value_too_long_for_its_vr_names_tag_value_and_rule() -> None:
    with pytest.raises(BlueprintError) as caught:
        StaticElement("Modality", "CS", "MUCH-TOO-LONG-FOR-CS")
    message = str(caught.value)
    assert "Modality (0008,0060)" in message
    assert "'MUCH-TOO-LONG-FOR-CS'" in message
    assert "maximum length of 16" in message


def test_a_value_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(BlueprintError, match="VR US"):
        StaticElement("Rows", "US", "many")


def test_a_long_computed_decimal_is_rounded_to_fit_ds() -> None:
    ds = build(Blueprint([StaticElement("SliceThickness", "DS", 1 / 3)]))
    assert len(str(ds["SliceThickness"].value)) <= 16
    assert float(ds.SliceThickness) == pytest.approx(1 / 3)


def test_private_tags_take_any_vr() -> None:
    ds = build(Blueprint([StaticElement(0x00091001, "LO", "private")]))
    assert ds[0x00091001].value == "private"


# --------------------------------------------------------------------------- copy


def test_copy_element_copies_the_parents_value() -> None:
    ds = build(Blueprint([CopyElement("PatientID")]), parent())
    assert ds.PatientID == "PID-7"


def test_a_copied_element_is_independent_of_the_parent() -> None:
    source = parent()
    ds = build(Blueprint([CopyElement("PatientName")]), source)
    ds.PatientName = "Other^Name"
    assert source.PatientName == "Doe^Jane"


def test_a_missing_copied_tag_is_an_error_naming_the_tag() -> None:
    with pytest.raises(BlueprintError, match=r"CopyElement\(AccessionNumber \(0008,0050\)\).*no such element"):
        build(Blueprint([CopyElement("AccessionNumber")]), parent())


def test_copy_without_a_parent_says_so() -> None:
    with pytest.raises(BlueprintError, match="no parent dataset"):
        build(Blueprint([CopyElement("PatientID")]), None)


def test_an_optional_copy_of_a_missing_tag_gives_no_element() -> None:
    ds = build(Blueprint([CopyElement("AccessionNumber", optional=True)]), parent())
    assert "AccessionNumber" not in ds


def test_copy_empty_if_missing_gives_an_empty_type_2_element() -> None:
    ds = build(Blueprint([CopyElement("AccessionNumber", empty_if_missing=True)]), parent())
    assert "AccessionNumber" in ds
    assert ds["AccessionNumber"].VR == "SH"
    assert not ds.AccessionNumber


# --------------------------------------------------------------------------- attr


class NamedFactory(RawFactory):
    department = "Nuclear Medicine"

    def station(self) -> str:
        return "NODE-1"


def test_attr_element_reads_an_attribute_of_the_factory() -> None:
    ds = NamedFactory().build_instance(None, Blueprint([
        AttrElement("InstitutionalDepartmentName", "LO", "department"),
    ]))
    assert ds.InstitutionalDepartmentName == "Nuclear Medicine"


def test_attr_element_calls_a_method() -> None:
    ds = NamedFactory().build_instance(None, Blueprint([AttrElement("StationName", "SH", "station")]))
    assert ds.StationName == "NODE-1"


def test_attr_element_with_a_missing_attribute_names_it() -> None:
    with pytest.raises(BlueprintError, match="NamedFactory has no attribute 'ward'"):
        NamedFactory().build_instance(None, Blueprint([AttrElement("StationName", "SH", "ward")]))


def test_attr_element_checks_the_value_against_the_vr() -> None:
    class LongName(RawFactory):
        station = "A-STATION-NAME-LONGER-THAN-SIXTEEN"

    with pytest.raises(BlueprintError, match=r"StationName \(0008,1010\).*A-STATION-NAME"):
        LongName().build_instance(None, Blueprint([AttrElement("StationName", "SH", "station")]))


# --------------------------------------------------------------------------- discard


def test_discard_element_removes_what_an_earlier_element_added() -> None:
    blueprint = Blueprint([CopyElement("PatientID")]) + Blueprint([DiscardElement("PatientID")])
    assert "PatientID" not in build(blueprint, parent())


def test_discard_element_removes_a_tag_the_copy_policy_would_carry_over() -> None:
    factory = RawFactory(unmentioned_parent_tags="copy")
    ds = factory.build_instance(parent(), Blueprint([DiscardElement("PatientName")]))
    assert "PatientName" not in ds
    assert ds.PatientID == "PID-7"


# --------------------------------------------------------------------------- series


def test_series_element_is_produced_once_and_shared_by_every_instance() -> None:
    calls: list[int] = []

    def producer() -> str:
        calls.append(1)
        return f"Series {len(calls)}"

    factory = RawFactory()
    header = factory.build_series_header(ct_series(3), Blueprint([
        CopyElement("Modality"), SeriesElement("SeriesDescription", "LO", producer),
    ]))
    datasets = factory.build_series(slices(3), header)
    assert calls == [1]
    assert {ds.SeriesDescription for ds in datasets} == {"Series 1"}


def test_a_series_producer_may_take_the_series_context() -> None:
    def producer(context: SeriesContext) -> str:
        return f"{len(context.parent_series)} parents, {context.kwargs['what']}"

    ds = build(Blueprint([SeriesElement("SeriesDescription", "LO", producer)]), parent(), what="mask")
    assert ds.SeriesDescription == "1 parents, mask"


def test_a_series_producer_returning_none_gives_no_element() -> None:
    ds = build(Blueprint([SeriesElement("SeriesDescription", "LO", lambda: None)]))
    assert "SeriesDescription" not in ds


def test_a_producer_with_two_parameters_is_refused() -> None:
    with pytest.raises(BlueprintError, match="no arguments or of one"):
        SeriesElement("SeriesDescription", "LO", lambda a, b: "x")


def test_a_series_value_is_checked_against_the_vr() -> None:
    with pytest.raises(BlueprintError, match=r"SeriesElement\(SeriesNumber \(0020,0011\)\).*'twelve'"):
        build(Blueprint([SeriesElement("SeriesNumber", "IS", lambda: "twelve")]))


# --------------------------------------------------------------------------- functional


def test_functional_element_computes_a_value_per_instance() -> None:
    factory = RawFactory()
    header = factory.build_series_header(ct_series(3), Blueprint([
        CopyElement("Modality"),
        FunctionalElement("ImageComments", "LT", lambda env: f"{env.instance_number} of {env.total_images}"),
    ]))
    datasets = factory.build_series(slices(3), header)
    assert [ds.ImageComments for ds in datasets] == ["1 of 3", "2 of 3", "3 of 3"]


def test_functional_element_sees_the_shared_header_and_kwargs() -> None:
    ds = build(Blueprint([
        StaticElement("Modality", "CS", "OT"),
        FunctionalElement("ImageComments", "LT", lambda env: f"{env.header_dataset.Modality} {env.kwargs['x']}"),
    ]), x="y")
    assert ds.ImageComments == "OT y"


def test_functional_element_returning_none_gives_no_element() -> None:
    assert "ImageComments" not in build(Blueprint([FunctionalElement("ImageComments", "LT", lambda env: None)]))


def test_functional_value_is_checked_against_the_vr() -> None:
    with pytest.raises(BlueprintError, match=r"FunctionalElement\(Rows \(0028,0010\)\).*70000"):
        build(Blueprint([FunctionalElement("Rows", "US", lambda env: 70000)]))


def test_functional_element_needs_a_callable() -> None:
    with pytest.raises(BlueprintError, match="func must be callable"):
        FunctionalElement("ImageComments", "LT", "not a function")


# --------------------------------------------------------------------------- instance copy


def test_instance_copy_takes_the_value_of_the_parent_with_the_same_instance_number() -> None:
    parents = ct_series(4)
    parents.reverse()  # the order the parents arrive in does not matter
    factory = RawFactory()
    header = factory.build_series_header(parents, Blueprint([
        CopyElement("Modality"), InstanceCopyElement("ImagePositionPatient", "DS"),
    ]))
    datasets = factory.build_series(slices(4), header)
    assert [float(ds.ImagePositionPatient[2]) for ds in datasets] == [0.0, 2.5, 5.0, 7.5]


def test_instance_copy_with_a_parent_lacking_instance_number_says_so() -> None:
    parents = ct_series(2)
    del parents[1].InstanceNumber
    with pytest.raises(BlueprintError, match=r"matches instances by InstanceNumber.*has none"):
        RawFactory().build_series_header(parents, Blueprint([InstanceCopyElement("SliceLocation", "DS")]))


def test_instance_copy_with_two_parents_of_one_number_names_both() -> None:
    parents = ct_series(2)
    parents[1].InstanceNumber = 1
    with pytest.raises(BlueprintError, match=r"two parents have InstanceNumber 1 \(SOPInstanceUIDs .* and .*\)"):
        RawFactory().build_series_header(parents, Blueprint([InstanceCopyElement("SliceLocation", "DS")]))


def test_instance_copy_for_an_instance_no_parent_has_names_the_number() -> None:
    factory = RawFactory()
    header = factory.build_series_header(ct_series(2), Blueprint([
        CopyElement("Modality"), InstanceCopyElement("SliceLocation", "DS"),
    ]))
    with pytest.raises(BlueprintError, match=r"no parent instance has InstanceNumber 3 .*1\.\.2"):
        factory.build_series(slices(3), header)


def test_instance_copy_of_a_tag_a_parent_lacks_is_an_error_unless_optional() -> None:
    parents = ct_series(2)
    with pytest.raises(BlueprintError, match=r"InstanceCopyElement\(TriggerTime.*InstanceNumber 1 has no such"):
        RawFactory().build_series_header(parents, Blueprint([InstanceCopyElement("TriggerTime", "DS")]))
    header = RawFactory().build_series_header(parents, Blueprint([
        InstanceCopyElement("TriggerTime", "DS", optional=True),
    ]))
    assert "TriggerTime" not in header.instantiate(InstanceEnvironment(1))


# --------------------------------------------------------------------------- sequence


def test_sequence_element_builds_one_item_per_blueprint_from_the_parent() -> None:
    ds = build(Blueprint([
        SequenceElement("OtherPatientIDsSequence", [
            Blueprint([CopyElement("PatientID"), StaticElement("TypeOfPatientID", "CS", "TEXT")]),
            Blueprint([StaticElement("PatientID", "LO", "ALT-1"), StaticElement("TypeOfPatientID", "CS", "TEXT")]),
        ]),
    ]), parent())
    items = ds.OtherPatientIDsSequence
    assert [item.PatientID for item in items] == ["PID-7", "ALT-1"]


def test_a_sequence_with_per_instance_items_is_made_per_instance() -> None:
    factory = RawFactory()
    header = factory.build_series_header(ct_series(2), Blueprint([
        CopyElement("Modality"),
        SequenceElement("SourceImageSequence", [Blueprint([
            CopyElement("SOPClassUID"),
            FunctionalElement("ReferencedFrameNumber", "IS", lambda env: env.instance_number),
        ])]),
    ]))
    datasets = factory.build_series(slices(2), header)
    assert [ds.SourceImageSequence[0].ReferencedFrameNumber for ds in datasets] == [1, 2]


def test_sequence_items_must_be_blueprints() -> None:
    with pytest.raises(BlueprintError, match="every item must be a Blueprint"):
        SequenceElement("SourceImageSequence", [StaticElement("Modality", "CS", "OT")])  # type: ignore[list-item]


def test_sequence_element_needs_a_sequence_tag() -> None:
    with pytest.raises(BlueprintError, match=r"VR 'SQ' is wrong"):
        SequenceElement("PatientID", [])


# --------------------------------------------------------------------------- own kinds


class Counter(InstancedVirtualElement):
    """A third-party kind: the instance number counted down."""

    def __init__(self) -> None:
        self.tag = Tag("ImageComments")

    def produce(self, env: InstanceEnvironment):  # type: ignore[no-untyped-def]
        from pydicom.dataelem import DataElement

        return DataElement(self.tag, "LT", f"{env.total_images - env.instance_number} left")


def test_an_own_instanced_element_is_evaluated_for_every_instance() -> None:
    factory = RawFactory()
    header = factory.build_series_header(ct_series(2), Blueprint([CopyElement("Modality"), Counter()]))
    assert [ds.ImageComments for ds in factory.build_series(slices(2), header)] == ["1 left", "0 left"]


def test_every_element_kind_is_a_virtual_element() -> None:
    for kind in (StaticElement, CopyElement, AttrElement, DiscardElement, SeriesElement, SequenceElement,
                 FunctionalElement, InstanceCopyElement):
        assert issubclass(kind, VirtualElement)
