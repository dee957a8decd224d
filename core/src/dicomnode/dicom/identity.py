"""IdentityMapping: consistent, recordable and reversible replacement of identities.

Anonymizing a study means giving every UID and patient identifier a new
value, the same new value wherever the old one occurs, so that references
between objects stay valid; and keeping a record to go back. The mapping is
applied to datasets by :meth:`IdentityMapping.apply`, to whole image trees by
:meth:`dicomnode.dicom.tree.ImageTreeInterface.map`, and together with the
removal of other identifying attributes by
:func:`dicomnode.dicom.anonymization.anonymize`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading

from pydicom import Dataset
from pydicom.multival import MultiValue

from dicomnode.dicom.uids import DEFAULT_UID_PREFIX, UidGenerator
from dicomnode.errors import ConfigurationError

__all__ = ["IDENTIFIER_KEYWORDS", "IdentityMapping"]

#: the patient identifiers :meth:`IdentityMapping.apply` replaces (besides UIDs)
IDENTIFIER_KEYWORDS = ("PatientID", "PatientName", "AccessionNumber")

# UIDs under the DICOM root name SOP classes, transfer syntaxes, coding
# schemes …: they identify no one and must keep their meaning
_STANDARD_UID_ROOT = "1.2.840.10008."
_MAPPING_FORMAT = "dicomnode-identity-mapping"
_IDENTIFIER_PREFIX = re.compile(r"^[A-Za-z0-9_-]{0,8}$")


class IdentityMapping:
    """Consistent, recordable and reversible replacement of UIDs and patient identifiers.

    The same old value always gets the same new value, across every dataset
    the mapping is applied to, so references between objects (a
    ReferencedSOPInstanceUID, a shared FrameOfReferenceUID) stay valid.

    ``uid_prefix``
        Root of new UIDs, ending with a dot.
    ``identifier_prefix``
        Start of new patient identifiers (up to 8 of ``A-Z a-z 0-9 _ -``):
        ``ANON0001``, ``ANON0002`` … in order of first appearance.
    ``seed``
        Makes new values deterministic: the same seed and old value always
        give the same new value, in any order and any process. Without a
        seed, new UIDs are random.

    The mapping is a record of who is who: :meth:`to_json` it somewhere safe,
    :meth:`from_json` it to continue, :meth:`reverse` it to restore the
    original identifiers.

        >>> mapping = IdentityMapping()
        >>> mapping.patient_id("123456"), mapping.patient_id("123456")
        ('ANON0001', 'ANON0001')
        >>> mapping.original("ANON0001")
        '123456'
    """

    def __init__(
        self,
        *,
        uid_prefix: str = DEFAULT_UID_PREFIX,
        identifier_prefix: str = "ANON",
        seed: str | None = None,
    ) -> None:
        if not isinstance(identifier_prefix, str) or not _IDENTIFIER_PREFIX.match(identifier_prefix):
            raise ConfigurationError(
                f"identifier_prefix must be at most 8 letters, digits, '_' or '-', got {identifier_prefix!r}"
            )
        if seed is not None and (not isinstance(seed, str) or not seed):
            raise ConfigurationError(f"seed must be a non-empty string or None, got {seed!r}")
        self._uids = UidGenerator(pipeline_name=seed, prefix=uid_prefix)
        self.uid_prefix = uid_prefix
        self.identifier_prefix = identifier_prefix
        self.seed = seed
        #: kind ("uid" or an identifier keyword) -> old -> new
        self._forward: dict[str, dict[str, str]] = {}
        self._backward: dict[str, dict[str, str]] = {}
        # a reversed mapping only restores what it knows; it never invents values
        self._closed = False
        self._lock = threading.RLock()

    # -- replacing values ------------------------------------------------------

    def uid(self, old: str) -> str:
        """The new UID for ``old`` (standard DICOM UIDs such as SOP classes stay as they are)."""
        if old.startswith(_STANDARD_UID_ROOT):
            return old
        return self.replace("uid", old)

    def patient_id(self, old: str) -> str:
        """The new PatientID for ``old``."""
        return self.replace("PatientID", old)

    def replace(self, kind: str, old: str, *, suggestion: str | None = None) -> str:
        """The new value of ``old`` for ``kind`` (``"uid"`` or an identifier keyword).

        An empty value stays empty. ``suggestion`` is used as the new value
        when ``old`` is new and nothing else maps to ``suggestion`` yet.
        """
        if old == "":
            return old
        with self._lock:
            forward = self._forward.setdefault(kind, {})
            known = forward.get(old)
            if known is not None:
                return known
            if self._closed:
                return old
            backward = self._backward.setdefault(kind, {})
            new = suggestion if suggestion and suggestion not in backward else None
            attempt = 0
            while new is None or new in backward:
                new = self._new_value(kind, old, len(forward) + 1 + attempt, attempt)
                attempt += 1
            forward[old] = new
            backward[new] = old
            return new

    def _new_value(self, kind: str, old: str, number: int, attempt: int) -> str:
        parts = [old] if attempt == 0 else [old, str(attempt)]
        if kind == "uid":
            return str(self._uids.derived_uid("identity-mapping", parts))
        if self.seed is None:
            return f"{self.identifier_prefix}{number:04d}"
        text = "\x1f".join([self.seed, kind, *parts])
        return self.identifier_prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8].upper()

    def original(self, new: str, kind: str | None = None) -> str:
        """The value that ``new`` replaced; ``KeyError`` if this mapping did not make ``new``."""
        with self._lock:
            kinds = [kind] if kind is not None else list(self._backward)
            for name in kinds:
                table = self._backward.get(name, {})
                if new in table:
                    return table[new]
        raise KeyError(f"{new!r} is not a value this mapping made" + (f" for {kind}" if kind else ""))

    def reverse(self) -> IdentityMapping:
        """A mapping that turns new values back into the originals (and leaves others alone)."""
        reversed_mapping = IdentityMapping(
            uid_prefix=self.uid_prefix, identifier_prefix=self.identifier_prefix, seed=self.seed
        )
        with self._lock:
            reversed_mapping._forward = {kind: dict(table) for kind, table in self._backward.items()}
            reversed_mapping._backward = {kind: dict(table) for kind, table in self._forward.items()}
        reversed_mapping._closed = not self._closed
        return reversed_mapping

    def table(self, kind: str) -> dict[str, str]:
        """A copy of the old -> new table of ``kind`` (``"uid"``, ``"PatientID"`` …)."""
        with self._lock:
            return dict(self._forward.get(kind, {}))

    def __len__(self) -> int:
        return sum(len(table) for table in self._forward.values())

    # -- datasets ---------------------------------------------------------------

    def apply(self, dataset: Dataset) -> Dataset:
        """Replace every UID and patient identifier in ``dataset`` (and its sequences), in place.

        UIDs: every element of VR UI except standard DICOM UIDs, plus the file
        meta's MediaStorageSOPInstanceUID. Identifiers: PatientID,
        PatientName (which becomes the new PatientID when it is first seen)
        and AccessionNumber. Returns ``dataset``.
        """
        self._apply(dataset)
        meta = getattr(dataset, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.uid(str(meta.MediaStorageSOPInstanceUID))
        return dataset

    def _apply(self, dataset: Dataset) -> None:
        new_patient_id: str | None = None
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value:
                    self._apply(item)
            elif element.VR == "UI" and element.value is not None:
                if isinstance(element.value, MultiValue | list):
                    element.value = [self.uid(str(v)) for v in element.value]
                else:
                    element.value = self.uid(str(element.value))
            elif element.keyword == "PatientID" and element.value is not None:
                new_patient_id = self.patient_id(str(element.value))
                element.value = new_patient_id
            elif element.keyword in ("PatientName", "AccessionNumber") and element.value is not None:
                suggestion = new_patient_id if element.keyword == "PatientName" else None
                if suggestion is None and element.keyword == "PatientName" and "PatientID" in dataset:
                    # PatientName (0010,0010) comes before PatientID (0010,0020)
                    suggestion = self.replace("PatientID", str(dataset.PatientID or ""))
                element.value = self.replace(element.keyword, str(element.value), suggestion=suggestion)

    # -- recording ----------------------------------------------------------------

    def to_json(self) -> str:
        """The whole mapping as JSON text (it re-identifies patients: keep it safe)."""
        with self._lock:
            document = {
                "format": _MAPPING_FORMAT,
                "version": 1,
                "uid_prefix": self.uid_prefix,
                "identifier_prefix": self.identifier_prefix,
                "seed": self.seed,
                "reversed": self._closed,
                "tables": {kind: dict(table) for kind, table in self._forward.items() if table},
            }
        return json.dumps(document, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> IdentityMapping:
        """The mapping :meth:`to_json` wrote; new values continue where it stopped."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"an identity mapping must be JSON text: {error}") from error
        if not isinstance(document, dict) or document.get("format") != _MAPPING_FORMAT:
            raise ConfigurationError(
                f"this JSON is not an identity mapping: expected \"format\": \"{_MAPPING_FORMAT}\""
            )
        if document.get("version") != 1:
            raise ConfigurationError(
                f"identity mapping version {document.get('version')!r} is not supported (only 1)"
            )
        tables = document.get("tables", {})
        if not isinstance(tables, dict) or not all(
            isinstance(table, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in table.items())
            for table in tables.values()
        ):
            raise ConfigurationError("an identity mapping's \"tables\" must map kinds to {old: new} strings")
        mapping = cls(
            uid_prefix=document.get("uid_prefix", DEFAULT_UID_PREFIX),
            identifier_prefix=document.get("identifier_prefix", "ANON"),
            seed=document.get("seed"),
        )
        mapping._forward = {kind: dict(table) for kind, table in tables.items()}
        mapping._backward = {kind: {v: k for k, v in table.items()} for kind, table in tables.items()}
        mapping._closed = bool(document.get("reversed", False))
        return mapping

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}: {len(table)}" for kind, table in sorted(self._forward.items()))
        return f"<IdentityMapping {counts or 'empty'}>"
