"""The plugin's hook implementations: the module its entry point names. Cheap to import."""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins import GrinderSpec, hookimpl


@hookimpl
def dicomnode_grinders() -> Iterator[GrinderSpec]:
    yield GrinderSpec("nifti", "dicomnode_nifti.grinder:NiftiGrinder", "a series as a NIfTI image with dcm2niix geometry")
