"""MeasurementReportFactory: a TID 1500 report whose references resolve to the SEG's segments and the images."""

from __future__ import annotations

import random
from pathlib import Path

import attrs
import highdicom as hd
import pytest
from pydicom import Dataset, dcmread
from pydicom.sr.codedict import codes
from result_checks import blob_mask, dciodvfy, source_and_volume

from dicomnode.errors import ConfigurationError, InvalidDatasetError
from dicomnode_highdicom import Evaluation, Measurement, MeasurementReportFactory, SegFactory

pytestmark = pytest.mark.plugin("highdicom")

NAME = {"algorithm_name": "organs", "algorithm_version": "2.1"}


def seg_and_sources(case: str = "shuffled-ct") -> tuple[Dataset, list[Dataset]]:
    sources, volume = source_and_volume(case)
    mask = attrs.evolve(volume, array=blob_mask(volume.array.shape, 2))
    return SegFactory(**NAME).build(mask, sources, segments=["liver", "spleen"]), sources


def report(seg: Dataset, sources: list[Dataset], **options: object) -> Dataset:
    return MeasurementReportFactory(**NAME, **options).build(  # type: ignore[arg-type]
        seg, sources,
        measurements=[Measurement(1, "volume", 212.5, "ml"),
                      Measurement(2, "attenuation", 48.0, "[hnsf'U]", derivation="mean")],
        evaluations=[Evaluation(2, codes.DCM.Finding, codes.SCT.Present)],
    )


def evidence(sr: Dataset) -> set[str]:
    return {str(item.ReferencedSOPInstanceUID)
            for study in sr.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}


@pytest.mark.parametrize("case", ["axial-ct", "sagittal-mr", "oblique-mr", "shuffled-ct"])
def test_the_report_has_no_dciodvfy_error(case: str, tmp_path: Path) -> None:
    seg, sources = seg_and_sources(case)
    errors, _ = dciodvfy(report(seg, sources), tmp_path / "sr.dcm")
    assert errors == [], "\n".join(errors)


def test_every_reference_resolves_to_the_seg_or_a_source_image(tmp_path: Path) -> None:
    seg, sources = seg_and_sources()
    sr = report(seg, sources, image_library=True)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    back = hd.sr.Comprehensive3DSR.from_dataset(dcmread(tmp_path / "sr.dcm"))
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    images = {str(ds.SOPInstanceUID) for ds in sources}
    assert evidence(back) == images | {str(seg.SOPInstanceUID)}
    [library] = [i for i in back.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Image Library"]
    assert {str(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            for group in library.ContentSequence for entry in group.ContentSequence
            if entry.ValueType == "IMAGE"} == images
    groups = back.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    labels = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    for group in groups:
        assert group.reference_type.value == "121191"  # Referenced Segment
        items = group[0].ContentSequence
        [segment_item] = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "121191"]
        source_items = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "121233"]
        assert segment_item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
        number = int(segment_item.ReferencedSOPSequence[0].ReferencedSegmentNumber)
        assert group.tracking_uid == labels[number].TrackingUID
        assert group.finding_type.value == labels[number].SegmentedPropertyTypeCodeSequence[0].CodeValue
        referenced_images = {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for item in source_items}
        assert referenced_images and referenced_images <= images
    volume = groups[0].get_measurements(name=codes.SCT.Volume)[0]
    assert (float(volume.value), volume.unit.value) == (212.5, "ml")
    mean = groups[1].get_measurements(name=codes.DCM.AttenuationCoefficient)[0]
    assert mean.derivation.value == codes.SCT.Mean.value
    coded = {(i.ConceptNameCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodeValue)
             for i in groups[1][0].ContentSequence if i.ValueType == "CODE"}
    assert (codes.DCM.Finding.value, codes.SCT.Present.value) in coded  # the evaluation
    assert (codes.DCM.Finding.value, codes.SCT.Spleen.value) in coded  # the finding type


def test_the_report_says_what_made_it_and_is_unverified() -> None:
    seg, sources = seg_and_sources()
    digest = "ab" * 32
    sr = report(seg, sources, model_hash=digest)
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    back = hd.sr.Comprehensive3DSR.from_dataset(sr)
    group = back.content.get_volumetric_roi_measurement_groups()[0]
    algorithm = group.algorithm_id if hasattr(group, "algorithm_id") else None
    text = str(sr)
    assert "organs" in text and "2.1" in text and digest in text
    assert algorithm is None or algorithm.name == "organs"
    ours = [item for item in sr.ContributingEquipmentSequence
            if item.get("ManufacturerModelName") == "dicomnode-highdicom"]
    assert len(ours) == 1 and digest in ours[0].ContributionDescription
    assert sr.SeriesNumber == sources[0].SeriesNumber + 1001


def test_the_same_input_twice_gives_the_same_uids_whatever_the_arrival_order() -> None:
    seg, sources = seg_and_sources()
    shuffled = list(sources)
    random.Random(3).shuffle(shuffled)
    first, second = report(seg, sources), report(seg, shuffled)
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (second.SeriesInstanceUID, second.SOPInstanceUID)
    assert first.SeriesInstanceUID != seg.SeriesInstanceUID


def test_a_measurement_of_a_segment_the_seg_lacks_is_refused() -> None:
    seg, sources = seg_and_sources()
    with pytest.raises(InvalidDatasetError, match=r"segment 3.*1 \(liver\), 2 \(spleen\)"):
        MeasurementReportFactory(**NAME).build(seg, sources, measurements=[Measurement(3, "volume", 1.0, "ml")])


def test_the_report_needs_a_seg_and_something_to_report() -> None:
    seg, sources = seg_and_sources()
    with pytest.raises(InvalidDatasetError, match="Segmentation"):
        MeasurementReportFactory(**NAME).build(sources[0], sources, measurements=[Measurement(1, "volume", 1, "ml")])
    with pytest.raises(ConfigurationError, match="at least one"):
        MeasurementReportFactory(**NAME).build(seg, sources)


def test_names_and_units_come_from_the_tables_or_as_codes() -> None:
    with pytest.raises(ConfigurationError, match="'girth' is not one of"):
        Measurement(1, "girth", 3.0, "mm")
    assert Measurement(1, codes.SCT.Diameter, 3.0, "mm").content(
        hd.sr.AlgorithmIdentification("a", "1")).name.value == codes.SCT.Diameter.value
    with pytest.raises(ConfigurationError, match="finite number"):
        Measurement(1, "volume", float("nan"), "ml")


@pytest.mark.parametrize("kind", ["one segment", "own grid"])
def test_a_report_on_any_kind_of_seg_references_its_segment_and_sources(kind: str, tmp_path: Path) -> None:
    sources, volume = source_and_volume("axial-ct")
    if kind == "own grid":
        between = volume.origin + 0.5 * volume.slice_spacing * volume.slice_direction  # on no source plane
        mask = attrs.evolve(volume, array=blob_mask((5, 12, 16)), spacing=volume.spacing * 2, origin=between,
                            source_uids=())
    else:
        mask = attrs.evolve(volume, array=blob_mask(volume.array.shape))
    seg = SegFactory(**NAME).build(mask, sources, segments=["bone"])
    sr = MeasurementReportFactory(**NAME).build(seg, sources, measurements=[Measurement(1, "volume", 2.0, "ml")])
    assert dciodvfy(sr, tmp_path / "sr.dcm")[0] == []
    group = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_volumetric_roi_measurement_groups()[0]
    items = group[0].ContentSequence
    [segment] = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "121191"]
    assert segment.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert int(segment.ReferencedSOPSequence[0].ReferencedSegmentNumber) == 1
    images = {str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
              for i in items if i.ConceptNameCodeSequence[0].CodeValue == "121233"}
    series = [str(i.UID) for i in items if i.ConceptNameCodeSequence[0].CodeValue == "121232"]
    if kind == "own grid":
        assert series == [sources[0].SeriesInstanceUID]
    else:
        with_mask = {uid for k, uid in enumerate(volume.source_uids) if mask.array[k].any()}
        assert images == with_mask


def test_a_report_on_a_labelmap_segmentation_says_to_make_a_binary_one() -> None:
    sources, volume = source_and_volume("axial-ct")
    seg = SegFactory(**NAME, segmentation_type="LABELMAP").build(
        attrs.evolve(volume, array=blob_mask(volume.array.shape)), sources, segments=["bone"])
    with pytest.raises(InvalidDatasetError, match="segmentation_type 'BINARY'"):
        MeasurementReportFactory(**NAME).build(seg, sources, measurements=[Measurement(1, "volume", 2.0, "ml")])
