"""Read the few header values a grinder needs without pydicom's full conversion.

A series of 300 slices means thousands of attribute reads before a single
pixel is copied. pydicom turns every value it hands out into an object (a
``DSfloat`` per number, with validation), which for the grinder's needs —
positions, orientations, rescales, sizes — costs more than reading the
files' pixels. Elements that were never read are still raw bytes in the
dataset; these functions parse those bytes directly and fall back to the
normal pydicom value for anything else (elements set in code, deferred or
unusual encodings).
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

__all__ = ["has", "int_value", "tag_object", "text_value"]

_TAGS: dict[str, BaseTag] = {}
_BY_NUMBER: dict[int, BaseTag] = {}
_BINARY_INTEGERS = {"US": (2, False), "SS": (2, True), "UL": (4, False), "SL": (4, True)}


def tag_object(number: int) -> BaseTag:
    """The one tag object this plugin uses for ``number``.

    A dict of elements finds a key by identity before it compares; pydicom's
    tag comparison is Python code, so headers this plugin builds and the
    lookups it makes share one object per tag (thousands of lookups a series).
    """
    tag = _BY_NUMBER.get(number)
    if tag is None:
        tag = _BY_NUMBER[number] = BaseTag(number)
    return tag


def _tag(keyword: str) -> BaseTag:
    tag = _TAGS.get(keyword)
    if tag is None:
        number = tag_for_keyword(keyword)
        if number is None:
            raise KeyError(f"{keyword!r} is not a DICOM keyword")
        tag = _TAGS[keyword] = tag_object(number)
    return tag


def _element(dataset: Dataset, tag: BaseTag) -> DataElement | RawDataElement | None:
    """The element at ``tag`` as the dataset holds it (raw or converted), its value read if still in a file.

    A plain lookup: pydicom's ``get_item`` first turns the key into a tag
    object, which for thousands of reads costs more than the lookup itself.
    """
    element = dataset._dict.get(tag)
    if isinstance(element, RawDataElement) and element.value is None and element.length:
        return dataset.get_item(tag)  # a deferred value: reading it is get_item's work
    return element


def has(dataset: Dataset, keyword: str) -> bool:
    """True when ``dataset`` holds the element (even empty), without converting or reading its value.

    An element whose value is still in the file (a lazy dataset's pixel data)
    is not read just to say it is there.
    """
    return _tag(keyword) in dataset._dict  # the element, read or not: its value is not touched


def text_value(dataset: Dataset, keyword: str) -> Any:
    """A text value (a string, or a list of strings for several), None when absent or empty."""
    element = _element(dataset, _tag(keyword))
    if element is None:
        return None
    if isinstance(element, RawDataElement):
        if not element.value:
            return None
        text = element.value.decode("ascii", "replace").strip(" \x00")
        if not text:
            return None
        parts = [part.strip(" \x00") for part in text.split("\\")]
        return parts if len(parts) > 1 else parts[0]
    value = element.value
    if value is None or value == "":
        return None
    return list(value) if isinstance(value, MultiValue | list) else value


def int_value(dataset: Dataset, keyword: str, default: int | None = None) -> int | None:
    """An integer value (binary US/SS/UL/SL or text IS), ``default`` when absent or empty."""
    tag = _tag(keyword)
    element = _element(dataset, tag)
    if element is None:
        return default
    if isinstance(element, RawDataElement) and element.value is not None:
        vr = dictionary_VR(tag)
        if vr == "IS":
            text = text_value(dataset, keyword)
            if isinstance(text, list):
                text = text[0]
            return default if text is None else int(float(text))
        size_signed = _BINARY_INTEGERS.get(vr)
        if size_signed is not None:
            size, signed = size_signed
            if len(element.value) < size:
                return default
            return int.from_bytes(element.value[:size], "little" if element.is_little_endian else "big",
                                  signed=signed)
    value = dataset[tag].value
    if value is None or value == "":
        return default
    if isinstance(value, MultiValue | list):
        value = value[0]
    return int(float(value))
