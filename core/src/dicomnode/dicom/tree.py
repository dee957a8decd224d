"""Image trees (patient / study / series / instance) and :class:`IdentityMapping`.

A :class:`DicomTree` sorts datasets by PatientID, StudyInstanceUID,
SeriesInstanceUID and SOPInstanceUID, creating a :class:`PatientTree`,
:class:`StudyTree` and :class:`SeriesTree` as images arrive::

    >>> from dicomnode.dicom.synthetic import synthetic_series
    >>> tree = DicomTree(synthetic_series(slices=3, rows=4, columns=4, patient_id="P1"))
    >>> len(tree), list(tree.keys())
    (3, ['P1'])

An :class:`~dicomnode.dicom.identity.IdentityMapping` (also importable from
here) replaces UIDs and patient identifiers consistently: the same old UID
always becomes the same new UID, so every reference between objects stays
valid after ``tree.map(mapping)``.
"""

from __future__ import annotations

import os
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydicom import Dataset

from dicomnode.dicom.identity import IDENTIFIER_KEYWORDS, IdentityMapping
from dicomnode.dicom.lazy import LazyDataset, read_dataset, write_dataset
from dicomnode.dicom.paths import contained_path
from dicomnode.errors import IncompatibleImagesError, InvalidDatasetError

__all__ = [
    "IDENTIFIER_KEYWORDS",
    "DicomTree",
    "IdentityMapping",
    "ImageTreeInterface",
    "PatientTree",
    "SeriesTree",
    "StudyTree",
    "instance_path",
]


def _uid_of(dataset: Dataset, keyword: str, where: str) -> str:
    value = dataset.get(keyword)
    if value is None or str(value) == "":
        sop = dataset.get("SOPInstanceUID", "?")
        raise InvalidDatasetError(
            f"an image without {keyword} cannot go into {where} (SOPInstanceUID {sop}); "
            f"every image needs {keyword}"
        )
    return str(value)


def instance_path(root: Path | str, dataset: Dataset) -> Path:
    """Where :meth:`ImageTreeInterface.save` puts ``dataset`` under ``root``.

    ``root/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``,
    each component made safe by :func:`dicomnode.dicom.paths.safe_component`,
    so no tag value can leave ``root``.
    """
    folder = contained_path(
        Path(root),
        str(dataset.get("PatientID", "") or ""),
        _uid_of(dataset, "StudyInstanceUID", "a saved tree"),
        _uid_of(dataset, "SeriesInstanceUID", "a saved tree"),
        _uid_of(dataset, "SOPInstanceUID", "a saved tree"),
    )
    return folder.parent / f"{folder.name}.dcm"


def _header_of(dataset: Dataset) -> Dataset:
    """``dataset``, or for a LazyDataset not loaded yet its file's header read apart.

    Sorting needs four UIDs; reading them without the pixel data, and
    without loading the LazyDataset, keeps a tree of lazy datasets small
    and quick to build.
    """
    if isinstance(dataset, LazyDataset) and not dataset.is_loaded:
        return read_dataset(dataset.path, stop_before_pixels=True)
    return dataset


def _copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary file (never half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


class ImageTreeInterface(ABC):
    """What every level of an image tree offers: add, count, iterate, save, map.

    ``len(tree)`` is the number of images, iteration yields the datasets.
    A :class:`~dicomnode.dicom.lazy.LazyDataset` that is not loaded is sorted
    by its file's header, read without the pixel data, and stays unloaded, so
    a tree of lazy datasets stays small.
    """

    def __init__(self, images: Iterable[Dataset] = ()) -> None:
        self._parent: _BranchTree[Any] | None = None
        self.add_images(images)

    def add_image(self, dataset: Dataset) -> None:
        """Put one image in its place, creating the branches it needs."""
        self._add(dataset, _header_of(dataset))

    def add_images(self, datasets: Iterable[Dataset]) -> None:
        """Put every image in its place."""
        for dataset in datasets:
            self.add_image(dataset)

    @abstractmethod
    def _add(self, dataset: Dataset, header: Dataset) -> None:
        """Add ``dataset``, sorted by the UIDs of ``header`` (itself, or its header read apart).

        Raises before changing anything if it does not belong here.
        """

    @abstractmethod
    def _clear(self) -> None:
        """Forget every image (the tree's identity included)."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of images."""

    @abstractmethod
    def __iter__(self) -> Iterator[Dataset]:
        """Every image, branch by branch."""

    def save(self, directory: Path | str) -> list[Path]:
        """Write every image under ``directory`` and return the paths written.

        The layout is ``patient/study/series/instance.dcm`` (see
        :func:`instance_path`) at every level of the tree, so saving a
        :class:`SeriesTree` puts its files where saving its whole
        :class:`DicomTree` would. A LazyDataset that is not loaded is copied
        byte for byte and stays unloaded.
        """
        root = Path(directory)
        paths = []
        for dataset in self:
            path = instance_path(root, _header_of(dataset))
            if isinstance(dataset, LazyDataset) and not dataset.is_loaded:
                # its file is exactly what would be written: copy the bytes, keep memory free
                _copy_file(dataset.path, path)
            else:
                write_dataset(dataset, path)
            paths.append(path)
        return paths

    def map(self, mapping: IdentityMapping) -> None:
        """Replace UIDs and patient identifiers of every image with ``mapping``, in place.

        The images are sorted again under their new identifiers. A subtree
        (``tree["P1"].map(mapping)``) moves to its new place in the tree it
        belongs to: ``tree["P1"]`` is then gone and ``tree[new_id]`` holds it.
        Lazy datasets are loaded and keep their changed contents in memory;
        save the tree to keep the result.
        """
        images = list(self)
        for dataset in images:
            mapping.apply(dataset)
        parent = self._parent
        self._clear()
        self._parent = None
        for dataset in images:
            self._add(dataset, dataset)
        if parent is None:
            return
        root = parent
        while root._parent is not None:
            root = root._parent
        parent._detach(self)
        if images:
            root._attach(self, images[0])


class SeriesTree(ImageTreeInterface):
    """The images of one series, by SOPInstanceUID.

    Raises :class:`~dicomnode.errors.IncompatibleImagesError` for an image of
    another series or a second image with the same SOPInstanceUID.
    """

    def __init__(self, images: Iterable[Dataset] = ()) -> None:
        self._images: dict[str, Dataset] = {}
        self.series_uid: str | None = None
        super().__init__(images)

    def _add(self, dataset: Dataset, header: Dataset) -> None:
        series_uid = _uid_of(header, "SeriesInstanceUID", "a SeriesTree")
        sop_uid = _uid_of(header, "SOPInstanceUID", "a SeriesTree")
        if self.series_uid is not None and series_uid != self.series_uid:
            raise IncompatibleImagesError(
                f"image {sop_uid} belongs to series {series_uid}, not to this tree's series "
                f"{self.series_uid}; one SeriesTree holds one series"
            )
        if sop_uid in self._images:
            raise IncompatibleImagesError(
                f"series {series_uid} already holds an image with SOPInstanceUID {sop_uid}; "
                f"every image of a series needs its own SOPInstanceUID"
            )
        self.series_uid = series_uid
        self._images[sop_uid] = dataset

    def _clear(self) -> None:
        self._images.clear()
        self.series_uid = None

    def __len__(self) -> int:
        return len(self._images)

    def __iter__(self) -> Iterator[Dataset]:
        return iter(list(self._images.values()))

    def __getitem__(self, sop_instance_uid: str) -> Dataset:
        """The image with this SOPInstanceUID."""
        return self._images[sop_instance_uid]

    def __contains__(self, sop_instance_uid: object) -> bool:
        return sop_instance_uid in self._images

    def keys(self) -> list[str]:
        """The SOPInstanceUIDs, in the order the images arrived."""
        return list(self._images)

    def __repr__(self) -> str:
        return f"<SeriesTree {self.series_uid} ({len(self)} images)>"


ChildT = TypeVar("ChildT", bound=ImageTreeInterface)


class _BranchTree(ImageTreeInterface, Generic[ChildT]):
    """A level whose children are trees: keyed by ``child_keyword``, identified by ``keyword``."""

    keyword: ClassVar[str | None] = None
    child_keyword: ClassVar[str]
    child_type: ClassVar[type[ImageTreeInterface]]

    def __init__(self, images: Iterable[Dataset] = ()) -> None:
        self._children: dict[str, ChildT] = {}
        self._identity: str | None = None
        super().__init__(images)

    @abstractmethod
    def _new_child(self) -> ChildT:
        """An empty child tree."""

    def _value(self, dataset: Dataset, keyword: str) -> str:
        if keyword == "PatientID":
            # PatientID is type 2: present but possibly empty; an empty one is still one patient
            return str(dataset.get("PatientID", "") or "")
        return _uid_of(dataset, keyword, f"a {type(self).__name__}")

    def _add(self, dataset: Dataset, header: Dataset) -> None:
        if self.keyword is not None:
            identity = self._value(header, self.keyword)
            if self._identity is not None and identity != self._identity:
                raise IncompatibleImagesError(
                    f"image {header.get('SOPInstanceUID', '?')} has {self.keyword} {identity!r}, "
                    f"not this {type(self).__name__}'s {self._identity!r}"
                )
        key = self._value(header, self.child_keyword)
        child = self._children.get(key)
        created = child is None
        if child is None:
            child = self._new_child()
        child._add(dataset, header)
        if created:
            child._parent = self
            self._children[key] = child
        if self.keyword is not None:
            self._identity = identity

    def _detach(self, child: ImageTreeInterface) -> None:
        """Remove ``child``; a branch left empty is removed from its own parent too."""
        for key, candidate in list(self._children.items()):
            if candidate is child:
                del self._children[key]
        if not self._children:
            self._identity = None
            if self._parent is not None:
                self._parent._detach(self)

    def _attach(self, child: ImageTreeInterface, sample: Dataset) -> None:
        """Put the filled ``child`` where ``sample`` (one of its images) belongs below this tree."""
        key = self._value(sample, self.child_keyword)
        existing = self._children.get(key)
        if isinstance(child, self.child_type):
            if existing is None:
                child._parent = self
                self._children[key] = child  # type: ignore[assignment]  # checked just above
            else:
                # the mapping made these images part of a branch that already exists
                existing.add_images(list(child))
        else:
            if existing is None:
                existing = self._new_child()
                existing._parent = self
                self._children[key] = existing
            if not isinstance(existing, _BranchTree):
                raise TypeError(f"{type(child).__name__} cannot go below {type(self).__name__}")
            existing._attach(child, sample)
        if self.keyword is not None and self._identity is None:
            self._identity = self._value(sample, self.keyword)

    def _clear(self) -> None:
        self._children.clear()
        self._identity = None

    def __len__(self) -> int:
        return sum(len(child) for child in self._children.values())

    def __iter__(self) -> Iterator[Dataset]:
        for child in list(self._children.values()):
            yield from child

    def __getitem__(self, key: str) -> ChildT:
        """The child tree with this key."""
        return self._children[key]

    def __contains__(self, key: object) -> bool:
        return key in self._children

    def keys(self) -> list[str]:
        """The children's keys, in the order they were first seen."""
        return list(self._children)

    def values(self) -> list[ChildT]:
        """The child trees."""
        return list(self._children.values())

    def items(self) -> list[tuple[str, ChildT]]:
        """(key, child tree) pairs."""
        return list(self._children.items())

    def __repr__(self) -> str:
        name = f" {self._identity}" if self._identity is not None else ""
        return f"<{type(self).__name__}{name} ({len(self._children)} children, {len(self)} images)>"


class StudyTree(_BranchTree[SeriesTree]):
    """The series of one study, by SeriesInstanceUID; refuses an image of another study."""

    keyword = "StudyInstanceUID"
    child_keyword = "SeriesInstanceUID"
    child_type = SeriesTree

    @property
    def study_uid(self) -> str | None:
        """The StudyInstanceUID of every image here (None while empty)."""
        return self._identity

    def _new_child(self) -> SeriesTree:
        return SeriesTree()


class PatientTree(_BranchTree[StudyTree]):
    """The studies of one patient, by StudyInstanceUID; refuses an image of another PatientID."""

    keyword = "PatientID"
    child_keyword = "StudyInstanceUID"
    child_type = StudyTree

    @property
    def patient_id(self) -> str | None:
        """The PatientID of every image here (None while empty)."""
        return self._identity

    def _new_child(self) -> StudyTree:
        return StudyTree()


class DicomTree(_BranchTree[PatientTree]):
    """Any images, sorted by PatientID, then study, series and instance.

    ``tree["P1"]["1.2.3"]["1.2.3.4"]["1.2.3.4.5"]`` is one dataset.
    """

    keyword = None
    child_keyword = "PatientID"
    child_type = PatientTree

    def _new_child(self) -> PatientTree:
        return PatientTree()
