"""Grinders turn the datasets of an input into the value ``process`` receives.

A grinder is any callable ``grinder(datasets: Iterable[Dataset]) -> Any``.
The classes here are the core's own; plugins add more (``numpy``, ``nifti``)
through the ``dicomnode_grinders`` hook, and a TOML pipeline names them by
their registered name (``identity``, ``list``, ``dicom-tree``, ``tag``,
``many``).

Grinders run on a worker, never on an association thread, so they may take
their time; they should not keep references to the datasets they are given
longer than needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.tag import BaseTag, Tag

from dicomnode.errors import GrindingError

if TYPE_CHECKING:
    from dicomnode.dicom.tree import DicomTree

__all__ = [
    "DicomTreeGrinder",
    "Grinder",
    "IdentityGrinder",
    "ListGrinder",
    "ManyGrinder",
    "TagGrinder",
    "resolve_tag",
]


def resolve_tag(tag: str | int, setting: str = "tag") -> BaseTag:
    """A tag given by keyword (``"PatientID"``) or integer (``0x00100020``) as a pydicom tag.

    >>> hex(resolve_tag("PatientID"))
    '0x100020'
    """
    if isinstance(tag, str):
        number = tag_for_keyword(tag)
        if number is None:
            raise ValueError(f"{setting}: {tag!r} is not a DICOM keyword (for example 'PatientID')")
        return Tag(number)
    if isinstance(tag, int) and not isinstance(tag, bool) and 0 <= tag <= 0xFFFFFFFF:
        return Tag(tag)
    raise ValueError(f"{setting}: a tag is a DICOM keyword or an integer such as 0x00100020, got {tag!r}")


class Grinder:
    """Base class of grinders: ``grinder(datasets) -> value``.

    Subclass it and define ``__call__``::

        class CountGrinder(Grinder):
            def __call__(self, datasets):
                return sum(1 for _ in datasets)
    """

    def __call__(self, datasets: Iterable[Dataset]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __call__(datasets)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IdentityGrinder(Grinder):
    """Returns the datasets unchanged (the iterable the input holds)."""

    def __call__(self, datasets: Iterable[Dataset]) -> Iterable[Dataset]:
        return datasets


class ListGrinder(Grinder):
    """The datasets as a new ``list``, in the order the input holds them."""

    def __call__(self, datasets: Iterable[Dataset]) -> list[Dataset]:
        return list(datasets)


class DicomTreeGrinder(Grinder):
    """The datasets as a :class:`dicomnode.dicom.tree.DicomTree` (patient / study / series)."""

    def __call__(self, datasets: Iterable[Dataset]) -> DicomTree:
        # imported here: the tree module is only needed by pipelines that ask for it
        from dicomnode.dicom.tree import DicomTree

        tree = DicomTree()
        tree.add_images(datasets)
        return tree


class TagGrinder(Grinder):
    """The values of some tags, one dictionary per dataset, keyed by keyword.

    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.Modality = "CT"; ds.InstanceNumber = 3
    >>> TagGrinder(["Modality", "InstanceNumber"])([ds])
    [{'Modality': 'CT', 'InstanceNumber': 3}]

    A tag a dataset lacks gives ``None``, unless ``required=True``, which makes
    it a :class:`~dicomnode.errors.GrindingError`.
    """

    def __init__(self, tags: Sequence[str | int], *, required: bool = False) -> None:
        if isinstance(tags, (str, int)):
            tags = [tags]
        self.tags = [resolve_tag(tag, "TagGrinder tags") for tag in tags]
        self.names = [keyword_for_tag(tag) or f"{int(tag):08X}" for tag in self.tags]
        self.required = required

    def __call__(self, datasets: Iterable[Dataset]) -> list[dict[str, Any]]:
        result = []
        for dataset in datasets:
            row: dict[str, Any] = {}
            for tag, name in zip(self.tags, self.names):
                if tag in dataset:
                    row[name] = dataset[tag].value
                elif self.required:
                    raise GrindingError(
                        f"TagGrinder: dataset {dataset.get('SOPInstanceUID', '?')} lacks {name}, "
                        "which is required"
                    )
                else:
                    row[name] = None
            result.append(row)
        return result

    def __repr__(self) -> str:
        return f"TagGrinder({self.names!r})"


class ManyGrinder(Grinder):
    """Several grinders over the same datasets; the value is a tuple of their values.

    >>> ManyGrinder(ListGrinder(), TagGrinder(["Modality"]))  # doctest: +ELLIPSIS
    ManyGrinder(ListGrinder(), TagGrinder(['Modality']))
    """

    def __init__(self, *grinders: Any) -> None:
        if not grinders:
            raise ValueError("ManyGrinder needs at least one grinder")
        for grinder in grinders:
            if not callable(grinder):
                raise ValueError(f"ManyGrinder: every grinder must be callable, got {grinder!r}")
        self.grinders = grinders

    def __call__(self, datasets: Iterable[Dataset]) -> tuple[Any, ...]:
        materialised = list(datasets)  # each grinder gets the whole sequence, not a spent iterator
        return tuple(grinder(materialised) for grinder in self.grinders)

    def __repr__(self) -> str:
        return f"ManyGrinder({', '.join(map(repr, self.grinders))})"
