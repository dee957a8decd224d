"""Standard AI results for dicomnode: DICOM SEG, TID 1500 measurement reports, secondary captures.

highdicom encodes the objects; this package gives them the right geometry,
coded descriptions, provenance and stable UIDs. Names are imported on first
use, so discovering the plugin stays cheap (highdicom takes a second to import).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "SegFactory": "dicomnode_highdicom.seg",
    "Segment": "dicomnode_highdicom.seg",
    "MeasurementReportFactory": "dicomnode_highdicom.report",
    "Measurement": "dicomnode_highdicom.report",
    "Evaluation": "dicomnode_highdicom.report",
    "SecondaryCaptureFactory": "dicomnode_highdicom.capture",
    "MASK_BLUEPRINT": "dicomnode_highdicom.mask",
    "SEGMENT_PROPERTIES": "dicomnode_highdicom.properties",
    "PropertyTable": "dicomnode_highdicom.properties",
    "SegmentProperty": "dicomnode_highdicom.properties",
    "ResultFactory": "dicomnode_highdicom.provenance",
    "hash_model_file": "dicomnode_highdicom.provenance",
}

__all__ = [
    "MASK_BLUEPRINT",
    "SEGMENT_PROPERTIES",
    "Evaluation",
    "Measurement",
    "MeasurementReportFactory",
    "PropertyTable",
    "ResultFactory",
    "SecondaryCaptureFactory",
    "SegFactory",
    "Segment",
    "SegmentProperty",
    "hash_model_file",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
