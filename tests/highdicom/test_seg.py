"""SegFactory: a mask becomes a valid SEG whose frames lie on, and reference, their own source slices.

For an axial CT, a coronal and a sagittal MR, oblique series, a shuffled
arrival and an enhanced multi-frame source: dciodvfy finds no error, and read
back with highdicom every frame lies at its source slice's position,
references that slice and holds that slice's mask.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import attrs
import highdicom as hd
import numpy as np
import pytest
from conftest import require_peer
from geometry_series import CASES
from pydicom import dcmread
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from result_checks import blob_mask, dciodvfy, frame_references, position, source_and_volume

from dicomnode.errors import ConfigurationError, DatasetValidationError, InvalidDatasetError
from dicomnode_highdicom import SEGMENT_PROPERTIES, SegFactory, Segment, SegmentProperty

pytestmark = pytest.mark.plugin("highdicom")

GEOMETRIES = ["axial-ct", "coronal-mr", "sagittal-mr", "oblique-ct", "oblique-mr", "shuffled-ct", "enhanced-ct"]


def factory(**options: object) -> SegFactory:
    return SegFactory(algorithm_name="bone-threshold", algorithm_version="1.0", **options)  # type: ignore[arg-type]


def mask_of(volume: object, labels: int = 1) -> object:
    return attrs.evolve(volume, array=blob_mask(volume.array.shape, labels))  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", GEOMETRIES)
def test_the_seg_has_no_dciodvfy_error(case: str, tmp_path: Path) -> None:
    sources, volume = source_and_volume(case)
    seg = factory().build(mask_of(volume, 2), sources, segments=[Segment(1, "liver"), Segment(2, "spleen")])
    errors, warnings = dciodvfy(seg, tmp_path / "seg.dcm")
    assert errors == [], "\n".join(errors)
    print(case, warnings)


@pytest.mark.parametrize("case", GEOMETRIES)
def test_every_frame_lies_on_and_references_its_source_slice(case: str, tmp_path: Path) -> None:
    sources, volume = source_and_volume(case)
    mask = mask_of(volume, 2)
    seg = factory().build(mask, sources, segments=["liver", "spleen"])
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    back = hd.seg.Segmentation.from_dataset(dcmread(tmp_path / "seg.dcm"))
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    slice_of = {uid: k for k, uid in enumerate(volume.source_uids)}  # single-frame: uid -> slice
    frames = back.pixel_array if back.NumberOfFrames > 1 else back.pixel_array[None]
    references = frame_references(back)
    assert references
    for (frame_position, uid, frame_number, segment), pixels in zip(references, frames):
        source = by_uid[uid]
        assert np.allclose(frame_position, position(source, frame_number), atol=1e-4)
        # the slice of the volume at that position holds exactly this frame's mask
        k = (int(np.argmin(np.linalg.norm(volume.slice_positions() - frame_position, axis=1)))
             if frame_number else slice_of[uid])
        assert np.allclose(volume.slice_position(k), frame_position, atol=1e-3)
        assert np.array_equal(pixels, (mask.array[k] == segment).astype(pixels.dtype))


def test_empty_frames_are_left_out() -> None:
    sources, volume = source_and_volume("axial-ct")
    mask = mask_of(volume, 2)
    seg = factory().build(mask, sources, segments=["liver", "spleen"])
    expected = sum(int((mask.array[k] == label).any()) for k in range(len(mask.array)) for label in (1, 2))
    assert int(seg.NumberOfFrames) == expected < 2 * len(sources)
    kept = factory(omit_empty_frames=False).build(mask, sources, segments=["liver", "spleen"])
    assert int(kept.NumberOfFrames) == 2 * len(sources)


def test_shuffled_arrival_gives_the_same_object_and_the_same_uids() -> None:
    sources, volume = source_and_volume("oblique-ct")
    mask = mask_of(volume)
    shuffled = list(sources)
    random.Random(7).shuffle(shuffled)
    first = factory().build(mask, sources, segments=["bone"])
    second = factory().build(mask, shuffled, segments=["bone"])
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (second.SeriesInstanceUID, second.SOPInstanceUID)
    assert first.PixelData == second.PixelData
    assert frame_references(first)[0][1] == frame_references(second)[0][1]


def test_the_same_input_twice_gives_the_same_uids_and_another_pipeline_other_ones() -> None:
    sources, volume = source_and_volume("axial-ct")
    mask = mask_of(volume)
    one, two = (factory().build(mask, sources, segments=["bone"]) for _ in range(2))
    assert (one.SeriesInstanceUID, one.SOPInstanceUID) == (two.SeriesInstanceUID, two.SOPInstanceUID)
    assert one.SegmentSequence[0].TrackingUID == two.SegmentSequence[0].TrackingUID
    other = factory(pipeline_name="another-node").build(mask, sources, segments=["bone"])
    assert other.SOPInstanceUID != one.SOPInstanceUID
    randomly = [factory(deterministic_uids=False).build(mask, sources, segments=["bone"]) for _ in range(2)]
    assert randomly[0].SOPInstanceUID != randomly[1].SOPInstanceUID
    prefixed = factory(uid_prefix="1.2.3.4.").build(mask, sources, segments=["bone"])
    assert prefixed.SOPInstanceUID.startswith("1.2.3.4.") and prefixed.SeriesInstanceUID.startswith("1.2.3.4.")


def test_a_bare_array_in_the_grinders_layout_equals_the_volume() -> None:
    sources, volume = source_and_volume("shuffled-ct")
    mask = mask_of(volume)
    from_volume = factory().build(mask, sources, segments=["bone"])
    from_array = factory().build(mask.array, sources, segments=["bone"])
    assert from_array.PixelData == from_volume.PixelData
    assert frame_references(from_array)[3][1] == frame_references(from_volume)[3][1]


def test_a_volume_in_the_opposite_slice_order_still_references_the_right_slices() -> None:
    sources, volume = source_and_volume("axial-ct")
    mask = mask_of(volume)
    last = volume.slice_count - 1
    flipped = attrs.evolve(mask, array=mask.array[::-1], origin=volume.slice_position(last),
                           direction=np.column_stack([-volume.direction[:, 0], volume.direction[:, 1:]]),
                           source_uids=volume.source_uids[::-1])
    original = factory().build(mask, sources, segments=["bone"])
    reversed_ = factory().build(flipped, sources, segments=["bone"])
    assert original.PixelData == reversed_.PixelData
    assert [r[1] for r in frame_references(original)] == [r[1] for r in frame_references(reversed_)]


def test_a_label_array_gives_one_coded_segment_per_value() -> None:
    sources, volume = source_and_volume("axial-ct")
    seg = factory().build(mask_of(volume, 3), sources, segments=["liver", "spleen", "lesion"])
    items = seg.SegmentSequence
    assert [int(item.SegmentNumber) for item in items] == [1, 2, 3]
    assert [str(item.SegmentLabel) for item in items] == ["liver", "spleen", "lesion"]
    liver, lesion = items[0], items[2]
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Liver.value
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue == codes.cid7150.AnatomicalStructure.value
    assert lesion.SegmentedPropertyCategoryCodeSequence[0].CodeValue == \
        codes.cid7150.MorphologicallyAbnormalStructure.value
    assert {int(r[3]) for r in frame_references(seg)} == {1, 2, 3}
    assert seg.SegmentsOverlap == "NO"


def test_labels_are_matched_without_regard_to_case_or_separators() -> None:
    assert SEGMENT_PROPERTIES["Spinal-Cord"] == SEGMENT_PROPERTIES["spinal cord"] == SEGMENT_PROPERTIES["SPINAL_CORD"]


def test_an_unknown_label_names_the_known_ones_and_a_table_or_codes_fix_it() -> None:
    sources, volume = source_and_volume("axial-ct")
    mask = mask_of(volume)
    with pytest.raises(ConfigurationError, match="caudate lobe") as caught:
        factory().build(mask, sources, segments=["caudate lobe"])
    assert "liver" in str(caught.value) and "SEGMENT_PROPERTIES.extended" in str(caught.value)
    caudate = Code("71133005", "SCT", "Caudate lobe of liver")
    table = SEGMENT_PROPERTIES.extended({"caudate lobe": SegmentProperty(codes.cid7150.AnatomicalStructure, caudate)})
    seg = factory(properties=table).build(mask, sources, segments=["caudate lobe"])
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "71133005"
    own = factory().build(mask, sources, segments=[Segment(1, "caudate", category=codes.cid7150.AnatomicalStructure,
                                                          type=caudate)])
    assert own.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Caudate lobe of liver"
    assert "caudate lobe" not in SEGMENT_PROPERTIES  # extending made a new table


def test_a_mask_value_without_a_segment_is_refused_with_the_value() -> None:
    sources, volume = source_and_volume("axial-ct")
    with pytest.raises(InvalidDatasetError, match=r"value\(s\) 2, 3.*1 \(bone\)"):
        factory().build(mask_of(volume, 3), sources, segments=["bone"])


def test_a_mask_that_does_not_fit_the_sources_is_refused_with_both_shapes() -> None:
    sources, _ = source_and_volume("axial-ct")
    with pytest.raises(InvalidDatasetError, match=r"\(10, 24, 30\).*\(10, 24, 32\)"):
        factory().build(np.zeros((10, 24, 30), np.uint8), sources, segments=["bone"])


def test_a_4d_source_series_is_refused_with_what_to_pass() -> None:
    sources, _ = source_and_volume(CASES["4d-mr"])
    with pytest.raises(InvalidDatasetError, match="4D series"):
        factory().build(np.zeros((10, 24, 32), np.uint8), sources, segments=["bone"])


def test_sources_of_two_series_are_refused() -> None:
    sources, volume = source_and_volume("axial-ct")
    stranger = copy.deepcopy(sources[0])
    stranger.SeriesInstanceUID = "1.2.3.4"
    with pytest.raises(InvalidDatasetError, match="2 series"):
        factory().build(mask_of(volume), [*sources, stranger], segments=["bone"])


def test_segment_numbers_of_a_binary_segmentation_run_from_one() -> None:
    sources, volume = source_and_volume("axial-ct")
    with pytest.raises(ConfigurationError, match=r"numbered 1, 2, \.\.\. without gaps, got \[2\]"):
        factory().build(mask_of(volume), sources, segments=[Segment(2, "bone")])


def test_overlapping_segments_come_as_a_list_of_masks(tmp_path: Path) -> None:
    sources, volume = source_and_volume("oblique-mr")
    organ = blob_mask(volume.array.shape)
    lesion = np.zeros_like(organ)
    lesion[3:5, 4:8, 5:9] = 1  # inside the organ
    seg = factory().build([attrs.evolve(volume, array=organ), lesion], sources, segments=["liver", "lesion"])
    assert seg.SegmentsOverlap == "YES"
    back = hd.seg.Segmentation.from_dataset(seg)
    dense = back.get_volume().array
    assert dense.shape[-1] == 2
    assert dciodvfy(seg, tmp_path / "seg.dcm")[0] == []


def test_a_fractional_segmentation_scales_probabilities_and_leaves_the_mask_alone(tmp_path: Path) -> None:
    sources, volume = source_and_volume("axial-ct")
    probabilities = np.zeros(volume.array.shape, np.float32)
    probabilities[4, 5:10, 5:10] = 0.5
    probabilities[5, 5:10, 5:10] = 1.0
    seg = factory(segmentation_type="FRACTIONAL").build(probabilities, sources, segments=["bone"])
    assert (seg.SegmentationType, seg.SegmentationFractionalType, int(seg.MaximumFractionalValue)) == \
        ("FRACTIONAL", "PROBABILITY", 255)
    assert sorted(np.unique(seg.pixel_array).tolist()) == [0, 128, 255]
    assert dciodvfy(seg, tmp_path / "seg.dcm")[0] == []
    binary = blob_mask(volume.array.shape)
    before = binary.copy()
    factory(segmentation_type="FRACTIONAL").build(binary, sources, segments=["bone"])
    assert np.array_equal(binary, before), "the caller's 0/1 mask must not be scaled in place"


def test_a_binary_segmentation_of_probabilities_says_to_threshold_or_use_fractional() -> None:
    sources, volume = source_and_volume("axial-ct")
    with pytest.raises(InvalidDatasetError, match="FRACTIONAL"):
        factory().build(np.full(volume.array.shape, 0.3, np.float32), sources, segments=["bone"])
    ones = factory().build(blob_mask(volume.array.shape).astype(np.float32), sources, segments=["bone"])
    assert ones.PixelData == factory().build(blob_mask(volume.array.shape), sources, segments=["bone"]).PixelData


def test_a_labelmap_segmentation_uses_its_own_class(tmp_path: Path) -> None:
    sources, volume = source_and_volume("axial-ct")
    seg = factory(segmentation_type="LABELMAP").build(mask_of(volume, 2), sources, segments=["liver", "spleen"])
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    assert np.array_equal(np.unique(seg.pixel_array), [0, 1, 2])
    assert dciodvfy(seg, tmp_path / "seg.dcm")[0] == []


def test_compression_is_an_option_and_decodes_to_the_same_frames() -> None:
    sources, volume = source_and_volume("axial-ct")
    mask = mask_of(volume, 2)
    plain = factory(segmentation_type="FRACTIONAL").build(mask, sources, segments=["liver", "spleen"])
    packed = factory(segmentation_type="FRACTIONAL", compression="rle").build(mask, sources,
                                                                                segments=["liver", "spleen"])
    assert packed.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    assert np.array_equal(packed.pixel_array, plain.pixel_array)
    with pytest.raises(ConfigurationError, match="only be compressed with 'jpeg2000'"):
        factory(compression="rle")


def test_every_object_says_what_made_it() -> None:
    sources, volume = source_and_volume("axial-ct")
    digest = "c0ffee" * 10 + "beef"
    seg = factory(model_hash=digest).build(mask_of(volume), sources, segments=["bone"])
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("bone-threshold", "1.0")
    assert digest in algorithm.AlgorithmParameters
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert (seg.ManufacturerModelName, seg.SoftwareVersions, seg.DeviceSerialNumber) == \
        ("bone-threshold", "1.0", digest)
    ours = [item for item in seg.ContributingEquipmentSequence
            if item.get("ManufacturerModelName") == "dicomnode-highdicom"]
    assert len(ours) == 1
    assert "dicomnode 0.1.0" in list(ours[0].SoftwareVersions)
    assert ours[0].PurposeOfReferenceCodeSequence[0].CodeMeaning == "Processing Equipment"
    assert digest in ours[0].ContributionDescription
    assert seg.SeriesNumber == sources[0].SeriesNumber + 1000


def test_a_volume_on_another_grid_keeps_its_own_planes(tmp_path: Path) -> None:
    sources, volume = source_and_volume("axial-ct")
    coarse = attrs.evolve(volume, array=np.ones((5, 12, 16), np.uint8),
                          spacing=volume.spacing * np.array([2.0, 2.0, 2.0]), source_uids=())
    seg = factory().build(coarse, sources, segments=["bone"])
    assert int(seg.NumberOfFrames) == 5
    spacing = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert np.allclose([float(v) for v in spacing], volume.pixel_spacing * np.array(2.0))
    assert dciodvfy(seg, tmp_path / "seg.dcm")[0] == []


@pytest.mark.filterwarnings("ignore:The value length")  # pydicom, when the test sets the long description
def test_validate_checks_the_object_and_never_quotes_a_value() -> None:
    sources, volume = source_and_volume("axial-ct")
    checked = factory(validate=True).build(mask_of(volume), sources, segments=["bone"])
    assert checked.Modality == "SEG"
    broken = copy.deepcopy(sources)
    for ds in broken:  # values highdicom copies as they are, and a validator must refuse
        ds.PatientName = "Secret^Name^of^the^patient^x"
        ds.StudyDescription = "Secret " * 10
    for validator in ("dciodvfy", "structural"):
        if validator == "dciodvfy":
            require_peer("dciodvfy")
        with pytest.raises(DatasetValidationError) as caught:
            factory(validate=validator).build(mask_of(volume), broken, segments=["bone"])
        report = caught.value.report
        assert not report.ok and report.validator == validator
        assert "Study Description" in str(caught.value) or "StudyDescription" in str(caught.value)
        assert "Secret" not in str(caught.value)


def test_the_longest_algorithm_name_still_gives_valid_text_elements() -> None:
    from dicomnode.dicom.validation import validate

    sources, volume = source_and_volume("axial-ct")
    seg = SegFactory(algorithm_name="a" * 64, algorithm_version="1" * 64).build(mask_of(volume), sources,
                                                                            segments=["bone"])
    assert len(seg.SeriesDescription) <= 64 and len(seg.ContentLabel) <= 16
    assert validate(seg, validator="structural").ok
    with pytest.raises(ConfigurationError, match="1 to 64 characters"):
        SegFactory(algorithm_name="a" * 65, algorithm_version="1")


def test_a_volume_whose_source_uids_are_stale_is_matched_by_position() -> None:
    sources, volume = source_and_volume("oblique-ct")
    mask = mask_of(volume)
    right = factory().build(mask, sources, segments=["bone"])
    stale = attrs.evolve(mask, source_uids=volume.source_uids[1:] + volume.source_uids[:1])
    from_positions = factory().build(stale, sources, segments=["bone"])
    assert [r[1:] for r in frame_references(from_positions)] == [r[1:] for r in frame_references(right)]
    assert from_positions.PixelData == right.PixelData


def test_a_binary_segmentation_compresses_with_jpeg2000() -> None:
    from geometry_series import SeriesSpec

    sources, volume = source_and_volume(SeriesSpec("jpeg2000", rows=64, columns=64, slices=6))
    mask = mask_of(volume)
    packed = factory(compression="jpeg2000").build(mask, sources, segments=["bone"])
    assert packed.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    assert np.array_equal(packed.pixel_array, factory().build(mask, sources, segments=["bone"]).pixel_array)
