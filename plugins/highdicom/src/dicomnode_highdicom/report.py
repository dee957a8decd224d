"""MeasurementReportFactory: numbers about segments as a TID 1500 measurement report (Comprehensive 3D SR).

A viewer or registry reads a measurement (a volume, a mean CT number) with its
meaning only when it is coded and tied to what was measured. The report holds
one TID 1411 group per segment: the measurements and qualitative evaluations
of that segment, a reference to the segment in the SEG (and through it to the
source images), the segment's tracking identifier (the same UID as in the
SEG) and the algorithm that made them. Every source image and the SEG are
listed as evidence::

    report = MeasurementReportFactory(algorithm_name="bone-threshold", algorithm_version="1.0").build(
        seg, source,
        measurements=[Measurement(segment=1, name="volume", value=212.5, unit="ml")],
    )

Names, derivations and units may be given as text from small tables
(:data:`MEASUREMENT_NAMES`, :data:`DERIVATIONS`, UCUM unit codes) or as
pydicom Codes for anything else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicomnode.errors import ConfigurationError, InvalidDatasetError

from .provenance import ResultFactory, check_sources, without_values

__all__ = ["DERIVATIONS", "MEASUREMENT_NAMES", "UNITS", "Evaluation", "Measurement", "MeasurementReportFactory"]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"

#: measurement names that may be given as text
MEASUREMENT_NAMES: dict[str, Code] = {
    "volume": codes.SCT.Volume,
    "diameter": codes.SCT.Diameter,
    "length": codes.SCT.Length,
    "area": codes.SCT.Area,
    "attenuation": codes.DCM.AttenuationCoefficient,
}
#: how a value was derived from the pixels, as text
DERIVATIONS: dict[str, Code] = {
    "mean": codes.SCT.Mean, "median": codes.SCT.Median, "mode": codes.SCT.Mode,
    "minimum": codes.SCT.Minimum, "maximum": codes.SCT.Maximum,
    "standard deviation": codes.SCT.StandardDeviation,
}
#: UCUM units with their meanings; any other text is taken as a UCUM code that means itself
UNITS: dict[str, str] = {
    "ml": "milliliter", "cm3": "cubic centimeter", "mm3": "cubic millimeter", "l": "liter",
    "mm": "millimeter", "cm": "centimeter", "mm2": "square millimeter", "cm2": "square centimeter",
    "[hnsf'U]": "Hounsfield unit", "1": "no units", "%": "percent", "g/ml": "gram per milliliter",
    "{SUVbw}g/ml": "Standardized Uptake Value body weight", "s": "second", "ms": "millisecond",
}
#: the procedure reported, by the sources' Modality, when none is given
_PROCEDURES = {"CT": codes.LN.CTUnspecifiedBodyRegion, "MR": codes.LN.MRIUnspecifiedBodyRegion,
               "PT": codes.LN.PETUnspecifiedBodyRegion}


def _coded(value: str | Code, table: dict[str, Code], what: str) -> Code:
    if isinstance(value, Code):
        return value
    found = table.get(value.strip().lower()) if isinstance(value, str) else None
    if found is None:
        raise ConfigurationError(
            f"{what} {value!r} is not one of {', '.join(sorted(table))}; give a pydicom Code for others"
        )
    return found


def unit_code(unit: str | Code) -> Code:
    """A UCUM unit as a Code: ``"ml"`` -> ``Code("ml", "UCUM", "milliliter")``."""
    if isinstance(unit, Code):
        return unit
    if not isinstance(unit, str) or not unit.strip() or len(unit) > 16:
        raise ConfigurationError(f"a unit is a UCUM code such as 'ml' or 'mm' (at most 16 characters), got {unit!r}")
    return Code(unit, "UCUM", UNITS.get(unit, unit))


def _check_segment(_instance: object, _attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"segment must be a segment number (1 or more), got {value!r}")


def _check_value(_instance: object, _attribute: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"a measurement's value must be a finite number, got {value!r}")


def _check_name(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, (str, Code)):
        raise ConfigurationError(f"a measurement's name is text or a pydicom Code, got {value!r}")
    _coded(value, MEASUREMENT_NAMES, "measurement name")


def _check_derivation(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        if not isinstance(value, (str, Code)):
            raise ConfigurationError(f"a derivation is text or a pydicom Code, got {value!r}")
        _coded(value, DERIVATIONS, "derivation")


def _check_unit(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    unit_code(value)  # type: ignore[arg-type]


def _check_code(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Code):
        raise ConfigurationError(f"an evaluation's {attribute.name} must be a pydicom Code, got {value!r}")


@attrs.frozen
class Measurement:
    """A number about one segment: ``Measurement(segment=1, name="volume", value=212.5, unit="ml")``.

    ``name`` is text from :data:`MEASUREMENT_NAMES` or a Code; ``unit`` a
    UCUM code (text) or a Code; ``derivation`` (``"mean"``, ``"maximum"``,
    ... or a Code) says how it was computed from the segment's pixels.
    """

    segment: int = attrs.field(validator=_check_segment)
    name: str | Code = attrs.field(validator=_check_name)
    value: float = attrs.field(validator=_check_value)
    unit: str | Code = attrs.field(validator=_check_unit)
    derivation: str | Code | None = attrs.field(default=None, validator=_check_derivation)

    def content(self, algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.Measurement:
        """The TID 300 measurement highdicom encodes."""
        return hd.sr.Measurement(
            name=_coded(self.name, MEASUREMENT_NAMES, "measurement name"),
            value=float(self.value),
            unit=unit_code(self.unit),
            derivation=None if self.derivation is None else _coded(self.derivation, DERIVATIONS, "derivation"),
            algorithm_id=algorithm,
        )


@attrs.frozen
class Evaluation:
    """A coded finding about one segment, e.g. ``Evaluation(1, codes.DCM.Finding, codes.SCT.Present)``."""

    segment: int = attrs.field(validator=_check_segment)
    name: Code = attrs.field(validator=_check_code)
    value: Code = attrs.field(validator=_check_code)


def _check_procedure(_instance: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Code):
        raise ConfigurationError(f"procedure_reported must be a pydicom Code or None, got {value!r}")


@attrs.frozen(kw_only=True)
class MeasurementReportFactory(ResultFactory):
    """Builds a TID 1500 measurement report (Comprehensive 3D SR) about the segments of a SEG.

    Parameters (besides those of :class:`~dicomnode_highdicom.provenance.ResultFactory`)
    ----------
    procedure_reported:
        a Code; by default the "unspecified body region" procedure of the
        sources' modality (CT, MR, PET), else "imaging procedure".
    image_library:
        also list the source images in the report's image library (TID
        1600) with their descriptors. Off by default: highdicom takes about
        0.1 s per image for it, and the report references the images anyway
        (as evidence and as the source images of each segment).

    The report is COMPLETE and UNVERIFIED: a program made it and nobody has
    signed it. The SeriesNumber defaults to the source series' plus 1001.
    """

    procedure_reported: Code | None = attrs.field(default=None, validator=_check_procedure)
    image_library: bool = False

    kind = "sr"
    series_offset = 1001

    def build(
        self,
        seg: Dataset,
        source: Sequence[Dataset],
        *,
        measurements: Sequence[Measurement] = (),
        evaluations: Sequence[Evaluation] = (),
    ) -> Dataset:
        """The report of ``measurements`` and ``evaluations`` on the segments of ``seg``, one Dataset.

        ``seg`` is the Segmentation the numbers are about (from
        :class:`~dicomnode_highdicom.SegFactory`); ``source`` its source images.
        Every segment a measurement or evaluation names must be in ``seg``.
        """
        sources = check_sources(source, "a measurement report")
        segments = self._segments(seg)
        items: list[Measurement | Evaluation] = [*measurements, *evaluations]
        if not items:
            raise ConfigurationError("a measurement report needs at least one Measurement or Evaluation")
        for item in items:
            if not isinstance(item, (Measurement, Evaluation)):
                raise ConfigurationError(f"measurements and evaluations are Measurement and Evaluation, got {item!r}")
            if item.segment not in segments:
                raise InvalidDatasetError(
                    f"{type(item).__name__} of segment {item.segment}: the segmentation has no such segment "
                    f"(it has {', '.join(f'{n} ({_label(s)})' for n, s in sorted(segments.items()))})"
                )
        algorithm = hd.sr.AlgorithmIdentification(
            name=self.algorithm_name, version=self.algorithm_version, family=self.algorithm_family,
            manufacturer=self.manufacturer,
            parameters=[f"{k}={v}" for k, v in (self.algorithm_parameters() or {}).items()] or None,
        )
        series_uid = self.series_uid([seg, *sources])
        groups = []
        for number in sorted({item.segment for item in items}):
            groups.append(self._group(seg, number, segments[number], series_uid, algorithm,
                                      [m for m in measurements if m.segment == number],
                                      [e for e in evaluations if e.segment == number]))
        try:
            content = hd.sr.MeasurementReport(
                observation_context=self._observation_context(),
                procedure_reported=self.procedure_reported or _PROCEDURES.get(
                    str(sources[0].get("Modality", "")), codes.SCT.ImagingProcedure),
                imaging_measurements=groups,
                referenced_images=sources if self.image_library else None,
            )
            report = hd.sr.Comprehensive3DSR(
                evidence=[seg, *sources],
                content=content[0],
                series_instance_uid=series_uid,
                series_number=self.new_series_number(sources[0]),
                sop_instance_uid=self.instance_uid(series_uid),
                instance_number=1,
                is_complete=True,
                is_final=False,
                is_verified=False,
                series_description=self.series_description or f"{self.algorithm_name} measurements"[:64],
                contributing_equipment=[self.contributing_equipment()],
                **self.equipment(),
            )
        except (ValueError, TypeError, AttributeError) as error:
            raise InvalidDatasetError(
                f"highdicom could not encode the measurement report: {without_values(error)}") from error
        return self.checked(report)

    def _segments(self, seg: Dataset) -> dict[int, Dataset]:
        sop_class = str(seg.get("SOPClassUID", "")) if isinstance(seg, Dataset) else ""
        if sop_class == LABEL_MAP_SEGMENTATION_STORAGE:
            # validators (dciodvfy) do not yet accept a segment reference into the 2024 label map class
            raise InvalidDatasetError(
                "a measurement report references segments of a Segmentation Storage object; this is a Label "
                "Map Segmentation: make the SEG the report is about with segmentation_type 'BINARY' (or "
                "'FRACTIONAL')"
            )
        if sop_class != SEGMENTATION_STORAGE:
            raise InvalidDatasetError(
                "a measurement report is about the segments of a Segmentation: pass the SEG dataset "
                f"(SOP class {SEGMENTATION_STORAGE}), got "
                + (f"SOP class {sop_class or 'none'}" if isinstance(seg, Dataset) else type(seg).__name__)
            )
        return {int(item.SegmentNumber): item for item in seg.SegmentSequence if int(item.SegmentNumber) > 0}

    def _observation_context(self) -> hd.sr.ObservationContext:
        device = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=self.uids.derived_uid("device", [self.algorithm_name, self.algorithm_version]),
            name=self.algorithm_name,
            manufacturer_name=self.manufacturer,
            model_name=self.algorithm_version,
            serial_number=self.model_hash,
        )
        return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device))

    def _group(self, seg: Dataset, number: int, segment: Dataset, series_uid: str,
               algorithm: hd.sr.AlgorithmIdentification, measurements: list[Measurement],
               evaluations: list[Evaluation]) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
        """One TID 1411 group: the segment's numbers, a reference to it, its tracking identifier."""
        tracking_uid = segment.get("TrackingUID") or self.tracking_uid(series_uid, number)
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=str(tracking_uid), identifier=_label(segment)),
            referenced_segment=referenced_segment(seg, number),
            finding_type=_first_code(segment, "SegmentedPropertyTypeCodeSequence"),
            finding_category=_first_code(segment, "SegmentedPropertyCategoryCodeSequence"),
            algorithm_id=algorithm,
            measurements=[m.content(algorithm) for m in measurements] or None,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(e.name, e.value) for e in evaluations] or None,
        )


def referenced_segment(seg: Dataset, number: int) -> hd.sr.ReferencedSegment:
    """The TID 1411 reference to segment ``number`` of ``seg``, with the source images its frames derive from.

    Written here rather than with highdicom's ``ReferencedSegment.from_segmentation``, which looks for
    the segment of each frame in the per-frame groups only: a one-segment SEG (as highdicom writes it)
    keeps it in the shared group.
    """
    shared = seg.SharedFunctionalGroupsSequence[0].get("SegmentIdentificationSequence")
    images: dict[str, tuple[str, set[int]]] = {}
    for item in seg.PerFrameFunctionalGroupsSequence:
        identification = item.get("SegmentIdentificationSequence") or shared
        if identification and int(identification[0].ReferencedSegmentNumber) != number:
            continue
        for derivation in item.get("DerivationImageSequence") or []:
            for source in derivation.get("SourceImageSequence") or []:
                uid = str(source.ReferencedSOPInstanceUID)
                _, frames = images.setdefault(uid, (str(source.ReferencedSOPClassUID), set()))
                if "ReferencedFrameNumber" in source:
                    frames.add(int(source.ReferencedFrameNumber))
    if not images:  # frames on their own grid: the series they were made from
        series = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
        return hd.sr.ReferencedSegment(str(seg.SOPClassUID), str(seg.SOPInstanceUID), number,
                                       source_series=hd.sr.SourceSeriesForSegmentation(series))
    return hd.sr.ReferencedSegment(
        str(seg.SOPClassUID), str(seg.SOPInstanceUID), number,
        source_images=[hd.sr.SourceImageForSegmentation(sop_class, uid, sorted(frames) or None)
                       for uid, (sop_class, frames) in images.items()],
    )


def _label(segment: Dataset) -> str:
    return str(segment.get("SegmentLabel", f"segment {segment.get('SegmentNumber')}"))


def _first_code(segment: Dataset, keyword: str) -> hd.sr.CodedConcept | None:
    items = segment.get(keyword)
    return hd.sr.CodedConcept.from_dataset(items[0]) if items else None
