"""How an input container travels to a worker: ground values as they are, datasets packed.

Dask pickles what it sends with protocol 5 and sends large buffers (a numpy
volume's voxels) beside the pickle, without copying them into it. A
``pydicom.Dataset`` does not pickle that way: each of its elements is an
object of its own, and its pixel data a ``bytes`` value copied into the
pickle. For a 300-slice CT that is about a second each way, more than the
volume's own transfer. So the datasets of an
:class:`~dicomnode.extension.containers.InputContainer` travel packed, and
come out as plain ``pydicom`` datasets on the worker:

- each element not yet converted by pydicom as the plain tuple of its raw
  form (its bytes as received), converted elements as they are;
- the pixel data beside the pickle (``pickle.PickleBuffer``), like a numpy
  array's, or not at all with ``pixel_data = False``: then ``process`` takes
  the pixels from the ground values;
- a dataset that a ground value holds itself (a ``ListGrinder``'s list) as the
  same object, pixel data and all: the pickle sends it once for both;
- a :class:`~dicomnode.dicom.lazy.LazyDataset` (``lazy_storage``) as it
  pickles itself: its header, read first if it was not yet, while its pixel
  data stays in the node's data directory (a worker on another machine
  cannot read them: take the pixels from the ground values).

Packing is written here because no library packs pydicom datasets for
transport.
"""

from __future__ import annotations

import contextlib
import gc
import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import BaseTag

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.extension.containers import InputContainer

__all__ = ["PIXEL_DATA_TAGS", "collector_paused", "travelling"]

#: Pixel Data, Float Pixel Data, Double Float Pixel Data
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


def travelling(container: InputContainer, *, pixel_data: bool = True) -> InputContainer:
    """A copy of ``container`` whose datasets pickle packed (see the module docstring).

    The copy shares the ground values and the datasets with ``container``;
    only pickling it differs.
    """
    held = _datasets_in(container[name] for name in container)
    datasets = {name: _Datasets(items, held, pixel_data) for name, items in container.datasets.items()}
    return InputContainer(dict(container), datasets, container.paths, patient_key=container.patient_key,
                          responding_address=container.responding_address, calling_aet=container.calling_aet)


def _datasets_in(values: Iterable[Any], depth: int = 4) -> set[int]:
    """The ids of the datasets held by ground values (in lists, tuples, sets and mappings of them)."""
    found: set[int] = set()
    for value in values:
        if isinstance(value, Dataset):
            found.add(id(value))
        elif depth and isinstance(value, (list, tuple, set, frozenset)):
            found |= _datasets_in(value, depth - 1)
        elif depth and isinstance(value, Mapping):
            found |= _datasets_in(value.values(), depth - 1)
    return found


class _Datasets(list):  # type: ignore[type-arg]
    """A list of datasets that pickles packed; it unpickles as a plain list of datasets."""

    def __init__(self, datasets: Sequence[Dataset], held: set[int], pixel_data: bool) -> None:
        super().__init__(datasets)
        self.held = held
        self.pixel_data = pixel_data

    def __reduce__(self) -> tuple[Any, ...]:
        shared: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        return (_unpacked, ([_pack(dataset, self.held, self.pixel_data, shared) for dataset in self],))


def _pack(dataset: Dataset, held: set[int], pixel_data: bool, shared: dict[tuple[Any, ...], tuple[Any, ...]]) -> Any:
    if isinstance(dataset, LazyDataset):
        if not dataset.is_loaded:
            dataset.get(0x00080018)  # read its header: pickled unread, it would travel as a path alone
        return dataset
    if id(dataset) in held:
        return dataset
    elements: list[Any] = []
    # the dataset's own dict (pydicom's private ``_dict``) rather than ``get_item`` for each tag: its elements as
    # they are, raw ones unconverted, at a fifth of the cost (packing is on every job's path)
    for tag, element in list(dataset._dict.items()):
        if element.__class__ is RawDataElement and element.value is None and element.length:
            element = dataset[tag]  # a deferred value (still in the received bytes or a file): read it now
        if tag in PIXEL_DATA_TAGS:
            if pixel_data:
                elements.append(_pixel_entry(element))
            continue
        if element.__class__ is RawDataElement:
            # the slices of a series share most of their elements: where they were read from (value_tell)
            # aside, one tuple for all of them, which the pickle sends once. The tag as a plain int: a
            # pydicom tag compares in Python, and finding the shared tuple compares every tag
            raw = (int(tag), *element[1:4], 0, *element[5:])
            elements.append(shared.setdefault(raw, raw))
        else:
            elements.append(element)
    file_meta = getattr(dataset, "file_meta", None)
    implicit, little = dataset.original_encoding
    return (implicit, little, dataset.original_character_set, file_meta, elements)


def _pixel_entry(element: Any) -> Any:
    value = element.value
    if not isinstance(value, (bytes, bytearray)) or not value:
        return tuple(element) if isinstance(element, RawDataElement) else element
    if isinstance(element, RawDataElement):
        return ("raw", tuple(element._replace(value=b"")), pickle.PickleBuffer(value))
    return ("element", element.tag, element.VR, element.is_undefined_length, pickle.PickleBuffer(value))


def _unpacked(packed: list[Any]) -> list[Dataset]:
    made: dict[int, RawDataElement] = {}  # a raw element shared by the slices is made once (it is immutable)
    with collector_paused():
        return [_unpack(item, made) if isinstance(item, tuple) else item for item in packed]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for a moment (on every thread of the process).

    Unpacking a 300-slice series makes tens of thousands of small objects,
    and the collections they set off walk every object of the worker: with
    the collector on it took 0.04-0.09 s, paused 0.025 s (measured). What is
    made there holds no reference cycles; the collector runs again after.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _unpack(item: tuple[Any, ...], made: dict[int, RawDataElement]) -> Dataset:
    implicit, little, character_set, file_meta, entries = item
    dataset = Dataset()
    elements: dict[Any, Any] = {}
    for entry in entries:
        if isinstance(entry, tuple):
            kind = entry[0]
            if kind.__class__ is not str:  # a raw element's tag (an int; comparing it to a str parses the str)
                element: Any = made.get(id(entry))
                if element is None:
                    element = made[id(entry)] = RawDataElement(BaseTag(kind), *entry[1:])
            elif kind == "raw":
                element = RawDataElement(*entry[1])._replace(value=bytes(entry[2]))
            else:
                element = DataElement(entry[1], entry[2], bytes(entry[4]), is_undefined_length=entry[3])
        else:
            element = entry
        elements[element.tag] = element
    # the elements are in tag order already: one assignment instead of 50 __setitem__ calls per dataset
    # (a third of the time a 300-slice CT takes to unpack)
    dataset._dict = elements
    dataset.set_original_encoding(implicit, little, character_set)
    if isinstance(file_meta, FileMetaDataset):
        dataset.file_meta = file_meta
    return dataset
