"""encode_pdf: a PDF report as an Encapsulated PDF instance in the parent's study."""

from __future__ import annotations

from pathlib import Path

import pytest
from parent_series import ct_series, write
from pydicom import dcmread

from dicomnode import Blueprint, StaticElement
from dicomnode.dicom.pdf import (
    ENCAPSULATED_PDF_BLUEPRINT,
    ENCAPSULATED_PDF_STORAGE,
    PdfFactory,
    encode_pdf,
)
from dicomnode.errors import BlueprintError

PDF = b"%PDF-1.4\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"


def test_the_report_is_an_encapsulated_pdf_in_the_parents_study() -> None:
    parent = ct_series(1)[0]
    ds = encode_pdf(PDF, parent)
    assert ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE
    assert ds.Modality == "DOC"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert (ds.PatientID, ds.StudyInstanceUID) == (parent.PatientID, parent.StudyInstanceUID)
    assert ds.SeriesInstanceUID != parent.SeriesInstanceUID


def test_the_report_references_its_parent() -> None:
    parent = ct_series(1)[0]
    (reference,) = encode_pdf(PDF, parent).SourceInstanceSequence
    assert reference.ReferencedSOPInstanceUID == parent.SOPInstanceUID


@pytest.mark.parametrize("document", [PDF, PDF + b" "], ids=["even-length", "odd-length"])
def test_the_document_reads_back_byte_for_byte(document: bytes, tmp_path: Path) -> None:
    path = write(encode_pdf(document, ct_series(1)[0]), tmp_path / "report.dcm")
    read = dcmread(path)
    assert len(read.EncapsulatedDocument) % 2 == 0
    assert read.EncapsulatedDocument[: read.EncapsulatedDocumentLength] == document


def test_a_blueprint_adds_to_and_overrides_the_pdf_blueprint() -> None:
    ds = encode_pdf(PDF, ct_series(1)[0], Blueprint([
        StaticElement("DocumentTitle", "ST", "Liver volume"),
        StaticElement("SeriesDescription", "LO", "Reports"),
    ]))
    assert (ds.DocumentTitle, ds.SeriesDescription) == ("Liver volume", "Reports")
    assert ds.Modality == "DOC"


def test_the_title_can_come_from_kwargs() -> None:
    assert encode_pdf(PDF, ct_series(1)[0], kwargs={"document_title": "Dosimetry"}).DocumentTitle == "Dosimetry"


def test_a_factory_with_a_pipeline_name_gives_the_same_uids_again() -> None:
    parent = ct_series(1)[0]
    first = encode_pdf(PDF, parent, factory=PdfFactory(pipeline_name="report"))
    again = encode_pdf(PDF, parent, factory=PdfFactory(pipeline_name="report"))
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (again.SeriesInstanceUID, again.SOPInstanceUID)


def test_bytes_that_are_not_a_pdf_are_refused() -> None:
    with pytest.raises(BlueprintError, match=r"not a PDF: it starts with b'GIF89a..', a PDF starts with b'%PDF-'"):
        encode_pdf(b"GIF89a....", ct_series(1)[0])


def test_without_a_parent_the_blueprint_must_give_the_study() -> None:
    with pytest.raises(BlueprintError, match=r"StudyInstanceUID .*no parent"):
        encode_pdf(PDF, None)
    ds = encode_pdf(PDF, None, Blueprint([
        StaticElement("StudyInstanceUID", "UI", "1.2.826.0.1.3680043.8.498.1"),
        StaticElement("PatientID", "LO", "PID-1"),
    ]))
    assert ds.PatientID == "PID-1"


def test_the_pdf_factory_makes_one_instance_per_document() -> None:
    factory = PdfFactory()
    header = factory.build_series_header(ct_series(1), ENCAPSULATED_PDF_BLUEPRINT)
    datasets = factory.build_series([PDF, PDF + b"2 "], header)
    assert [ds.InstanceNumber for ds in datasets] == [1, 2]
    assert datasets[0].SeriesInstanceUID == datasets[1].SeriesInstanceUID
    assert datasets[1].EncapsulatedDocumentLength == len(PDF) + 2
