"""The plugin's hook implementations: the module its entry point names. Cheap to import."""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins import GrinderSpec, VirtualElementSpec, hookimpl


@hookimpl
def dicomnode_grinders() -> Iterator[GrinderSpec]:
    yield GrinderSpec("numpy", "dicomnode_numpy.grinder:NumpyGrinder", "a series as one volume with its geometry")


@hookimpl
def dicomnode_virtual_elements() -> Iterator[VirtualElementSpec]:
    yield VirtualElementSpec("numpy-caller", "dicomnode_numpy.factory:NumpyCaller", "a value computed from the slice being written")
