"""What every result factory shares: who made the object, its UIDs, its series, its check before sending.

A result that reaches a PACS must say what made it, so that a reader can tell
one model's output from another's years later, and it must keep its UIDs when
the job runs again, so that the PACS replaces it instead of holding two.
:class:`ResultFactory` holds both for :class:`~dicomnode_highdicom.SegFactory`,
:class:`~dicomnode_highdicom.MeasurementReportFactory` and
:class:`~dicomnode_highdicom.SecondaryCaptureFactory`:

- the algorithm's name and version, and the model's hash when given, go into
  every object (the segment's algorithm identification, the report's TID 4019
  algorithm identification, a ContributingEquipmentSequence item that names
  dicomnode and its version as the processing equipment);
- UIDs come from the core's deterministic scheme
  (:class:`dicomnode.dicom.uids.UidGenerator`): derived from the pipeline name
  (the algorithm name unless given), the kind of object, the algorithm name
  and the source images' SOPInstanceUIDs;
- ``validate`` checks every object with :func:`dicomnode.dicom.validation.validate`
  before it is returned, and raises
  :class:`~dicomnode.errors.DatasetValidationError` when it fails.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import UID

from dicomnode import __version__ as _core_version
from dicomnode.dicom.uids import DEFAULT_UID_PREFIX, UidGenerator
from dicomnode.dicom.validation import VALIDATOR_CHOICES, validate
from dicomnode.errors import ConfigurationError, DatasetValidationError, InvalidDatasetError

__all__ = ["ResultFactory", "hash_model_file"]

PLUGIN_VERSION = "0.1.0"
_MAX_IS = 2**31 - 1
# text that goes into LO elements: at most 64 characters, no backslash (the value separator), no control
_LONG_STRING = re.compile(r"^[^\\\x00-\x1f]{1,64}$")


def hash_model_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a model file as 64 hex digits, for ``model_hash=``; read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for piece in iter(lambda: file.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _check_text(_instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not _LONG_STRING.match(value) or not value.strip():
        raise ConfigurationError(
            f"{attribute.name} must be text of 1 to 64 characters without backslashes or control "
            f"characters (it is written to a DICOM LO element), got {value!r}"
        )


def _check_optional_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_text(instance, attribute, value)


def _check_validate(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value in (True, False) or value in VALIDATOR_CHOICES:
        return
    raise ConfigurationError(
        f"validate must be False, True (the same as 'auto') or one of "
        f"{', '.join(repr(v) for v in VALIDATOR_CHOICES)}, got {value!r}"
    )


def _check_series_number(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_IS):
        raise ConfigurationError(f"series_number must be an integer from 0 to {_MAX_IS} or None, got {value!r}")


def _check_family(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Code):
        raise ConfigurationError(
            f"algorithm_family must be a pydicom Code from CID 7162 (e.g. codes.cid7162.ArtificialIntelligence), "
            f"got {value!r}"
        )


@attrs.frozen(kw_only=True)
class ResultFactory:
    """Provenance, UIDs, series numbering and validation shared by the result factories.

    Parameters
    ----------
    algorithm_name, algorithm_version:
        what made the result; written to every object.
    model_hash:
        the model's hash (e.g. :func:`hash_model_file`), written beside the
        algorithm; DeviceSerialNumber of a segmentation.
    algorithm_family:
        a code of CID 7162; artificial intelligence by default.
    pipeline_name:
        the name UIDs are derived from; the algorithm name when None.
    uid_prefix:
        your organisation's UID root, ending with a dot.
    deterministic_uids:
        False gives random UIDs (every run a new object in the PACS).
    series_number, series_description:
        of the new series; the number defaults to the source series' number
        plus an offset of each kind of object.
    manufacturer, institution_name, institutional_department_name:
        the General Equipment of the new object.
    validate:
        False (default), or True / ``"auto"`` / ``"dciodvfy"`` /
        ``"structural"``: check each object before returning it.
    """

    algorithm_name: str = attrs.field(validator=_check_text)
    algorithm_version: str = attrs.field(validator=_check_text)
    model_hash: str | None = attrs.field(default=None, validator=_check_optional_text)
    algorithm_family: Code = attrs.field(default=codes.cid7162.ArtificialIntelligence, validator=_check_family)
    pipeline_name: str | None = None
    uid_prefix: str = DEFAULT_UID_PREFIX
    deterministic_uids: bool = True
    series_number: int | None = attrs.field(default=None, validator=_check_series_number)
    series_description: str | None = attrs.field(default=None, validator=_check_optional_text)
    manufacturer: str = attrs.field(default="dicomnode", validator=_check_text)
    institution_name: str | None = attrs.field(default=None, validator=_check_optional_text)
    institutional_department_name: str | None = attrs.field(default=None, validator=_check_optional_text)
    validate: bool | str = attrs.field(default=False, validator=_check_validate)
    uids: UidGenerator = attrs.field(init=False)

    #: the kind of object in UID derivation, and the offset of its default SeriesNumber
    kind = "result"
    series_offset = 1000

    def __attrs_post_init__(self) -> None:
        name = (self.pipeline_name or self.algorithm_name) if self.deterministic_uids else None
        object.__setattr__(self, "uids", UidGenerator(pipeline_name=name, prefix=self.uid_prefix))

    # -- UIDs and series ---------------------------------------------------------------------

    def series_uid(self, sources: Iterable[Dataset]) -> UID:
        """The SeriesInstanceUID of this factory's object made from ``sources``."""
        uids = [str(source.SOPInstanceUID) for source in sources if "SOPInstanceUID" in source]
        return self.uids.series_uid(uids, key=f"{self.kind}:{self.algorithm_name}")

    def instance_uid(self, series_uid: str, number: int = 1) -> UID:
        """The SOPInstanceUID of instance ``number`` of the series."""
        if not self.uids.deterministic:
            return self.uids.random_uid()
        return self.uids.instance_uid(series_uid, number)

    def tracking_uid(self, series_uid: str, segment_number: int) -> UID:
        """The UID that tracks one segment across the SEG and the report made from the same sources."""
        return self.uids.derived_uid("tracking", [str(series_uid), str(segment_number)])

    def new_series_number(self, source: Dataset) -> int:
        """``series_number``, else the source's SeriesNumber plus :attr:`series_offset`."""
        if self.series_number is not None:
            return self.series_number
        value = source.get("SeriesNumber")
        base = int(value) if value not in (None, "") else 0
        return (base + self.series_offset) % _MAX_IS

    # -- what made it ---------------------------------------------------------------------------

    @property
    def contribution_description(self) -> str:
        """One line naming the algorithm, its version and the model hash."""
        text = f"{self.algorithm_name} {self.algorithm_version}"
        return f"{text}, model sha256 {self.model_hash}" if self.model_hash else text

    def contributing_equipment(self) -> hd.ContributingEquipment:
        """The ContributingEquipmentSequence item that names dicomnode as the processing equipment."""
        return hd.ContributingEquipment(
            manufacturer="dicomnode",
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name="dicomnode-highdicom",
            software_versions=[f"dicomnode {_core_version}", f"dicomnode-highdicom {PLUGIN_VERSION}",
                               f"highdicom {hd.__version__}"],
            institution_name=self.institution_name,
            contribution_description=self.contribution_description,
        )

    def algorithm_parameters(self) -> dict[str, str] | None:
        """What the algorithm identification carries besides name and version: the model hash."""
        return {"model sha256": self.model_hash} if self.model_hash else None

    def equipment(self) -> dict[str, Any]:
        """Keyword arguments of highdicom's SOP classes for the General Equipment and series."""
        return {
            "manufacturer": self.manufacturer,
            "institution_name": self.institution_name,
            "institutional_department_name": self.institutional_department_name,
        }

    # -- the check before sending ------------------------------------------------------------

    def checked(self, dataset: Dataset) -> Dataset:
        """``dataset`` itself, after :func:`~dicomnode.dicom.validation.validate` passed when ``validate`` is on."""
        if self.validate is False:
            return dataset
        report = validate(dataset, validator="auto" if self.validate is True else str(self.validate))
        if not report.ok:
            raise DatasetValidationError(
                f"{type(self).__name__} made an object that fails its IOD check; it is not returned.\n"
                + report.describe(),
                report=report,
            )
        return dataset


# a library's message quotes the values it refused ('19xx', 'Doe^John'): those may be a patient's
_QUOTED = re.compile(r"'[^']*'")


def without_values(error: BaseException) -> str:
    """The message of ``error`` with every single-quoted value replaced, so that none reaches a log."""
    return _QUOTED.sub("'<value not shown>'", str(error))


def check_sources(sources: Sequence[Dataset], what: str) -> list[Dataset]:
    """The source datasets as a list: at least one, all of one series; an error that says why otherwise."""
    datasets = list(sources)
    if not datasets or not all(isinstance(ds, Dataset) for ds in datasets):
        raise InvalidDatasetError(
            f"{what} needs the source images it was made from (pydicom Datasets of one series); got "
            + (f"{len(datasets)} object(s) of type(s) {sorted({type(d).__name__ for d in datasets})}"
               if datasets else "none")
        )
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise InvalidDatasetError(
            f"{what} is made from the images of one series, but the {len(datasets)} source images belong to "
            f"{len(series)} series; pass the datasets of the series the mask was computed on"
        )
    return datasets

