"""The extension surface: everything a plugin or a pipeline subclasses or registers.

Plugins subclass what is here, register it with the records and the hook
marker of :mod:`dicomnode.plugins`, and use the toolkit (:mod:`dicomnode.dicom`)
and the network helpers (:mod:`dicomnode.net`) — never :mod:`dicomnode.server`::

    from dicomnode.extension import AbstractInput, Grinder, PipelineOutput
    from dicomnode.plugins import GrinderSpec, hookimpl

This package sits below the plugin machinery and the server in the import
graph: nothing here imports either (docs/architecture.md).

Every name is imported on first use, so that a node's start builds only
what it uses (not, say, the toolkit's element classes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dicomnode._lazy import lazy_exports

if TYPE_CHECKING:
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

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AbstractInput": "dicomnode.extension.inputs",
    "Backoff": "dicomnode.extension.retry",
    "ConfiguredInput": "dicomnode.extension.inputs",
    "DicomTreeGrinder": "dicomnode.extension.grinders",
    "DynamicInput": "dicomnode.extension.inputs",
    "Executor": "dicomnode.extension.executors",
    "Grinder": "dicomnode.extension.grinders",
    "IdentityGrinder": "dicomnode.extension.grinders",
    "IngestResult": "dicomnode.extension.handles",
    "InputContainer": "dicomnode.extension.containers",
    "Job": "dicomnode.extension.executors",
    "ListGrinder": "dicomnode.extension.grinders",
    "ManyGrinder": "dicomnode.extension.grinders",
    "NoOutput": "dicomnode.extension.outputs",
    "NodeHandle": "dicomnode.extension.handles",
    "OutboxEntry": "dicomnode.extension.outputs",
    "OutputContext": "dicomnode.extension.outputs",
    "PipelineIdentity": "dicomnode.extension.executors",
    "PipelineOutput": "dicomnode.extension.outputs",
    "Source": "dicomnode.extension.handles",
    "TagGrinder": "dicomnode.extension.grinders",
    "VirtualElement": "dicomnode.dicom.factory",
    "resolve_tag": "dicomnode.extension.grinders",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
