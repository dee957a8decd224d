"""The extension surface: everything a plugin or a pipeline subclasses or registers.

Plugins import from here (and from the toolkit, :mod:`dicomnode.dicom`, and
:mod:`dicomnode.net`), never from :mod:`dicomnode.server`::

    from dicomnode.extension import AbstractInput, Grinder, PipelineOutput, GrinderSpec, hookimpl

This package sits below the server in the import graph: nothing here imports
:mod:`dicomnode.server`.
"""

from dicomnode.dicom.factory import VirtualElement
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.grinders import (
    DicomTreeGrinder,
    Grinder,
    IdentityGrinder,
    ListGrinder,
    ManyGrinder,
    TagGrinder,
    resolve_tag,
)
from dicomnode.extension.inputs import AbstractInput, DynamicInput
from dicomnode.extension.outputs import NoOutput, OutputContext, PipelineOutput
from dicomnode.plugins import (
    CommandSpec,
    GrinderSpec,
    InputSpec,
    OutputSpec,
    PluginError,
    VirtualElementSpec,
    get_registry,
    hookimpl,
)

__all__ = [
    "AbstractInput",
    "CommandSpec",
    "DicomTreeGrinder",
    "DynamicInput",
    "Grinder",
    "GrinderSpec",
    "IdentityGrinder",
    "InputContainer",
    "InputSpec",
    "ListGrinder",
    "ManyGrinder",
    "NoOutput",
    "OutputContext",
    "OutputSpec",
    "PipelineOutput",
    "PluginError",
    "TagGrinder",
    "VirtualElement",
    "VirtualElementSpec",
    "get_registry",
    "hookimpl",
    "resolve_tag",
]
