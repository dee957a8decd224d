"""The core's own contributions, registered through the same hooks as any plugin.

Targets are lazy strings so that listing plugins imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterator

from dicomnode.plugins._hookspecs import hookimpl
from dicomnode.plugins._specs import (
    CommandSpec,
    ExecutorSpec,
    GrinderSpec,
    InputSpec,
    OutputSpec,
    VirtualElementSpec,
)

_GRINDERS = "dicomnode.extension.grinders"
_FACTORY = "dicomnode.dicom.factory"


@hookimpl
def dicomnode_grinders() -> Iterator[GrinderSpec]:
    yield GrinderSpec("identity", f"{_GRINDERS}:IdentityGrinder", "the datasets as they are")
    yield GrinderSpec("list", f"{_GRINDERS}:ListGrinder", "the datasets as a list")
    yield GrinderSpec("dicom-tree", f"{_GRINDERS}:DicomTreeGrinder", "the datasets as a patient/study/series tree")
    yield GrinderSpec("tag", f"{_GRINDERS}:TagGrinder", "the values of some tags, one dict per dataset")
    yield GrinderSpec("many", f"{_GRINDERS}:ManyGrinder", "several grinders over the same datasets, as a tuple")


@hookimpl
def dicomnode_virtual_elements() -> Iterator[VirtualElementSpec]:
    yield VirtualElementSpec("static", f"{_FACTORY}:StaticElement", "a fixed value")
    yield VirtualElementSpec("copy", f"{_FACTORY}:CopyElement", "the value of the same tag in the parent")
    yield VirtualElementSpec("attr", f"{_FACTORY}:AttrElement", "an attribute of the factory")
    yield VirtualElementSpec("discard", f"{_FACTORY}:DiscardElement", "leaves the tag out")
    yield VirtualElementSpec("series", f"{_FACTORY}:SeriesElement", "a value made once per series")
    yield VirtualElementSpec("sequence", f"{_FACTORY}:SequenceElement", "a sequence of items built from blueprints")
    yield VirtualElementSpec("functional", f"{_FACTORY}:FunctionalElement", "a value computed for every instance")
    yield VirtualElementSpec(
        "instance-copy", f"{_FACTORY}:InstanceCopyElement", "the value of the parent instance with the same number"
    )


@hookimpl
def dicomnode_outputs() -> Iterator[OutputSpec]:
    yield OutputSpec("none", "dicomnode.extension.outputs:NoOutput", "sends nothing")


@hookimpl
def dicomnode_inputs() -> Iterator[InputSpec]:
    yield InputSpec("dicom", "dicomnode.extension.inputs:AbstractInput", "DICOM images with required tags and values")
    yield InputSpec("dynamic", "dicomnode.extension.inputs:DynamicInput", "several series keyed by a tag, ground to a dict")


@hookimpl
def dicomnode_executors() -> Iterator[ExecutorSpec]:
    yield ExecutorSpec("threads", "dicomnode.server.executors:ThreadsExecutor",
                       "process() in the node's own worker threads (the default)")
    yield ExecutorSpec("process", "dicomnode.server.executors:ProcessExecutor",
                       "each job in a freshly spawned process, in a work folder of its own")


@hookimpl
def dicomnode_commands() -> Iterator[CommandSpec]:
    yield CommandSpec("plugins", "dicomnode.cli.plugins:configure", "list the installed plugins, or check them")
    yield CommandSpec("run", "dicomnode.cli.run:configure", "start a pipeline (file.py, module:Class or .toml) as a node")
    yield CommandSpec("demo", "dicomnode.cli.demo:configure", "run a demo node end to end on a synthetic CT study")
    yield CommandSpec("status", "dicomnode.cli.status:configure",
                      "what a node holds and does, from its admin endpoint or its data directory")
    yield CommandSpec("history", "dicomnode.cli.history:configure", "what the node did to a patient, as a timeline")
    yield CommandSpec("quarantine", "dicomnode.cli.quarantine:configure",
                      "list failed jobs, show one with its traceback, or run one again")
    yield CommandSpec("outbox", "dicomnode.cli.outbox:configure", "list undelivered results, or retry them")
    yield CommandSpec("store", "dicomnode.cli.store:configure", "send DICOM files and folders to a node (C-STORE)")
    yield CommandSpec("echo", "dicomnode.cli.echo:configure", "check that a DICOM node answers (C-ECHO)")
    yield CommandSpec("show", "dicomnode.cli.show:configure", "print a readable dump of DICOM files")
    yield CommandSpec(
        "anonymize", "dicomnode.cli.anonymize:configure",
        "anonymize DICOM files or folders, recording a reversible mapping",
    )
