"""The core's own contributions, registered through the same hooks as any plugin.

Targets are lazy strings so that listing plugins imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins._hookspecs import hookimpl
from dicomnode.plugins._specs import (
    CommandSpec,
    GrinderSpec,
    InputSpec,
    OutputSpec,
    VirtualElementSpec,
)

_GRINDERS = "dicomnode.server.grinders"
_FACTORY = "dicomnode.dicom.factory"


@hookimpl
def dicomnode_grinders() -> Iterator[GrinderSpec]:
    yield GrinderSpec("identity", f"{_GRINDERS}:IdentityGrinder", "the datasets as they are")


@hookimpl
def dicomnode_virtual_elements() -> Iterator[VirtualElementSpec]:
    yield VirtualElementSpec("static", f"{_FACTORY}:StaticElement", "a fixed value")


@hookimpl
def dicomnode_outputs() -> Iterator[OutputSpec]:
    yield OutputSpec("none", "dicomnode.server.output:NoOutput", "sends nothing")


@hookimpl
def dicomnode_inputs() -> Iterator[InputSpec]:
    yield InputSpec("dicom", "dicomnode.server.input:AbstractInput", "any DICOM image")


@hookimpl
def dicomnode_commands() -> Iterator[CommandSpec]:
    yield CommandSpec("plugins", "dicomnode.cli.plugins:configure", "list the installed plugins, or check them")
