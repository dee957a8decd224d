"""NIfTI images for dicomnode.

Names are imported on first use, so discovering the plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "NiftiGrinder": "dicomnode_nifti.grinder",
    "NiftiFactory": "dicomnode_nifti.factory",
}

__all__ = [
    "NiftiFactory",
    "NiftiGrinder",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
