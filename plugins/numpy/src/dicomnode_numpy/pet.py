"""The blueprint a derived PET series needs on top of the default one.

A PET image must carry the PET Series, PET Isotope, NM/PET Patient Orientation
and PET Image modules; a derived PET image takes them from its parent::

    blueprint = DEFAULT_BLUEPRINT + PET_IMAGE_BLUEPRINT

:class:`~dicomnode_numpy.NumpyFactory` adds what it computes itself:
NumberOfSlices, ImageIndex, RescaleIntercept 0 and the geometry.
"""

from __future__ import annotations

from dicomnode.dicom.blueprints import IMAGE_PLANE_BLUEPRINT
from dicomnode.dicom.factory import Blueprint, CopyElement

__all__ = ["PET_IMAGE_BLUEPRINT"]


def _required(*keywords: str) -> list[CopyElement]:
    return [CopyElement(keyword) for keyword in keywords]


def _type2(*keywords: str) -> list[CopyElement]:
    return [CopyElement(keyword, empty_if_missing=True) for keyword in keywords]


def _optional(*keywords: str) -> list[CopyElement]:
    return [CopyElement(keyword, optional=True) for keyword in keywords]


PET_IMAGE_BLUEPRINT = IMAGE_PLANE_BLUEPRINT + Blueprint([
    # PET Series
    *_required("Units", "CountsSource", "SeriesType", "DecayCorrection"),
    *_type2("CollimatorType", "CorrectedImage"),
    *_optional(
        "SUVType", "RandomsCorrectionMethod", "AttenuationCorrectionMethod", "ScatterCorrectionMethod",
        "ReconstructionDiameter", "ConvolutionKernel", "ReconstructionMethod", "AxialAcceptance",
        "AxialMash", "TransverseMash", "DetectorElementSize", "CoincidenceWindowWidth",
        "SecondaryCountsType", "NumberOfTimeSlices", "NumberOfTimeSlots", "NumberOfRRIntervals",
    ),
    # PET Isotope, NM/PET Patient Orientation
    *_type2("RadiopharmaceuticalInformationSequence", "PatientOrientationCodeSequence",
            "PatientGantryRelationshipCodeSequence"),
    *_optional("InterventionDrugInformationSequence"),
    # PET Image: the acquisition's timing and correction factors
    *_required("FrameReferenceTime"),
    *_type2("AcquisitionDate", "AcquisitionTime", "ActualFrameDuration"),
    *_optional("DecayFactor", "DoseCalibrationFactor", "ScatterFractionFactor", "DeadTimeFactor",
               "SliceSensitivityFactor", "TriggerTime", "FrameTime"),
])
