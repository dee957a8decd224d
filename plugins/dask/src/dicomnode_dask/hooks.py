"""The plugin's hook implementations: the module its entry point names. Cheap to import (no Dask)."""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins import ExecutorSpec, hookimpl


@hookimpl
def dicomnode_executors() -> Iterator[ExecutorSpec]:
    yield ExecutorSpec("dask", "dicomnode_dask.executor:DaskExecutor",
                       "runs jobs on a Dask distributed cluster (embedded, or a scheduler's address)")
