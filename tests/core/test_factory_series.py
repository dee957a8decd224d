"""SeriesHeader and DicomFactory: the shared part built once, instances made from it; UIDs."""

from __future__ import annotations

from pathlib import Path

import pytest
from parent_series import RawFactory, ct_series, slices, write
from pydicom import Dataset, dcmread

from dicomnode import (
    Blueprint,
    CopyElement,
    DicomFactory,
    FunctionalElement,
    InstanceEnvironment,
    SequenceElement,
    SeriesHeader,
    StaticElement,
)
from dicomnode.dicom.blueprints import DEFAULT_BLUEPRINT
from dicomnode.dicom.factory import ParentTagPolicy
from dicomnode.dicom.uids import UidGenerator
from dicomnode.errors import BlueprintError, ConfigurationError

SMALL = Blueprint([
    CopyElement("Modality"),
    CopyElement("PatientName"),
    StaticElement("ImageType", "CS", ["DERIVED", "SECONDARY"]),
    SequenceElement("OtherPatientIDsSequence", [Blueprint([CopyElement("PatientID")])]),
    FunctionalElement("InstanceNumber", "IS", lambda env: env.instance_number),
])


def test_the_header_holds_the_shared_values_and_the_per_instance_elements() -> None:
    parents = ct_series(3)
    header = RawFactory().build_series_header(parents, SMALL)
    assert isinstance(header, SeriesHeader)
    assert header.dataset.Modality == "CT"
    assert "InstanceNumber" not in header.dataset
    assert [element.tag for element in header.instance_elements] == [0x00200013]
    assert list(header.parent_series) == parents


def test_each_instance_is_a_new_dataset_with_shared_and_own_values() -> None:
    header = RawFactory().build_series_header(ct_series(2), SMALL)
    first = header.instantiate(InstanceEnvironment(1, header_dataset=header.dataset))
    second = header.instantiate(InstanceEnvironment(2, header_dataset=header.dataset))
    assert first is not second
    assert (first.InstanceNumber, second.InstanceNumber) == (1, 2)
    assert first.PatientName == second.PatientName == "Hansen^Jørgen"


def test_changing_one_instance_changes_neither_the_others_nor_the_header() -> None:
    header = RawFactory().build_series_header(ct_series(2), SMALL)
    first = header.instantiate(InstanceEnvironment(1))
    second = header.instantiate(InstanceEnvironment(2))
    first.PatientName = "Changed^Name"
    first.ImageType[1] = "PRIMARY"
    first.OtherPatientIDsSequence[0].PatientID = "CHANGED"
    for untouched in (second, header.dataset):
        assert untouched.PatientName == "Hansen^Jørgen"
        assert list(untouched.ImageType) == ["DERIVED", "SECONDARY"]
        assert untouched.OtherPatientIDsSequence[0].PatientID == "PID-0042"


def test_instances_share_immutable_values_instead_of_copying_them() -> None:
    header = RawFactory().build_series_header(ct_series(2), Blueprint([
        StaticElement("ImageComments", "LT", "x" * 10_000),
    ]))
    first = header.instantiate(InstanceEnvironment(1))
    second = header.instantiate(InstanceEnvironment(2))
    assert first["ImageComments"] is not second["ImageComments"]
    assert first.ImageComments is second.ImageComments is header.dataset.ImageComments


def test_build_instance_makes_instance_one_of_one() -> None:
    ds = RawFactory().build_instance(ct_series(1)[0], Blueprint([
        CopyElement("Modality"),
        FunctionalElement("ImageComments", "LT", lambda env: f"{env.instance_number}/{env.total_images}"),
    ]))
    assert ds.ImageComments == "1/1"


def test_build_series_makes_one_dataset_per_slice() -> None:
    factory = RawFactory()
    datasets = factory.build_series(slices(5), factory.build_series_header(ct_series(5), SMALL))
    assert [ds.InstanceNumber for ds in datasets] == [1, 2, 3, 4, 5]
    assert all(len(ds.PixelData) == 8 * 8 * 2 for ds in datasets)


def test_dicom_factory_is_abstract() -> None:
    with pytest.raises(TypeError, match="build_series"):
        DicomFactory()  # type: ignore[abstract]


# --------------------------------------------------------------------------- parent tags the blueprint does not mention


def test_by_default_tags_the_blueprint_does_not_mention_are_left_out() -> None:
    ds = RawFactory().build_instance(ct_series(1)[0], Blueprint([CopyElement("Modality")]))
    assert ds.dir() == ["Modality"]


def test_the_copy_policy_carries_over_the_values_all_parents_share() -> None:
    factory = RawFactory(unmentioned_parent_tags="copy")
    assert factory.unmentioned_parent_tags is ParentTagPolicy.COPY
    header = factory.build_series_header(ct_series(3), Blueprint([StaticElement("Modality", "CS", "OT")]))
    shared = header.dataset
    assert shared.PatientID == "PID-0042"
    assert shared.KVP == 120
    assert shared.Modality == "OT"  # the blueprint still decides what it mentions
    for per_slice in ("ImagePositionPatient", "SliceLocation", "SOPInstanceUID", "InstanceNumber"):
        assert per_slice not in shared


def test_the_copy_policy_works_on_parents_read_from_files(tmp_path: Path) -> None:
    parents = ct_series(3)
    for parent in parents:
        parent.ProcedureCodeSequence = [Dataset()]
        parent.ProcedureCodeSequence[0].CodeValue = "CTABD"
    parents[2].StationName = "CT02"  # one slice differs: not a shared value
    for number, parent in enumerate(parents):
        parent.StationName = parent.get("StationName", "CT01")
        write(parent, tmp_path / f"{number}.dcm")
    read = [dcmread(tmp_path / f"{number}.dcm") for number in range(3)]
    shared = RawFactory(unmentioned_parent_tags="copy").build_series_header(read, Blueprint()).dataset
    assert shared.ProcedureCodeSequence[0].CodeValue == "CTABD"
    assert shared.PatientName == "Hansen^Jørgen"
    assert "StationName" not in shared
    assert "SliceLocation" not in shared


def test_the_copy_policy_never_copies_pixel_data_or_the_pixel_description() -> None:
    factory = RawFactory(unmentioned_parent_tags=ParentTagPolicy.COPY)
    shared = factory.build_series_header(ct_series(2), Blueprint()).dataset
    for tag in ("PixelData", "Rows", "BitsStored", "RescaleIntercept", "PixelSpacing"):
        assert tag not in shared


def test_an_unknown_policy_lists_the_allowed_ones() -> None:
    with pytest.raises(BlueprintError, match=r"one of 'discard', 'copy', got 'keep'"):
        RawFactory(unmentioned_parent_tags="keep")


# --------------------------------------------------------------------------- UIDs


def series_uids(factory: DicomFactory, parents: list[Dataset], **kwargs: object) -> tuple[str, list[str]]:
    header = factory.build_series_header(parents, DEFAULT_BLUEPRINT, kwargs)
    datasets = factory.build_series(slices(len(parents)), header)  # type: ignore[attr-defined]
    return header.dataset.SeriesInstanceUID, [ds.SOPInstanceUID for ds in datasets]


def test_with_a_pipeline_name_the_same_sources_give_the_same_uids() -> None:
    parents = ct_series(3)
    first = series_uids(RawFactory(pipeline_name="liver"), parents)
    again = series_uids(RawFactory(pipeline_name="liver"), list(reversed(parents)))
    assert first == again
    assert len(set(first[1])) == 3


def test_another_pipeline_name_gives_other_uids() -> None:
    parents = ct_series(2)
    liver = series_uids(RawFactory(pipeline_name="liver"), parents)
    spleen = series_uids(RawFactory(pipeline_name="spleen"), parents)
    assert liver[0] != spleen[0]
    assert not set(liver[1]) & set(spleen[1])


def test_other_sources_give_other_uids() -> None:
    factory = RawFactory(pipeline_name="liver")
    assert series_uids(factory, ct_series(2))[0] != series_uids(factory, ct_series(2))[0]


def test_a_series_key_tells_apart_two_series_from_the_same_sources() -> None:
    factory, parents = RawFactory(pipeline_name="liver"), ct_series(2)
    assert series_uids(factory, parents, series_key="mask")[0] != series_uids(factory, parents, series_key="pet")[0]


def test_without_a_pipeline_name_uids_are_random() -> None:
    parents = ct_series(2)
    assert series_uids(RawFactory(), parents)[0] != series_uids(RawFactory(), parents)[0]


def test_uids_use_the_configured_prefix() -> None:
    uid, instances = series_uids(RawFactory(pipeline_name="liver", uid_prefix="1.2.3.4."), ct_series(2))
    assert uid.startswith("1.2.3.4.")
    assert all(instance.startswith("1.2.3.4.") and len(instance) <= 64 for instance in instances)


@pytest.mark.parametrize("prefix", ["1.2.3", "1.02.3.", "a.b.", "1." * 30])
def test_a_bad_uid_prefix_says_what_a_prefix_looks_like(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="uid_prefix must be dot-separated numbers"):
        UidGenerator(pipeline_name="x", prefix=prefix)


def test_an_empty_pipeline_name_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="pipeline_name must be a non-empty string"):
        RawFactory(pipeline_name=" ")


def test_lazy_parents_read_from_files_work_like_datasets(tmp_path: Path) -> None:
    from dicomnode.dicom.lazy import LazyDataset

    parents = [LazyDataset(write(ds, tmp_path / f"{n}.dcm")) for n, ds in enumerate(ct_series(3))]
    factory = RawFactory(pipeline_name="liver", unmentioned_parent_tags="copy")
    header = factory.build_series_header(parents, DEFAULT_BLUEPRINT)
    datasets = factory.build_series(slices(3), header)
    assert datasets[0].PatientName == "Hansen^Jørgen"
    assert header.dataset.KVP == 120
    assert datasets[2].SourceImageSequence[0].ReferencedSOPInstanceUID == parents[2].SOPInstanceUID
