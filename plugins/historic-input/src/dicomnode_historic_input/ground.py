"""The default ground value of a historic input: priors by study date and series description.

``process`` receives a :class:`Priors` mapping::

    {"20240110": {"CT thorax": [ds, ds, ...], "PET WB": [...]},
     "20250312": {"CT thorax": [...]}}

oldest study first, each series sorted by InstanceNumber, plus
:attr:`Priors.retrieval`, the report of how the retrieval went (did it
finish, what failed and why).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
from pydicom import Dataset

from dicomnode.extension.grinders import Grinder

__all__ = ["Priors", "PriorsGrinder", "RetrievalReport"]


@attrs.frozen
class RetrievalReport:
    """How the retrieval of one patient's priors went.

    ``finished``
        the retrieval is over (successfully or not): the input validates;
    ``error``
        why it failed (PACS down, a C-FIND or C-MOVE refused, a timeout), or None;
    ``attempts``
        how many times the PACS was asked;
    ``targets``
        what was retrieved, as ``"STUDY <uid>"`` / ``"SERIES <uid>"`` texts;
    ``completed``, ``failed``, ``warning``
        the retrieve sub-operations the PACS reported, summed over the targets.
    """

    finished: bool = False
    error: str | None = None
    attempts: int = 0
    targets: tuple[str, ...] = ()
    completed: int = 0
    failed: int = 0
    warning: int = 0

    @property
    def ok(self) -> bool:
        """True when the retrieval finished without an error or a failed sub-operation."""
        return self.finished and self.error is None and self.failed == 0


class Priors(dict[str, dict[str, list[Dataset]]]):
    """Study date -> series description -> datasets, with the retrieval's :class:`RetrievalReport`."""

    def __init__(self, *args: Any, retrieval: RetrievalReport | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retrieval = retrieval if retrieval is not None else RetrievalReport()

    def datasets(self) -> list[Dataset]:
        """Every prior dataset, oldest study first."""
        return [ds for series in self.values() for datasets in series.values() for ds in datasets]


def _instance_number(dataset: Dataset) -> int:
    try:
        return int(dataset.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


class PriorsGrinder(Grinder):
    """Groups the priors by StudyDate, then SeriesDescription, into a :class:`Priors` mapping.

    Studies come oldest first; a series without a description is keyed by
    its SeriesInstanceUID; each series is sorted by InstanceNumber.
    """

    def __call__(self, datasets: Iterable[Dataset]) -> Priors:
        grouped: dict[str, dict[str, list[Dataset]]] = {}
        for dataset in datasets:
            date = str(dataset.get("StudyDate", "") or "")
            description = str(dataset.get("SeriesDescription", "") or "").strip()
            key = description or str(dataset.get("SeriesInstanceUID", ""))
            grouped.setdefault(date, {}).setdefault(key, []).append(dataset)
        priors = Priors()
        for date in sorted(grouped):
            priors[date] = {key: sorted(items, key=_instance_number) for key, items in grouped[date].items()}
        return priors
