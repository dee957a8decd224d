"""Tags, VRs and values checked against the DICOM dictionary, with errors a user can act on.

Blueprints accept a tag as an int (``0x00100010``), a keyword
(``"PatientID"``) or a pydicom ``Tag``; every check here raises a
:class:`~dicomnode.errors.BlueprintError` that names the tag, the value and
the rule it broke.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import VR, DSfloat

from dicomnode.errors import BlueprintError

__all__ = ["TagLike", "check_value", "check_vr", "describe", "dictionary_vr", "make_element", "to_tag"]

#: the ways a tag may be written
TagLike = int | str | BaseTag | tuple[int, int]

_KNOWN_VRS = frozenset(vr.value for vr in VR)


def to_tag(tag: TagLike) -> BaseTag:
    """The tag for an int, a keyword, a ``(group, element)`` pair or a Tag."""
    if isinstance(tag, BaseTag):
        return tag
    if isinstance(tag, str):
        if tag in keyword_dict:
            return BaseTag(keyword_dict[tag])
        close = difflib.get_close_matches(tag, keyword_dict.keys(), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise BlueprintError(
            f"{tag!r} is not a keyword of the DICOM dictionary{hint} "
            f"(a tag is a keyword such as 'PatientID' or an int such as 0x00100020)"
        )
    if isinstance(tag, bool) or not isinstance(tag, (int, tuple)):
        raise BlueprintError(
            f"a tag is a keyword such as 'PatientID' or an int such as 0x00100020, got {tag!r}"
        )
    try:
        return Tag(tag)
    except (ValueError, OverflowError, TypeError) as error:
        raise BlueprintError(f"{tag!r} is not a valid tag: {error}") from None


def describe(tag: BaseTag) -> str:
    """``PatientID (0010,0020)`` — the keyword where there is one, and the numbers."""
    keyword = keyword_for_tag(tag)
    numbers = f"({tag.group:04X},{tag.element:04X})"
    return f"{keyword} {numbers}" if keyword else numbers


def check_vr(tag: BaseTag, vr: object, where: str) -> None:
    """Raise unless ``vr`` is a VR and the dictionary allows it for ``tag``."""
    if not isinstance(vr, str) or vr not in _KNOWN_VRS:
        raise BlueprintError(
            f"{where}({describe(tag)}): {vr!r} is not a DICOM VR; "
            f"allowed: {', '.join(sorted(_KNOWN_VRS))}"
        )
    if tag.is_private:
        return
    try:
        allowed = dictionary_VR(tag)
    except KeyError:  # not in the dictionary (a repeating group, a retired gap): any VR
        return
    choices = {choice.strip() for choice in allowed.split(" or ")}
    if vr not in choices:
        raise BlueprintError(
            f"{where}({describe(tag)}): the VR {vr!r} is wrong for this tag; "
            f"the DICOM dictionary gives {allowed}"
        )


def dictionary_vr(tag: BaseTag) -> str:
    """The VR the dictionary gives ``tag`` (the first one where it allows several; UN when unknown)."""
    try:
        return dictionary_VR(tag).split(" or ")[0].strip()
    except KeyError:
        return "UN"


def _prepared(vr: str, value: Any) -> Any:
    # computed decimals (positions, spacings) rarely fit DS's 16 characters as
    # Python prints them; round them to fit instead of failing
    if vr == "DS":
        if isinstance(value, float):
            return DSfloat(value, auto_format=True)
        if isinstance(value, (list, tuple)):
            return [DSfloat(v, auto_format=True) if isinstance(v, float) else v for v in value]
    return value


def make_element(tag: BaseTag, vr: str, value: Any, where: str) -> DataElement:
    """A DataElement whose value was checked against its VR (length, characters, range)."""
    try:
        element = DataElement(tag, vr, _prepared(vr, value), validation_mode=config.RAISE)
    except (ValueError, OverflowError, TypeError) as error:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise BlueprintError(
            f"{where}({describe(tag)}): the value {shown} is not allowed for the VR {vr}: {error}"
        ) from None
    element.validation_mode = config.settings.reading_validation_mode
    return element


def check_value(tag: BaseTag, vr: str, value: Any, where: str) -> None:
    """Raise unless ``value`` fits ``vr`` (see :func:`make_element`)."""
    if value is not None and vr != "SQ":
        make_element(tag, vr, value, where)
