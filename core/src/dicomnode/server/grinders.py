"""Grinders turn the datasets of an input into the value ``process`` receives."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom import Dataset

__all__ = ["Grinder", "IdentityGrinder"]


class Grinder:
    """Base class of grinders: ``grinder(datasets) -> value``."""

    def __call__(self, datasets: Iterable[Dataset]) -> Any:
        raise NotImplementedError  # abstract: every grinder defines its value


class IdentityGrinder(Grinder):
    """Returns the datasets unchanged."""

    def __call__(self, datasets: Iterable[Dataset]) -> Iterable[Dataset]:
        return datasets
