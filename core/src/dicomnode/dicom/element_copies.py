"""Copies of data elements cheap enough to make for every instance of a series, and comparisons.

A series header's shared elements are copied into each of its instances.
``copy.deepcopy`` of a whole dataset per slice is what makes naive series
building slow; here each element gets a new object over the same immutable
value, and only values that can be changed in place (multi-values, sequences)
are copied further. Comparing parents' values works on the encoded bytes
where it can, so that checking what 300 slices share decodes almost nothing.
"""

from __future__ import annotations

import copy
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import IS, DSdecimal, DSfloat, PersonName

__all__ = ["fresh_element", "fresh_elements", "same_value"]

#: value types that cannot be changed in place, so instances may share them
_IMMUTABLE = frozenset({
    str, int, float, bytes, type(None), BaseTag, UID, PersonName, DSfloat, DSdecimal, IS,
})


def fresh_element(element: DataElement) -> DataElement:
    """A new DataElement object for the same value: cheap, and safe to change for one instance.

    Strings, numbers and bytes are immutable and shared; a multi-value's list
    and a sequence's datasets can be changed in place, so they are copied
    (items of a sequence recursively, element by element — much cheaper than
    ``copy.deepcopy``).
    """
    new = object.__new__(DataElement)
    new.__dict__ = element.__dict__.copy()
    value = element._value
    kind = type(value)
    if kind in _IMMUTABLE:  # the common case, without the slow ABC isinstance checks
        return new
    if issubclass(kind, DicomSequence):
        new._value = DicomSequence([_fresh_dataset(item) for item in value])
    elif issubclass(kind, MultiValue):
        values = copy.copy(value)
        values._list = list(value._list)
        new._value = values
    elif not issubclass(kind, (str, int, float, bytes)):
        new._value = copy.deepcopy(value)
    return new


def fresh_elements(dataset: Dataset) -> dict[BaseTag, Any]:
    """New element objects for every element of ``dataset``, keyed by tag (see :func:`fresh_element`)."""
    elements: dict[BaseTag, Any] = {}
    for tag, element in dataset.items():
        # elements of a sequence read from a file may still be encoded
        elements[tag] = fresh_element(dataset[tag] if isinstance(element, RawDataElement) else element)
    return elements


def _fresh_dataset(dataset: Dataset) -> Dataset:
    copied = Dataset(fresh_elements(dataset))
    copied.is_undefined_length_sequence_item = dataset.is_undefined_length_sequence_item
    return copied


def same_value(first: Dataset, other: Dataset, tag: BaseTag) -> bool:
    """True when ``other`` has the same value for ``tag`` as ``first``."""
    mine, theirs = first.get_item(tag), other.get_item(tag)
    if theirs is None:
        return False
    # elements still encoded as read from a file compare as bytes, sparing
    # the decoding of every attribute of every slice
    # (equal bytes are equal values; unequal bytes are decoded and compared)
    if isinstance(mine, RawDataElement) and isinstance(theirs, RawDataElement) \
            and mine.VR == theirs.VR and isinstance(mine.value, bytes) and mine.value == theirs.value:
        return True
    return bool(first[tag].value == other[tag].value)
