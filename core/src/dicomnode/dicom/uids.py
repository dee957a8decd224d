"""UIDs for the objects a pipeline creates: random, or derived from the sources.

A node that re-runs a job (after a crash, or because an operator asked for it)
should replace its earlier result in the PACS, not add a second copy. That
needs the same UIDs on the second run, so a :class:`UidGenerator` with a
pipeline name derives each UID from a SHA-512 hash of the pipeline name, the
kind of UID and the UIDs of the source images: the same sources and the same
pipeline name always give the same UID, and nothing of the sources can be read
back from it. Without a pipeline name every UID is random.

    >>> uids = UidGenerator(pipeline_name="liver-segmentation")
    >>> uids.series_uid(["1.2.3.4"]) == uids.series_uid(["1.2.3.4"])
    True
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs
from pydicom.uid import PYDICOM_ROOT_UID, UID, generate_uid

from dicomnode.errors import ConfigurationError

__all__ = ["DEFAULT_UID_PREFIX", "UidGenerator"]

#: the prefix of UIDs when none is configured (pydicom's root; a site with its
#: own registered root should configure that instead)
DEFAULT_UID_PREFIX = PYDICOM_ROOT_UID

# the hash needs room: the prefix may take at most 54 of a UID's 64 characters
_MAX_PREFIX = 54
_PREFIX = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")
# parts are joined with a character no UID or name contains, so that the parts
# ("ab", "c") and ("a", "bc") hash differently
_SEPARATOR = "\x1f"


def _check_prefix(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or len(value) > _MAX_PREFIX or not _PREFIX.match(value):
        raise ConfigurationError(
            f"uid_prefix must be dot-separated numbers without leading zeros that end with a dot, "
            f"at most {_MAX_PREFIX} characters (e.g. '1.2.826.0.1.3680043.8.498.'), got {value!r}"
        )


def _check_name(_instance: object, _attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigurationError(
            f"pipeline_name must be a non-empty string (or None for random UIDs), got {value!r}"
        )


@attrs.frozen
class UidGenerator:
    """Makes the UIDs of created objects: deterministic when ``pipeline_name`` is set.

    ``pipeline_name``
        Names the pipeline in the hash. Two pipelines that derive objects from
        the same images get different UIDs; one pipeline re-run on the same
        images gets the same ones. ``None`` makes every UID random.
    ``prefix``
        The UID root, ending with a dot.
    """

    pipeline_name: str | None = attrs.field(default=None, validator=_check_name)
    prefix: str = attrs.field(default=DEFAULT_UID_PREFIX, validator=_check_prefix)

    @property
    def deterministic(self) -> bool:
        """True when UIDs are derived from their sources rather than random."""
        return self.pipeline_name is not None

    def random_uid(self) -> UID:
        """A new random UID under the prefix."""
        return generate_uid(self.prefix)

    def derived_uid(self, kind: str, parts: Iterable[str]) -> UID:
        """The UID of ``kind`` (e.g. ``"series"``) for the given parts, random without a pipeline name."""
        if self.pipeline_name is None:
            return self.random_uid()
        text = _SEPARATOR.join(["dicomnode", self.pipeline_name, kind, *parts])
        return generate_uid(self.prefix, entropy_srcs=[text])

    def series_uid(self, source_uids: Iterable[str], key: str = "") -> UID:
        """A SeriesInstanceUID derived from the source instances' UIDs.

        The order of ``source_uids`` does not matter. ``key`` tells apart
        several series one pipeline makes from the same sources (say a
        segmentation and a report). Without sources and without a key there
        is nothing to derive from, and the UID is random.
        """
        sources = sorted(set(source_uids))
        if not sources and not key:
            return self.random_uid()
        return self.derived_uid("series", [key, *sources])

    def instance_uid(self, series_uid: str, instance_number: int) -> UID:
        """A SOPInstanceUID for instance ``instance_number`` of the series ``series_uid``."""
        return self.derived_uid("instance", [str(series_uid), str(instance_number)])
