"""The plugin's hook implementations: the module its entry point names. Cheap to import."""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins import OutputSpec, hookimpl


@hookimpl
def dicomnode_outputs() -> Iterator[OutputSpec]:
    yield OutputSpec("file", "dicomnode_file_output.output:FileOutput", "writes datasets to folders atomically")
