"""DICOMweb for dicomnode: results by STOW-RS, priors by QIDO-RS and WADO-RS, a STOW-RS receiver.

Names are imported on first use, so discovering the plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "DicomWebOutput": "dicomnode_dicomweb.output",
    "DicomWebPriors": "dicomnode_dicomweb.priors",
    "DicomWebSource": "dicomnode_dicomweb.priors",
    "StowReport": "dicomnode_dicomweb.output",
    "StowService": "dicomnode_dicomweb.receiver",
    "WebConnection": "dicomnode_dicomweb.connection",
}

__all__ = [
    "DicomWebOutput",
    "DicomWebPriors",
    "DicomWebSource",
    "StowReport",
    "StowService",
    "WebConnection",
]

if TYPE_CHECKING:  # at run time the names come from __getattr__, on first use
    from .connection import WebConnection
    from .output import DicomWebOutput, StowReport
    from .priors import DicomWebPriors, DicomWebSource
    from .receiver import StowService


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
