"""Hook implementations of the example plugin; importing this must stay cheap."""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins import (
    CommandSpec,
    ExecutorSpec,
    GrinderSpec,
    OutputSpec,
    ServiceSpec,
    hookimpl,
)


@hookimpl
def dicomnode_grinders() -> Iterator[GrinderSpec]:
    yield GrinderSpec("example-modalities", "dicomnode_example.grinders:ModalityGrinder",
                      "the sorted set of modalities in an input")


@hookimpl
def dicomnode_outputs() -> Iterator[OutputSpec]:
    yield OutputSpec("example-log", "dicomnode_example.outputs:LogOutput", "logs a line instead of sending")


@hookimpl
def dicomnode_commands() -> Iterator[CommandSpec]:
    yield CommandSpec("example-hello", "dicomnode_example.cli:configure", "prints a greeting")


@hookimpl
def dicomnode_executors() -> Iterator[ExecutorSpec]:
    yield ExecutorSpec("example-counting", "dicomnode_example.executors:CountingExecutor",
                       "runs jobs here and counts them")


@hookimpl
def dicomnode_services() -> Iterator[ServiceSpec]:
    yield ServiceSpec("example-folder", "dicomnode_example.services:FolderService",
                      "ingests DICOM files dropped into a folder")
