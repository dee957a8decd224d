"""Fetch a patient's prior studies from a PACS.

Names are imported on first use, so discovering the plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Action": "dicomnode_historic_input.query",
    "DimseSource": "dicomnode_historic_input.source",
    "HistoricAbstractInput": "dicomnode_historic_input.input",
    "PriorSource": "dicomnode_historic_input.source",
    "Priors": "dicomnode_historic_input.ground",
    "PriorsGrinder": "dicomnode_historic_input.ground",
    "Retrieved": "dicomnode_historic_input.source",
    "RetrievalReport": "dicomnode_historic_input.ground",
    "Target": "dicomnode_historic_input.query",
}

__all__ = [
    "Action",
    "DimseSource",
    "HistoricAbstractInput",
    "PriorSource",
    "Priors",
    "PriorsGrinder",
    "RetrievalReport",
    "Retrieved",
    "Target",
]

if TYPE_CHECKING:  # at run time the names come from __getattr__, on first use
    from .ground import Priors, PriorsGrinder, RetrievalReport
    from .input import HistoricAbstractInput
    from .query import Action, Target
    from .source import DimseSource, PriorSource, Retrieved


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
