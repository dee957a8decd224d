"""The extension surface: everything a plugin or a pipeline subclasses or registers.

Plugins subclass what is here, register it with the records and the hook
marker of :mod:`dicomnode.plugins`, and use the toolkit (:mod:`dicomnode.dicom`)
and the network helpers (:mod:`dicomnode.net`) — never :mod:`dicomnode.server`::

    from dicomnode.extension import AbstractInput, Grinder, PipelineOutput
    from dicomnode.plugins import GrinderSpec, hookimpl

This package sits below the plugin machinery and the server in the import
graph: nothing here imports either (docs/architecture.md).
"""

from dicomnode.dicom.factory import VirtualElement
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.executors import Executor, Job, PipelineIdentity
from dicomnode.extension.grinders import (
    DicomTreeGrinder,
    Grinder,
    IdentityGrinder,
    ListGrinder,
    ManyGrinder,
    TagGrinder,
    resolve_tag,
)
from dicomnode.extension.handles import IngestResult, NodeHandle, Source
from dicomnode.extension.inputs import AbstractInput, ConfiguredInput, DynamicInput
from dicomnode.extension.outputs import NoOutput, OutboxEntry, OutputContext, PipelineOutput
from dicomnode.extension.retry import Backoff

__all__ = [
    "AbstractInput",
    "Backoff",
    "ConfiguredInput",
    "DicomTreeGrinder",
    "DynamicInput",
    "Executor",
    "Grinder",
    "IdentityGrinder",
    "IngestResult",
    "InputContainer",
    "Job",
    "ListGrinder",
    "ManyGrinder",
    "NoOutput",
    "NodeHandle",
    "OutboxEntry",
    "OutputContext",
    "PipelineIdentity",
    "PipelineOutput",
    "Source",
    "TagGrinder",
    "VirtualElement",
    "resolve_tag",
]
