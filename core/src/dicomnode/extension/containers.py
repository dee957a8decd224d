"""The input container: what ``process`` receives, and what crosses to an executor."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydicom import Dataset

from dicomnode.net.address import Address

__all__ = ["InputContainer"]


class InputContainer(Mapping[str, Any]):
    """What ``process`` receives: input name -> ground value, plus the raw material.

    ``datasets``
        input name -> the datasets of that input;
    ``paths``
        input name -> the stored files, or None without a data directory;
    ``responding_address``
        the :class:`~dicomnode.net.Address` of the sender when its
        calling AE title is one of the pipeline's ``known_endpoints``;
    ``patient_key``
        the value of the patient identifier tag;
    ``calling_aet``
        the AE title of the association that completed the patient.
    """

    def __init__(self, data: Mapping[str, Any], datasets: Mapping[str, list[Dataset]],
                 paths: Mapping[str, list[Path]] | None = None, *, patient_key: str = "",
                 responding_address: Address | None = None, calling_aet: str = "") -> None:
        self._data = dict(data)
        self.datasets = dict(datasets)
        self.paths = None if paths is None else dict(paths)
        self.patient_key = patient_key
        self.responding_address = responding_address
        self.calling_aet = calling_aet

    def __getitem__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise KeyError(f"no input {name!r}; the inputs are {sorted(self._data)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        counts = {name: len(items) for name, items in self.datasets.items()}
        return f"<InputContainer patient={self.patient_key!r} images={counts}>"
