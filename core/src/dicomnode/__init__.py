"""dicomnode: turn an image-processing program into a clinical DICOM node.

The public API is re-exported here and imported lazily, so ``import
dicomnode`` stays cheap (no numpy, no network stack) until a name is used::

    from dicomnode import AbstractInput, NoOutput
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dicomnode.__about__ import __version__

if TYPE_CHECKING:
    from dicomnode.dicom.factory import (
        AttrElement,
        Blueprint,
        CopyElement,
        DicomFactory,
        DiscardElement,
        FunctionalElement,
        InstanceCopyElement,
        InstancedVirtualElement,
        InstanceEnvironment,
        SequenceElement,
        SeriesElement,
        SeriesHeader,
        StaticElement,
        VirtualElement,
    )
    from dicomnode.server.grinders import (
        DicomTreeGrinder,
        Grinder,
        IdentityGrinder,
        ListGrinder,
        ManyGrinder,
        TagGrinder,
    )
    from dicomnode.server.input import AbstractInput, DynamicInput
    from dicomnode.server.nodes import (
        AbstractPipeline,
        AbstractQueuedPipeline,
        AbstractThreadedPipeline,
    )
    from dicomnode.server.output import NoOutput, OutputContext, PipelineOutput
    from dicomnode.server.pipeline_tree import InputContainer

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AbstractInput": "dicomnode.server.input",
    "AbstractPipeline": "dicomnode.server.nodes",
    "AbstractQueuedPipeline": "dicomnode.server.nodes",
    "AbstractThreadedPipeline": "dicomnode.server.nodes",
    "AttrElement": "dicomnode.dicom.factory",
    "Blueprint": "dicomnode.dicom.factory",
    "CopyElement": "dicomnode.dicom.factory",
    "DicomFactory": "dicomnode.dicom.factory",
    "DicomTreeGrinder": "dicomnode.server.grinders",
    "DiscardElement": "dicomnode.dicom.factory",
    "DynamicInput": "dicomnode.server.input",
    "FunctionalElement": "dicomnode.dicom.factory",
    "Grinder": "dicomnode.server.grinders",
    "IdentityGrinder": "dicomnode.server.grinders",
    "InputContainer": "dicomnode.server.pipeline_tree",
    "InstanceCopyElement": "dicomnode.dicom.factory",
    "InstanceEnvironment": "dicomnode.dicom.factory",
    "InstancedVirtualElement": "dicomnode.dicom.factory",
    "ListGrinder": "dicomnode.server.grinders",
    "ManyGrinder": "dicomnode.server.grinders",
    "NoOutput": "dicomnode.server.output",
    "OutputContext": "dicomnode.server.output",
    "PipelineOutput": "dicomnode.server.output",
    "SequenceElement": "dicomnode.dicom.factory",
    "SeriesElement": "dicomnode.dicom.factory",
    "SeriesHeader": "dicomnode.dicom.factory",
    "StaticElement": "dicomnode.dicom.factory",
    "TagGrinder": "dicomnode.server.grinders",
    "VirtualElement": "dicomnode.dicom.factory",
}

__all__ = [
    "AbstractInput",
    "AbstractPipeline",
    "AbstractQueuedPipeline",
    "AbstractThreadedPipeline",
    "AttrElement",
    "Blueprint",
    "CopyElement",
    "DicomFactory",
    "DicomTreeGrinder",
    "DiscardElement",
    "DynamicInput",
    "FunctionalElement",
    "Grinder",
    "IdentityGrinder",
    "InputContainer",
    "InstanceCopyElement",
    "InstanceEnvironment",
    "InstancedVirtualElement",
    "ListGrinder",
    "ManyGrinder",
    "NoOutput",
    "OutputContext",
    "PipelineOutput",
    "SequenceElement",
    "SeriesElement",
    "SeriesHeader",
    "StaticElement",
    "TagGrinder",
    "VirtualElement",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dicomnode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
