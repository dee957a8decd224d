"""Removing the identity of patients from datasets, reversibly for the identifiers.

:func:`anonymize` follows the attribute lists of the DICOM basic
de-identification profile (PS3.15 annex E) for the modules every image has:
patient, general study, patient study, general series, general equipment,
general image and SOP common. It is not a complete implementation of that
profile; :func:`anonymize`'s docstring says exactly what it does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar, overload

from pydicom import Dataset

from dicomnode.dicom.identity import IDENTIFIER_KEYWORDS, IdentityMapping
from dicomnode.dicom.tree import ImageTreeInterface
from dicomnode.errors import ConfigurationError

__all__ = ["DEIDENTIFICATION_METHOD", "EMPTIED", "REMOVED", "anonymize", "checked_keep"]

#: set to an empty value (the modules require them to be present)
EMPTIED = (
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ContentDate",
    "ContentTime",
)

#: removed wherever they occur (nested sequences included)
REMOVED = (
    # patient and patient study
    "IssuerOfPatientID",
    "PatientBirthTime",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "EthnicGroup",
    "Occupation",
    "PatientReligiousPreference",
    "MilitaryRank",
    "BranchOfService",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientInsurancePlanCodeSequence",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "PatientComments",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "AdditionalPatientHistory",
    "MedicalAlerts",
    "Allergies",
    "PatientState",
    "AdmissionID",
    "AdmittingDiagnosesDescription",
    # general study
    "StudyDescription",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "ReferencedPatientSequence",
    "RequestedProcedureDescription",
    # general series
    "SeriesDate",
    "SeriesTime",
    "SeriesDescription",
    "ProtocolName",
    "OperatorsName",
    "PerformingPhysicianName",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "RequestAttributesSequence",
    "ScheduledProcedureStepDescription",
    # general equipment
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    # general image and SOP common
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ImageComments",
    "InstanceCreatorUID",
)

#: what DeidentificationMethod says on an anonymized dataset
DEIDENTIFICATION_METHOD = "dicomnode anonymize: basic profile subset, UIDs replaced"

_KEEPABLE = frozenset(EMPTIED) | frozenset(REMOVED)

T = TypeVar("T", bound=ImageTreeInterface)


@overload
def anonymize(  # type: ignore[overload-overlap]  # a tree is an iterable of datasets, returned as itself
    target: T, mapping: IdentityMapping | None = ..., *, keep: Iterable[str] = ...,
    keep_private: bool = ...,
) -> T: ...
@overload
def anonymize(target: Dataset, mapping: IdentityMapping | None = ..., *, keep: Iterable[str] = ...,
              keep_private: bool = ...) -> Dataset: ...
@overload
def anonymize(target: Iterable[Dataset], mapping: IdentityMapping | None = ..., *,
              keep: Iterable[str] = ..., keep_private: bool = ...) -> list[Dataset]: ...


def anonymize(
    target: ImageTreeInterface | Dataset | Iterable[Dataset],
    mapping: IdentityMapping | None = None,
    *,
    keep: Iterable[str] = (),
    keep_private: bool = False,
) -> ImageTreeInterface | Dataset | list[Dataset]:
    """Remove or replace the identifying attributes of every dataset, in place.

    ``target`` is an image tree (returned, re-sorted under the new
    identifiers), a single dataset (returned) or any iterable of datasets
    (returned as a list; a list given is the list returned).

    What it does, at every level of nesting:

    - **Replaced, consistently and reversibly** through ``mapping``: every UID
      (VR UI) except standard DICOM UIDs (SOP classes, transfer syntaxes …),
      the file meta's MediaStorageSOPInstanceUID, PatientID, PatientName and
      AccessionNumber. Pass the same mapping for every batch of one study so
      references stay valid; ``mapping.reverse()`` restores these values.
    - **Emptied** (they must stay present): :data:`EMPTIED` — birth date,
      sex, referring physician, study ID, study and content date and time.
    - **Removed**: :data:`REMOVED` — other patient identifiers and names,
      address, telephone, age, size, weight, history, study and series
      descriptions, protocol name, operators and physicians, institution,
      station, device serial number, acquisition and creation dates and
      times, image comments — and every private element unless
      ``keep_private``.
    - **Added**: PatientIdentityRemoved ``YES`` and DeidentificationMethod.

    ``keep`` names attributes of :data:`EMPTIED` or :data:`REMOVED` to leave
    alone (for example ``keep=["PatientWeight", "PatientSex"]`` for PET).

    Not covered: text burned into the pixels, overlays, identifying text in
    other attributes (free text, structured reports) and the other options of
    the DICOM profile. Check these before sharing data outside the clinic.
    Lazy datasets are loaded and keep the anonymized contents in memory.
    """
    kept = checked_keep(keep)
    mapping = IdentityMapping() if mapping is None else mapping
    if isinstance(target, ImageTreeInterface):
        for dataset in target:
            _anonymize_dataset(dataset, kept, keep_private)
        target.map(mapping)
        return target
    if isinstance(target, Dataset):
        _anonymize_dataset(target, kept, keep_private)
        mapping.apply(target)
        return target
    datasets = target if isinstance(target, list) else list(target)
    for dataset in datasets:
        _anonymize_dataset(dataset, kept, keep_private)
        mapping.apply(dataset)
    return datasets


def checked_keep(keep: Iterable[str]) -> frozenset[str]:
    """``keep`` as a set, after checking that each name is one :func:`anonymize` removes or empties."""
    if isinstance(keep, str):
        keep = [keep]
    kept = frozenset(keep)
    unknown = sorted(kept - _KEEPABLE)
    if unknown:
        hint = ""
        if set(unknown) & set(IDENTIFIER_KEYWORDS):
            hint = " (identifiers are replaced, not removed: reverse the mapping to restore them)"
        raise ConfigurationError(
            f"keep got {', '.join(unknown)}, which anonymize neither removes nor empties{hint}; "
            f"allowed are the keywords in EMPTIED and REMOVED of dicomnode.dicom.anonymization, "
            f"e.g. PatientWeight, PatientSex, SeriesDescription"
        )
    return kept


def _anonymize_dataset(dataset: Dataset, kept: frozenset[str], keep_private: bool) -> None:
    _strip(dataset, kept, keep_private)
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = DEIDENTIFICATION_METHOD


def _strip(dataset: Dataset, kept: frozenset[str], keep_private: bool) -> None:
    if not keep_private:
        dataset.remove_private_tags()
    for keyword in EMPTIED:
        if keyword in dataset and keyword not in kept:
            dataset[keyword].value = None
    for keyword in REMOVED:
        if keyword in dataset and keyword not in kept:
            del dataset[keyword]
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                _strip(item, kept, keep_private)
