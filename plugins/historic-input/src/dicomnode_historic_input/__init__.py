"""Fetch a patient's prior studies from a PACS.

Names are imported on first use, so discovering the plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Action": "dicomnode_historic_input.query",
    "HistoricAbstractInput": "dicomnode_historic_input.input",
    "Priors": "dicomnode_historic_input.ground",
    "PriorsGrinder": "dicomnode_historic_input.ground",
    "RetrievalReport": "dicomnode_historic_input.ground",
}

__all__ = [
    "Action",
    "HistoricAbstractInput",
    "Priors",
    "PriorsGrinder",
    "RetrievalReport",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
