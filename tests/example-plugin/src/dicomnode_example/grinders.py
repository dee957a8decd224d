"""A grinder, imported only when the registry is asked for it."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom import Dataset

from dicomnode.extension.grinders import Grinder


class ModalityGrinder(Grinder):
    """The sorted list of distinct Modality values of the datasets."""

    def __call__(self, datasets: Iterable[Dataset]) -> list[str]:
        return sorted({str(dataset.get("Modality", "")) for dataset in datasets})
