"""Default blueprints: the DICOM modules every derived series needs, ready to combine.

Each blueprint covers one module of the standard (or the part of it a derived
series takes from its parent). Combine them with ``+`` — the right side wins on
a tag both have — and add your own elements last::

    blueprint = DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT + Blueprint([
        StaticElement("SeriesDescription", "LO", "Liver segmentation"),
    ])

What each holds:

``SOP_COMMON_BLUEPRINT``
    SpecificCharacterSet ``ISO_IR 192`` (UTF-8, so any name can be written),
    SOPClassUID copied from the parent, a new SOPInstanceUID per instance,
    InstanceCreationDate/Time.
``PATIENT_BLUEPRINT``
    PatientName, PatientID, PatientBirthDate, PatientSex copied (empty when
    the parent has none: they are type 2); IssuerOfPatientID, PatientAge,
    PatientSize, PatientWeight copied when present.
``GENERAL_STUDY_BLUEPRINT``
    StudyInstanceUID (the parent must have it), StudyDate, StudyTime,
    ReferringPhysicianName, StudyID, AccessionNumber (empty when missing),
    StudyDescription when present.
``GENERAL_SERIES_BLUEPRINT``
    Modality copied; a new SeriesInstanceUID (:func:`new_series_uid`);
    SeriesNumber (:func:`new_series_number`); SeriesDescription from
    ``kwargs["series_description"]``; SeriesDate/Time now; PatientPosition and
    BodyPartExamined copied when present.
``FRAME_OF_REFERENCE_BLUEPRINT``
    FrameOfReferenceUID and PositionReferenceIndicator copied: a derived image
    lies in its parent's space.
``GENERAL_EQUIPMENT_BLUEPRINT``
    Manufacturer, SoftwareVersions, InstitutionName, StationName from the
    factory's attributes of the same names (this software made the series).
``GENERAL_IMAGE_BLUEPRINT``
    ImageType ``DERIVED\\SECONDARY`` followed by the parent's own values from
    the third on, InstanceNumber, ContentDate/Time.
``IMAGE_PIXEL_DERIVED_BLUEPRINT``
    SamplesPerPixel 1, PhotometricInterpretation MONOCHROME2, 16 bits
    allocated and stored, unsigned. Rows, Columns and PixelData come from the
    factory that writes the image; it may also change the bit depth.
``SOURCE_IMAGE_BLUEPRINT``
    SourceImageSequence: each instance references the parent instance with
    the same InstanceNumber (or the single parent of a single instance).
``DEFAULT_BLUEPRINT``
    All of the above, in that order.

Modality-specific additions, not in the default:

``IMAGE_PLANE_BLUEPRINT``
    PixelSpacing, ImageOrientationPatient, SliceThickness copied, and
    ImagePositionPatient and SliceLocation per instance from the parent
    instance with the same InstanceNumber — for results on the parent's grid
    (a factory that writes its own geometry replaces these).
``CT_IMAGE_BLUEPRINT``
    The CT Image module's acquisition attributes (KVP, AcquisitionNumber, …)
    copied from the parent, plus the image plane.
``MR_IMAGE_BLUEPRINT``
    The MR Image module's acquisition attributes (ScanningSequence,
    SequenceVariant, EchoTime, …) copied from the parent, plus the image plane.
"""

from __future__ import annotations

import datetime
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, generate_uid

from dicomnode.dicom.factory import (
    AttrElement,
    Blueprint,
    CopyElement,
    FunctionalElement,
    InstanceCopyElement,
    InstancedVirtualElement,
    InstanceEnvironment,
    SeriesContext,
    SeriesElement,
    StaticElement,
)

__all__ = [
    "CT_IMAGE_BLUEPRINT",
    "DEFAULT_BLUEPRINT",
    "FRAME_OF_REFERENCE_BLUEPRINT",
    "GENERAL_EQUIPMENT_BLUEPRINT",
    "GENERAL_IMAGE_BLUEPRINT",
    "GENERAL_SERIES_BLUEPRINT",
    "GENERAL_STUDY_BLUEPRINT",
    "IMAGE_PIXEL_DERIVED_BLUEPRINT",
    "IMAGE_PLANE_BLUEPRINT",
    "MR_IMAGE_BLUEPRINT",
    "PATIENT_BLUEPRINT",
    "SOP_COMMON_BLUEPRINT",
    "SOURCE_IMAGE_BLUEPRINT",
    "SourceImageElement",
    "derived_image_type",
    "new_instance_uid",
    "new_series_number",
    "new_series_uid",
    "now",
    "today",
]

#: added to the parent's SeriesNumber when ``kwargs`` gives no series_number
SERIES_NUMBER_OFFSET = 1000
_IS_MAX = 2**31 - 1


# --------------------------------------------------------------------------- producers


def new_series_uid(context: SeriesContext) -> UID:
    """A SeriesInstanceUID: derived from the parents' SOPInstanceUIDs when the factory has a pipeline name.

    ``kwargs["series_key"]`` tells apart several series made from the same parents.
    """
    sources = [str(p.SOPInstanceUID) for p in context.parent_series if "SOPInstanceUID" in p]
    key = str(context.kwargs.get("series_key", ""))
    return context.factory.uids.series_uid(sources, key=key)


def new_instance_uid(env: InstanceEnvironment) -> UID:
    """A SOPInstanceUID: derived from the SeriesInstanceUID and the instance number when deterministic."""
    if env.factory is None:
        return generate_uid()
    series_uid = env.header_dataset.get("SeriesInstanceUID")
    if series_uid and env.factory.uids.deterministic:
        return env.factory.uids.instance_uid(str(series_uid), env.instance_number)
    return env.factory.uids.random_uid()


def new_series_number(context: SeriesContext) -> int:
    """``kwargs["series_number"]``, else the parent's SeriesNumber plus 1000."""
    given = context.kwargs.get("series_number")
    if given is not None:
        return int(given)
    parent_number = context.parent.get("SeriesNumber") if context.parent is not None else None
    base = int(parent_number) if parent_number not in (None, "") else 0
    return (base + SERIES_NUMBER_OFFSET) % _IS_MAX


def derived_image_type(context: SeriesContext) -> list[str]:
    """``DERIVED\\SECONDARY`` followed by the parent's ImageType values from the third on."""
    parent_type: Any = context.parent.get("ImageType") if context.parent is not None else None
    if parent_type is None or parent_type == "":
        rest: list[str] = []
    elif isinstance(parent_type, str):
        rest = []
    else:
        rest = [str(value) for value in list(parent_type)[2:]]
    return ["DERIVED", "SECONDARY", *rest]


def today() -> str:
    """Today's date as DICOM DA (local time)."""
    return datetime.datetime.now().strftime("%Y%m%d")


def now() -> str:
    """The time now as DICOM TM (local time)."""
    return datetime.datetime.now().strftime("%H%M%S.%f")


def _series_description(context: SeriesContext) -> str | None:
    value = context.kwargs.get("series_description")
    return None if value is None else str(value)


# --------------------------------------------------------------------------- source references


class SourceImageElement(InstancedVirtualElement):
    """SourceImageSequence: the parent instance each instance was derived from.

    An instance references the parent with the same InstanceNumber; a series
    with one parent references it from every instance. Without a match (or
    when several parents share the number) the instance gets no
    SourceImageSequence.
    """

    def __init__(self) -> None:
        self.tag = BaseTag(0x00082112)  # SourceImageSequence
        self._by_number: dict[int, tuple[str, str]] = {}
        self._single: tuple[str, str] | None = None

    def evaluate(self, context: SeriesContext) -> SourceImageElement:
        """A copy bound to the references of the parent series."""
        bound = SourceImageElement()
        references = [(p.SOPClassUID, p.SOPInstanceUID) for p in context.parent_series]
        if len(references) == 1:
            bound._single = references[0]
        ambiguous: set[int] = set()
        for parent, reference in zip(context.parent_series, references):
            number = parent.get("InstanceNumber")
            if number in (None, ""):
                continue
            if int(number) in bound._by_number:
                ambiguous.add(int(number))
            bound._by_number[int(number)] = reference
        for number in ambiguous:  # several parents share the number: no way to tell the source
            del bound._by_number[number]
        return bound

    def produce(self, env: InstanceEnvironment) -> DataElement | None:
        """The sequence with the one matching reference."""
        reference = self._by_number.get(env.instance_number, self._single)
        if reference is None:
            return None
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = reference
        return DataElement(self.tag, "SQ", DicomSequence([item]))

    def __repr__(self) -> str:
        return "SourceImageElement()"


# --------------------------------------------------------------------------- module blueprints


def _type2(*keywords: str) -> list[CopyElement]:
    return [CopyElement(keyword, empty_if_missing=True) for keyword in keywords]


def _optional(*keywords: str) -> list[CopyElement]:
    return [CopyElement(keyword, optional=True) for keyword in keywords]


SOP_COMMON_BLUEPRINT = Blueprint([
    StaticElement("SpecificCharacterSet", "CS", "ISO_IR 192"),
    CopyElement("SOPClassUID"),
    FunctionalElement("SOPInstanceUID", "UI", new_instance_uid),
    SeriesElement("InstanceCreationDate", "DA", today),
    SeriesElement("InstanceCreationTime", "TM", now),
])

PATIENT_BLUEPRINT = Blueprint([
    *_type2("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    *_optional("IssuerOfPatientID", "PatientAge", "PatientSize", "PatientWeight"),
])

GENERAL_STUDY_BLUEPRINT = Blueprint([
    CopyElement("StudyInstanceUID"),
    *_type2("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"),
    *_optional("StudyDescription"),
])

GENERAL_SERIES_BLUEPRINT = Blueprint([
    CopyElement("Modality"),
    SeriesElement("SeriesInstanceUID", "UI", new_series_uid),
    SeriesElement("SeriesNumber", "IS", new_series_number),
    SeriesElement("SeriesDescription", "LO", _series_description),
    SeriesElement("SeriesDate", "DA", today),
    SeriesElement("SeriesTime", "TM", now),
    *_optional("PatientPosition", "BodyPartExamined", "Laterality"),
])

FRAME_OF_REFERENCE_BLUEPRINT = Blueprint([
    CopyElement("FrameOfReferenceUID"),
    *_type2("PositionReferenceIndicator"),
])

GENERAL_EQUIPMENT_BLUEPRINT = Blueprint([
    AttrElement("Manufacturer", "LO", "manufacturer"),
    AttrElement("SoftwareVersions", "LO", "software_versions"),
    AttrElement("InstitutionName", "LO", "institution_name"),
    AttrElement("StationName", "SH", "station_name"),
])

GENERAL_IMAGE_BLUEPRINT = Blueprint([
    SeriesElement("ImageType", "CS", derived_image_type),
    FunctionalElement("InstanceNumber", "IS", lambda env: env.instance_number),
    SeriesElement("ContentDate", "DA", today),
    SeriesElement("ContentTime", "TM", now),
])

IMAGE_PIXEL_DERIVED_BLUEPRINT = Blueprint([
    StaticElement("SamplesPerPixel", "US", 1),
    StaticElement("PhotometricInterpretation", "CS", "MONOCHROME2"),
    StaticElement("BitsAllocated", "US", 16),
    StaticElement("BitsStored", "US", 16),
    StaticElement("HighBit", "US", 15),
    StaticElement("PixelRepresentation", "US", 0),
])

SOURCE_IMAGE_BLUEPRINT = Blueprint([SourceImageElement()])

DEFAULT_BLUEPRINT = (
    SOP_COMMON_BLUEPRINT
    + PATIENT_BLUEPRINT
    + GENERAL_STUDY_BLUEPRINT
    + GENERAL_SERIES_BLUEPRINT
    + FRAME_OF_REFERENCE_BLUEPRINT
    + GENERAL_EQUIPMENT_BLUEPRINT
    + GENERAL_IMAGE_BLUEPRINT
    + IMAGE_PIXEL_DERIVED_BLUEPRINT
    + SOURCE_IMAGE_BLUEPRINT
)

IMAGE_PLANE_BLUEPRINT = Blueprint([
    CopyElement("PixelSpacing"),
    CopyElement("ImageOrientationPatient"),
    InstanceCopyElement("ImagePositionPatient", "DS"),
    *_type2("SliceThickness"),
    InstanceCopyElement("SliceLocation", "DS", optional=True),
])

CT_IMAGE_BLUEPRINT = IMAGE_PLANE_BLUEPRINT + Blueprint([
    *_type2("KVP", "AcquisitionNumber"),
    *_optional(
        "ScanOptions", "DataCollectionDiameter", "ReconstructionDiameter", "GantryDetectorTilt",
        "TableHeight", "RotationDirection", "ExposureTime", "XRayTubeCurrent", "Exposure",
        "FilterType", "ConvolutionKernel", "PatientPosition",
    ),
])

MR_IMAGE_BLUEPRINT = IMAGE_PLANE_BLUEPRINT + Blueprint([
    CopyElement("ScanningSequence"),
    CopyElement("SequenceVariant"),
    *_type2("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength"),
    *_optional(
        "RepetitionTime", "InversionTime", "TriggerTime", "SequenceName", "AngioFlag",
        "NumberOfAverages", "ImagingFrequency", "ImagedNucleus", "EchoNumbers",
        "MagneticFieldStrength", "SpacingBetweenSlices", "FlipAngle", "AcquisitionNumber",
    ),
])
