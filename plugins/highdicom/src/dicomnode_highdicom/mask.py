"""MASK_BLUEPRINT: a mask as a plain image series, for PACS that show neither SEG nor overlays.

Written with the default blueprints, a 0/1 mask on a CT parent becomes "a CT"
with RescaleType HU: a viewer shows it as one more CT, black on black. Added
last to the parent's blueprint, :data:`MASK_BLUEPRINT` makes it read as what it
is::

    blueprint = DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT + MASK_BLUEPRINT
    header = NumpyFactory(pipeline_name="bone").build_series_header(parents, blueprint,
                                                                      kwargs={"series_key": "mask"})
    series = NumpyFactory(pipeline_name="bone").build_series(mask_volume, header)

- RescaleType ``US`` (unspecified units) on a CT instead of Hounsfield units
  (the MR image has no rescale; a PET mask gets Units ``NONE``);
- ImageType ``DERIVED\\SECONDARY\\<the parent's third value>\\MASK``;
- a DerivationDescription that says the pixel values are segment numbers;
- WindowCenter 0.5 / WindowWidth 1: 0 black, 1 white. NumpyFactory's default
  ``window="auto"`` replaces it with the window of the data's own range,
  which for a 0/1 mask is the same and for labels 0..n shows every label.

The geometry, pixel format and references come from NumpyFactory as for any
result; give the mask series its own ``series_key`` so its UIDs differ from
another series made from the same parents.
"""

from __future__ import annotations

from typing import Any

from dicomnode.dicom.blueprints import derived_image_type
from dicomnode.dicom.factory import Blueprint, SeriesContext, SeriesElement, StaticElement

__all__ = ["MASK_BLUEPRINT", "MASK_DERIVATION"]

#: what the DerivationDescription of a mask series says
MASK_DERIVATION = "segmentation mask: each pixel holds its segment number, 0 outside every segment"


def _modality(context: SeriesContext) -> str:
    value = context.header_dataset.get("Modality") or (
        context.parent.get("Modality") if context.parent is not None else "")
    return str(value or "")


def _rescale_type(context: SeriesContext) -> str | None:
    # CT is the image whose RescaleType defaults to HU; the MR and PET images have none
    return "US" if _modality(context) == "CT" else None


def _units(context: SeriesContext) -> str | None:
    return "NONE" if _modality(context) == "PT" else None


def _image_type(context: SeriesContext) -> list[str]:
    values: list[Any] = derived_image_type(context)
    values += [""] * max(0, 3 - len(values))
    if not values[2]:
        values[2] = "AXIAL" if _modality(context) == "CT" else "OTHER"
    return [*values[:3], "MASK"]


MASK_BLUEPRINT = Blueprint([
    SeriesElement("ImageType", "CS", _image_type),
    SeriesElement("RescaleType", "LO", _rescale_type),
    SeriesElement("Units", "CS", _units),
    StaticElement("DerivationDescription", "ST", MASK_DERIVATION),
    StaticElement("WindowCenter", "DS", "0.5"),
    StaticElement("WindowWidth", "DS", "1"),
])
