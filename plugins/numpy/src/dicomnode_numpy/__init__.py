"""NumPy volumes for dicomnode.

Names are imported on first use, so discovering the plugin stays cheap.

Besides the grinder, the factory and the volume, the package exports the
steps :class:`NumpyGrinder` is made of, for plugins that grind differently
(dicomnode-nifti): :func:`frames_of` (one :class:`Frame` per 2D image),
:func:`split_mosaics` (Siemens mosaics cut into slices), :func:`arrange`
(a :class:`StackLayout`: the frames in volume order with their geometry)
and :func:`fill` (the voxels, read into one preallocated array); and
:func:`text_value` / :func:`int_value`, which read a header value from its
encoded bytes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "NumpyGrinder": "dicomnode_numpy.grinder",
    "NumpyFactory": "dicomnode_numpy.factory",
    "NumpyCaller": "dicomnode_numpy.factory",
    "IMAGE_STORAGE": "dicomnode_numpy.factory",
    "Volume": "dicomnode_numpy.volume",
    "Frame": "dicomnode_numpy.frames",
    "frames_of": "dicomnode_numpy.frames",
    "split_mosaics": "dicomnode_numpy.mosaic",
    "StackLayout": "dicomnode_numpy.geometry",
    "arrange": "dicomnode_numpy.geometry",
    "fill": "dicomnode_numpy.pixels",
    "unloaded_datasets": "dicomnode_numpy.pixels",
    "text_value": "dicomnode_numpy.header_values",
    "int_value": "dicomnode_numpy.header_values",
}

__all__ = [
    "IMAGE_STORAGE",
    "Frame",
    "NumpyCaller",
    "NumpyFactory",
    "NumpyGrinder",
    "StackLayout",
    "Volume",
    "arrange",
    "fill",
    "frames_of",
    "int_value",
    "split_mosaics",
    "text_value",
    "unloaded_datasets",
]

if TYPE_CHECKING:  # at run time the names come from __getattr__, on first use
    from .factory import IMAGE_STORAGE, NumpyCaller, NumpyFactory
    from .frames import Frame, frames_of
    from .geometry import StackLayout, arrange
    from .grinder import NumpyGrinder
    from .header_values import int_value, text_value
    from .mosaic import split_mosaics
    from .pixels import fill, unloaded_datasets
    from .volume import Volume


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
