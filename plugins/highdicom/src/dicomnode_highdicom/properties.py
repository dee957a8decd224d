"""What a segment is, in codes a PACS understands: the segmented property category and type.

A DICOM segment is described by two codes: its *category* (tissue, anatomical
structure, morphologically abnormal structure, ...: CID 7150) and its *type*
(bone, liver, neoplasm, ...: CID 7151 and friends). Viewers colour, group and
search segments by these codes, so a bare label such as ``"bone"`` is not
enough. :data:`SEGMENT_PROPERTIES` maps common labels to SNOMED CT codes (taken
from pydicom's copy of the DICOM code tables, not typed by hand); a pipeline
extends it with its own::

    from pydicom.sr.coding import Code

    properties = SEGMENT_PROPERTIES.extended({
        "caudate lobe": SegmentProperty(Code("91723000", "SCT", "Anatomical Structure"),
                                        Code("71133005", "SCT", "Caudate lobe of liver")),
    })
    SegFactory(algorithm_name="liver", algorithm_version="2", properties=properties)

Labels are matched without regard to case, spaces, hyphens or underscores:
``"Left-Kidney"``, ``"left kidney"`` and ``"left_kidney"`` are one label.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import attrs
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicomnode.errors import ConfigurationError

__all__ = ["SEGMENT_PROPERTIES", "PropertyTable", "SegmentProperty", "normalise_label"]


def _check_code(_instance: object, attribute: attrs.Attribute[Code], value: object) -> None:
    if not isinstance(value, Code):
        raise ConfigurationError(
            f"SegmentProperty {attribute.name} must be a pydicom Code "
            f"(e.g. Code('272673000', 'SCT', 'Bone')), got {value!r}"
        )


@attrs.frozen
class SegmentProperty:
    """The two codes that say what a segment is: ``category`` (CID 7150) and ``type``."""

    category: Code = attrs.field(validator=_check_code)
    type: Code = attrs.field(validator=_check_code)


def normalise_label(label: str) -> str:
    """The key a label is looked up by: lower case, runs of spaces, ``-`` and ``_`` as one space."""
    return re.sub(r"[\s_\-]+", " ", label.strip().lower())


@attrs.frozen
class PropertyTable(Mapping[str, SegmentProperty]):
    """An immutable table from segment labels to :class:`SegmentProperty`; see :meth:`extended`."""

    _entries: Mapping[str, SegmentProperty] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        normalised: dict[str, SegmentProperty] = {}
        for label, value in self._entries.items():
            if not isinstance(label, str) or not label.strip():
                raise ConfigurationError(f"a segment property label must be non-empty text, got {label!r}")
            if not isinstance(value, SegmentProperty):
                raise ConfigurationError(
                    f"the property of {label!r} must be a SegmentProperty(category, type), got {value!r}"
                )
            normalised[normalise_label(label)] = value
        object.__setattr__(self, "_entries", normalised)

    def __getitem__(self, label: str) -> SegmentProperty:
        return self._entries[normalise_label(label)]

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and normalise_label(label) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def extended(self, entries: Mapping[str, SegmentProperty]) -> PropertyTable:
        """A new table with ``entries`` added; an entry replaces one of the same label."""
        return PropertyTable({**self._entries, **entries})

    def lookup(self, label: str) -> SegmentProperty:
        """The property of ``label``; a :class:`~dicomnode.errors.ConfigurationError` that lists the known labels if there is none."""
        try:
            return self[label]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise ConfigurationError(
                f"no coded property is known for the segment label {label!r}; give the Segment a "
                f"category and a type (pydicom Codes), or extend the table with "
                f"SEGMENT_PROPERTIES.extended({{...}}); known labels: {known}"
            ) from None


_ANATOMY = codes.cid7150.AnatomicalStructure
_TISSUE = codes.cid7150.Tissue
_ABNORMAL = codes.cid7150.MorphologicallyAbnormalStructure
_SUBSTANCE = codes.cid7150.Substance

#: common segment labels and their SNOMED CT category and type
SEGMENT_PROPERTIES = PropertyTable({
    # tissues
    "bone": SegmentProperty(_TISSUE, codes.SCT.Bone),
    "muscle": SegmentProperty(_TISSUE, codes.SCT.Muscle),
    "fat": SegmentProperty(_TISSUE, codes.SCT.AdiposeTissue),
    "adipose tissue": SegmentProperty(_TISSUE, codes.SCT.AdiposeTissue),
    "soft tissue": SegmentProperty(_TISSUE, codes.SCT.SoftTissue),
    "white matter": SegmentProperty(_TISSUE, codes.SCT.WhiteMatter),
    "gray matter": SegmentProperty(_TISSUE, codes.SCT.GrayMatter),
    "grey matter": SegmentProperty(_TISSUE, codes.SCT.GrayMatter),
    # anatomical structures
    **{label: SegmentProperty(_ANATOMY, code) for label, code in {
        "liver": codes.SCT.Liver, "spleen": codes.SCT.Spleen, "kidney": codes.SCT.Kidney,
        "lung": codes.SCT.Lung, "heart": codes.SCT.Heart, "brain": codes.SCT.Brain,
        "aorta": codes.SCT.Aorta, "pancreas": codes.SCT.Pancreas, "prostate": codes.SCT.Prostate,
        "stomach": codes.SCT.Stomach, "gallbladder": codes.SCT.Gallbladder,
        "esophagus": codes.SCT.Esophagus, "trachea": codes.SCT.Trachea, "colon": codes.SCT.Colon,
        "small intestine": codes.SCT.SmallIntestine, "duodenum": codes.SCT.Duodenum,
        "rectum": codes.SCT.Rectum, "thyroid": codes.SCT.Thyroid, "adrenal gland": codes.SCT.AdrenalGland,
        "spinal cord": codes.SCT.SpinalCord, "vertebra": codes.SCT.Vertebra, "rib": codes.SCT.Rib,
        "skull": codes.SCT.Skull, "femur": codes.SCT.Femur, "pelvis": codes.SCT.Pelvis,
        "sternum": codes.SCT.Sternum, "breast": codes.SCT.Breast, "uterus": codes.SCT.Uterus,
        "lymph node": codes.SCT.LymphNode, "inferior vena cava": codes.SCT.InferiorVenaCava,
        "portal vein": codes.SCT.PortalVein, "cerebellum": codes.SCT.Cerebellum, "skin": codes.SCT.Skin,
    }.items()},
    # findings
    **{label: SegmentProperty(_ABNORMAL, code) for label, code in {
        "lesion": codes.SCT.Lesion, "tumor": codes.SCT.Neoplasm, "tumour": codes.SCT.Neoplasm,
        "neoplasm": codes.SCT.Neoplasm, "mass": codes.SCT.Mass, "nodule": codes.SCT.Nodule,
        "cyst": codes.SCT.Cyst, "hemorrhage": codes.SCT.Hemorrhage, "haemorrhage": codes.SCT.Hemorrhage,
        "edema": codes.SCT.Edema, "oedema": codes.SCT.Edema, "necrosis": codes.SCT.Necrosis,
    }.items()},
    "air": SegmentProperty(_SUBSTANCE, codes.SCT.Air),
})
