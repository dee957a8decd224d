"""The executor ``dask`` for dicomnode: a job's ``process`` runs on a Dask distributed cluster.

Choose it with ``executor = "dask"``; see ``docs/scale-out.md``. Names are
imported on first use, so discovering the plugin does not import Dask.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "DaskExecutor": "dicomnode_dask.executor",
}

__all__ = ["DaskExecutor"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
