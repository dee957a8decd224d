"""The plugin's hook implementations: the module its entry point names. Cheap to import."""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins import OutputSpec, hookimpl


@hookimpl
def dicomnode_outputs() -> Iterator[OutputSpec]:
    yield OutputSpec("dicom", "dicomnode_dicom_output.output:DicomOutput", "sends datasets by C-STORE, retrying, with an outbox")
