"""The plugin's hook implementations: the module its entry point names. Cheap to import."""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins import InputSpec, hookimpl


@hookimpl
def dicomnode_inputs() -> Iterator[InputSpec]:
    yield InputSpec("historic", "dicomnode_historic_input.input:HistoricAbstractInput", "prior studies fetched from a PACS")
