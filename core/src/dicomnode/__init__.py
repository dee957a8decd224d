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
    from dicomnode.server.grinders import Grinder, IdentityGrinder
    from dicomnode.server.input import AbstractInput
    from dicomnode.server.output import NoOutput, PipelineOutput

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AbstractInput": "dicomnode.server.input",
    "AttrElement": "dicomnode.dicom.factory",
    "Blueprint": "dicomnode.dicom.factory",
    "CopyElement": "dicomnode.dicom.factory",
    "DicomFactory": "dicomnode.dicom.factory",
    "DiscardElement": "dicomnode.dicom.factory",
    "FunctionalElement": "dicomnode.dicom.factory",
    "Grinder": "dicomnode.server.grinders",
    "IdentityGrinder": "dicomnode.server.grinders",
    "InstanceCopyElement": "dicomnode.dicom.factory",
    "InstanceEnvironment": "dicomnode.dicom.factory",
    "InstancedVirtualElement": "dicomnode.dicom.factory",
    "NoOutput": "dicomnode.server.output",
    "PipelineOutput": "dicomnode.server.output",
    "SequenceElement": "dicomnode.dicom.factory",
    "SeriesElement": "dicomnode.dicom.factory",
    "SeriesHeader": "dicomnode.dicom.factory",
    "StaticElement": "dicomnode.dicom.factory",
    "VirtualElement": "dicomnode.dicom.factory",
}

__all__ = [
    "AbstractInput",
    "AttrElement",
    "Blueprint",
    "CopyElement",
    "DicomFactory",
    "DiscardElement",
    "FunctionalElement",
    "Grinder",
    "IdentityGrinder",
    "InstanceCopyElement",
    "InstanceEnvironment",
    "InstancedVirtualElement",
    "NoOutput",
    "PipelineOutput",
    "SequenceElement",
    "SeriesElement",
    "SeriesHeader",
    "StaticElement",
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
