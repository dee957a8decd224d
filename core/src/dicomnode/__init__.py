"""dicomnode: turn an image-processing program into a clinical DICOM node.

The public API is re-exported here and imported lazily, so ``import
dicomnode`` stays cheap (no numpy, no network stack) until a name is used::

    from dicomnode import AbstractInput, NoOutput
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dicomnode.__about__ import __version__
from dicomnode._lazy import lazy_exports

if TYPE_CHECKING:
    from dicomnode.dicom.anonymization import anonymize
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
    from dicomnode.dicom.lazy import LazyDataset
    from dicomnode.dicom.tree import (
        DicomTree,
        IdentityMapping,
        ImageTreeInterface,
        PatientTree,
        SeriesTree,
        StudyTree,
    )
    from dicomnode.extension.containers import InputContainer
    from dicomnode.extension.grinders import (
        DicomTreeGrinder,
        Grinder,
        IdentityGrinder,
        ListGrinder,
        ManyGrinder,
        TagGrinder,
    )
    from dicomnode.extension.inputs import AbstractInput, DynamicInput
    from dicomnode.extension.outputs import NoOutput, OutputContext, PipelineOutput
    from dicomnode.net import Address, send_datasets
    from dicomnode.server.nodes import (
        AbstractPipeline,
        AbstractQueuedPipeline,
        AbstractThreadedPipeline,
    )

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AbstractInput": "dicomnode.extension.inputs",
    "AbstractPipeline": "dicomnode.server.nodes",
    "AbstractQueuedPipeline": "dicomnode.server.nodes",
    "AbstractThreadedPipeline": "dicomnode.server.nodes",
    "Address": "dicomnode.net",
    "AttrElement": "dicomnode.dicom.factory",
    "Blueprint": "dicomnode.dicom.factory",
    "CopyElement": "dicomnode.dicom.factory",
    "DicomFactory": "dicomnode.dicom.factory",
    "DicomTree": "dicomnode.dicom.tree",
    "DicomTreeGrinder": "dicomnode.extension.grinders",
    "DiscardElement": "dicomnode.dicom.factory",
    "DynamicInput": "dicomnode.extension.inputs",
    "FunctionalElement": "dicomnode.dicom.factory",
    "Grinder": "dicomnode.extension.grinders",
    "IdentityGrinder": "dicomnode.extension.grinders",
    "IdentityMapping": "dicomnode.dicom.tree",
    "ImageTreeInterface": "dicomnode.dicom.tree",
    "InputContainer": "dicomnode.extension.containers",
    "InstanceCopyElement": "dicomnode.dicom.factory",
    "InstanceEnvironment": "dicomnode.dicom.factory",
    "InstancedVirtualElement": "dicomnode.dicom.factory",
    "LazyDataset": "dicomnode.dicom.lazy",
    "ListGrinder": "dicomnode.extension.grinders",
    "ManyGrinder": "dicomnode.extension.grinders",
    "NoOutput": "dicomnode.extension.outputs",
    "OutputContext": "dicomnode.extension.outputs",
    "PatientTree": "dicomnode.dicom.tree",
    "PipelineOutput": "dicomnode.extension.outputs",
    "SequenceElement": "dicomnode.dicom.factory",
    "SeriesElement": "dicomnode.dicom.factory",
    "SeriesHeader": "dicomnode.dicom.factory",
    "SeriesTree": "dicomnode.dicom.tree",
    "StaticElement": "dicomnode.dicom.factory",
    "StudyTree": "dicomnode.dicom.tree",
    "TagGrinder": "dicomnode.extension.grinders",
    "VirtualElement": "dicomnode.dicom.factory",
    "anonymize": "dicomnode.dicom.anonymization",
    "send_datasets": "dicomnode.net",
}

__all__ = [
    "AbstractInput",
    "AbstractPipeline",
    "AbstractQueuedPipeline",
    "AbstractThreadedPipeline",
    "Address",
    "AttrElement",
    "Blueprint",
    "CopyElement",
    "DicomFactory",
    "DicomTree",
    "DicomTreeGrinder",
    "DiscardElement",
    "DynamicInput",
    "FunctionalElement",
    "Grinder",
    "IdentityGrinder",
    "IdentityMapping",
    "ImageTreeInterface",
    "InputContainer",
    "InstanceCopyElement",
    "InstanceEnvironment",
    "InstancedVirtualElement",
    "LazyDataset",
    "ListGrinder",
    "ManyGrinder",
    "NoOutput",
    "OutputContext",
    "PatientTree",
    "PipelineOutput",
    "SequenceElement",
    "SeriesElement",
    "SeriesHeader",
    "SeriesTree",
    "StaticElement",
    "StudyTree",
    "TagGrinder",
    "VirtualElement",
    "__version__",
    "anonymize",
    "send_datasets",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
