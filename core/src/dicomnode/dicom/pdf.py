"""Encapsulated PDF: a report as a DICOM object, filed with the patient's study.

A pipeline's result is often a report rather than an image. :func:`encode_pdf`
wraps the bytes of a PDF in an Encapsulated PDF instance (SOP class
1.2.840.10008.5.1.4.1.1.104.1) that belongs to the parent's patient and study,
in a new series of modality ``DOC``, referencing the parent::

    report = encode_pdf(pdf_bytes, parent, Blueprint([
        StaticElement("DocumentTitle", "ST", "Liver volume report"),
    ]))

``ENCAPSULATED_PDF_BLUEPRINT`` holds SOP common, patient, general study,
the Encapsulated Document series (DOC), general and SC equipment (conversion
type ``WSD``: made by a workstation) and the Encapsulated Document module, whose
DocumentTitle comes from ``kwargs["document_title"]`` when given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from dicomnode.dicom.blueprints import (
    GENERAL_EQUIPMENT_BLUEPRINT,
    GENERAL_STUDY_BLUEPRINT,
    PATIENT_BLUEPRINT,
    SOP_COMMON_BLUEPRINT,
    new_series_number,
    new_series_uid,
    now,
    today,
)
from dicomnode.dicom.factory import (
    Blueprint,
    DicomFactory,
    FunctionalElement,
    InstanceEnvironment,
    SeriesContext,
    SeriesElement,
    SeriesHeader,
    StaticElement,
)
from dicomnode.errors import BlueprintError

__all__ = ["ENCAPSULATED_PDF_BLUEPRINT", "ENCAPSULATED_PDF_STORAGE", "PdfFactory", "encode_pdf"]

#: the SOP class of Encapsulated PDF
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"


def _document(env: InstanceEnvironment) -> bytes:
    document = bytes(env.image)
    # OB values have even length; the reader finds the true end from
    # EncapsulatedDocumentLength
    return document + b"\x00" if len(document) % 2 else document


def _document_length(env: InstanceEnvironment) -> int:
    return len(env.image)


def _document_title(context: SeriesContext) -> str:
    return str(context.kwargs.get("document_title", ""))


def _source_instances(context: SeriesContext) -> DicomSequence | None:
    items = []
    for parent in context.parent_series:
        item = Dataset()
        item.ReferencedSOPClassUID = parent.SOPClassUID
        item.ReferencedSOPInstanceUID = parent.SOPInstanceUID
        items.append(item)
    return DicomSequence(items) if items else None


ENCAPSULATED_PDF_BLUEPRINT = (
    SOP_COMMON_BLUEPRINT
    + PATIENT_BLUEPRINT
    + GENERAL_STUDY_BLUEPRINT
    + GENERAL_EQUIPMENT_BLUEPRINT
    + Blueprint([
        StaticElement("SOPClassUID", "UI", ENCAPSULATED_PDF_STORAGE),
        # Encapsulated Document Series
        StaticElement("Modality", "CS", "DOC"),
        SeriesElement("SeriesInstanceUID", "UI", new_series_uid),
        SeriesElement("SeriesNumber", "IS", new_series_number),
        SeriesElement("SeriesDescription", "LO", lambda c: c.kwargs.get("series_description")),
        # SC Equipment
        StaticElement("ConversionType", "CS", "WSD"),
        # Encapsulated Document
        FunctionalElement("InstanceNumber", "IS", lambda env: env.instance_number),
        SeriesElement("ContentDate", "DA", today),
        SeriesElement("ContentTime", "TM", now),
        StaticElement("AcquisitionDateTime", "DT", None),
        StaticElement("BurnedInAnnotation", "CS", "YES"),
        SeriesElement("DocumentTitle", "ST", _document_title),
        StaticElement("ConceptNameCodeSequence", "SQ", []),
        SeriesElement("SourceInstanceSequence", "SQ", _source_instances),
        StaticElement("MIMETypeOfEncapsulatedDocument", "LO", "application/pdf"),
        FunctionalElement("EncapsulatedDocument", "OB", _document),
        FunctionalElement("EncapsulatedDocumentLength", "UL", _document_length),
    ])
)


def _check_pdf(document: object, number: int) -> bytes:
    if not isinstance(document, (bytes, bytearray, memoryview)):
        raise BlueprintError(f"document {number} must be the bytes of a PDF, got {type(document).__name__}")
    data = bytes(document)
    if not data.startswith(b"%PDF-"):
        raise BlueprintError(
            f"document {number} is not a PDF: it starts with {data[:8]!r}, a PDF starts with b'%PDF-'"
        )
    return data


class PdfFactory(DicomFactory):
    """A factory whose "image" is a list of PDF documents: one Encapsulated PDF instance each."""

    def build_series(
        self,
        image: Any,
        header: SeriesHeader,
        parent_series: Sequence[Dataset] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        """One Encapsulated PDF dataset per document in ``image``, numbered from 1."""
        documents = [_check_pdf(document, n) for n, document in enumerate(image, start=1)]
        return [
            header.instantiate(InstanceEnvironment(
                number,
                kwargs=kwargs or {},
                header_dataset=header.dataset,
                image=document,
                factory=self,
                total_images=len(documents),
            ))
            for number, document in enumerate(documents, start=1)
        ]


def encode_pdf(
    pdf_bytes: bytes,
    parent: Dataset | None,
    blueprint: Blueprint | None = None,
    *,
    factory: DicomFactory | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> Dataset:
    """An Encapsulated PDF dataset holding ``pdf_bytes``, in the patient and study of ``parent``.

    ``blueprint`` is added on top of :data:`ENCAPSULATED_PDF_BLUEPRINT` (it
    wins on the tags both have). ``factory`` gives the UID policy and the
    equipment attributes (a pipeline passes its own, so that re-runs give the
    same UIDs); by default a :class:`PdfFactory` with random UIDs.
    """
    document = _check_pdf(pdf_bytes, 1)
    combined = ENCAPSULATED_PDF_BLUEPRINT if blueprint is None else ENCAPSULATED_PDF_BLUEPRINT + blueprint
    factory = factory if factory is not None else PdfFactory()
    header = factory.build_series_header([] if parent is None else [parent], combined, kwargs)
    env = InstanceEnvironment(
        1, kwargs=kwargs or {}, header_dataset=header.dataset, image=document, factory=factory,
        total_images=1,
    )
    return header.instantiate(env)
