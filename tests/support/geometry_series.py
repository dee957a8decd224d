"""Synthetic series with known geometry, for grinder and factory tests.

:class:`SeriesSpec` describes a series (modality, orientation, pixel and
slice spacing, 4D, multi-frame, delivery order); :func:`build_series` makes its
datasets with seeded random pixel values, and :func:`expected` gives what a
correct grinder must return: rescaled values in patient order and the LPS
affine of the (slice, row, column) indices. ``CASES`` holds the geometry cases
the parity tests run.

Needs numpy (so it is only imported by plugin tests).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
ENHANCED_SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2.1",
    "MR": "1.2.840.10008.5.1.4.1.1.4.1",
    "PT": "1.2.840.10008.5.1.4.1.1.130",
}

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
CORONAL = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))
SAGITTAL = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))


def rotated(about_x: float, about_y: float, base: tuple[tuple[float, ...], tuple[float, ...]] = AXIAL
            ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Row and column cosines of ``base`` rotated ``about_x`` then ``about_y`` degrees."""
    ax, ay = np.radians(about_x), np.radians(about_y)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rotation = ry @ rx
    row = rotation @ np.array(base[0])
    column = rotation @ np.array(base[1])
    return tuple(float(v) for v in row), tuple(float(v) for v in column)


@dataclass(frozen=True)
class SeriesSpec:
    """A synthetic series. Positions are exact; DICOM strings carry them to 16 characters."""

    name: str
    modality: str = "CT"
    rows: int = 24
    columns: int = 32
    slices: int = 10
    pixel_spacing: tuple[float, float] = (0.8, 0.8)  # (between rows, between columns)
    slice_spacing: float = 1.5
    orientation: tuple[tuple[float, ...], tuple[float, ...]] = AXIAL
    origin: tuple[float, float, float] = (-100.25, -120.5, 50.0)
    volumes: int = 1
    shuffle: bool = False
    multiframe: bool = False
    tilt_mm: float = 0.0  # in-plane shift per slice along the column direction (a gantry tilt)
    acquisition_3d: bool = False
    seed: int = 1
    skip_slices: tuple[int, ...] = field(default=())

    def with_(self, **changes: object) -> SeriesSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _pixel_format(modality: str) -> tuple[np.dtype, int, int]:
    """Stored type, BitsStored, PixelRepresentation per modality."""
    if modality == "CT":
        return np.dtype("<u2"), 12, 0
    if modality == "PT":
        return np.dtype("<i2"), 16, 1
    return np.dtype("<u2"), 12, 0


def rescale_of(spec: SeriesSpec, k: int) -> tuple[float, float]:
    """(slope, intercept) of slice ``k``: CT -1024 HU offset, PT a per-slice slope, MR none."""
    if spec.modality == "CT":
        return 1.0, -1024.0
    if spec.modality == "PT":
        return round(0.25 + 0.125 * k, 6), 0.0
    return 1.0, 0.0


def normal_of(spec: SeriesSpec) -> np.ndarray:
    """cross(row cosine, column cosine)."""
    return np.cross(np.array(spec.orientation[0]), np.array(spec.orientation[1]))


def position_of(spec: SeriesSpec, k: int) -> np.ndarray:
    """ImagePositionPatient of slice ``k`` (counted along the normal)."""
    column = np.array(spec.orientation[1])
    return np.array(spec.origin) + k * spec.slice_spacing * normal_of(spec) + k * spec.tilt_mm * column


def stored_values(spec: SeriesSpec) -> np.ndarray:
    """``(volumes, slices, rows, columns)`` stored values in patient order."""
    dtype, bits, signed = _pixel_format(spec.modality)
    generator = np.random.default_rng(spec.seed)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1))) if signed else (0, 1 << bits)
    shape = (spec.volumes, spec.slices, spec.rows, spec.columns)
    return generator.integers(low, high, size=shape).astype(dtype.newbyteorder("="))


def expected(spec: SeriesSpec) -> tuple[np.ndarray, np.ndarray]:
    """The rescaled values (3D or 4D) and the LPS affine of (slice, row, column)."""
    stored = stored_values(spec).astype(np.float64)
    for k in range(spec.slices):
        slope, intercept = rescale_of(spec, k)
        stored[:, k] = stored[:, k] * slope + intercept
    affine = np.eye(4)
    step = position_of(spec, 1) - position_of(spec, 0)
    affine[:3, 0] = step
    affine[:3, 1] = np.array(spec.orientation[1]) * spec.pixel_spacing[0]
    affine[:3, 2] = np.array(spec.orientation[0]) * spec.pixel_spacing[1]
    affine[:3, 3] = position_of(spec, 0)
    values = stored if spec.volumes > 1 else stored[0]
    return values, affine


def _ds(value: float) -> str:
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.8g}"


def _common(spec: SeriesSpec, uids: dict[str, str]) -> Dataset:
    dtype, bits, signed = _pixel_format(spec.modality)
    ds = Dataset()
    ds.PatientName = "Geometry^Phantom"
    ds.PatientID = f"GEO-{spec.name}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240102"
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.Modality = spec.modality
    ds.Manufacturer = "dicomnode"
    ds.SeriesNumber = 3
    ds.SeriesDescription = spec.name
    ds.PositionReferenceIndicator = ""
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = dtype.itemsize * 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = signed
    if spec.modality == "MR":
        ds.MRAcquisitionType = "3D" if spec.acquisition_3d else "2D"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.EchoTime = 20
        ds.RepetitionTime = 500
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 3
    if spec.modality == "CT":
        ds.KVP = 120
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    return ds


def _meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def _uids(spec: SeriesSpec) -> dict[str, str]:
    return {key: generate_uid(entropy_srcs=[spec.name, str(spec.seed), key])
            for key in ("study", "series", "frame")}


def build_series(spec: SeriesSpec) -> list[Dataset]:
    """The datasets of ``spec``, in delivery order (shuffled when ``spec.shuffle``)."""
    if spec.multiframe:
        return [_enhanced(spec)]
    uids = _uids(spec)
    stored = stored_values(spec)
    datasets = []
    number = 0
    for v in range(spec.volumes):
        for k in range(spec.slices):
            if k in spec.skip_slices:
                continue
            number += 1
            ds = _common(spec, uids)
            ds.SOPClassUID = SOP_CLASSES[spec.modality]
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[spec.name, str(spec.seed), str(v), str(k)])
            ds.InstanceNumber = number
            ds.AcquisitionNumber = v + 1
            ds.AcquisitionTime = f"1016{v:02d}.000000"
            ds.ContentTime = ds.AcquisitionTime
            if spec.volumes > 1:
                ds.TemporalPositionIdentifier = v + 1
                ds.NumberOfTemporalPositions = spec.volumes
            ds.ImagePositionPatient = [_ds(x) for x in position_of(spec, k)]
            ds.ImageOrientationPatient = [_ds(x) for x in (*spec.orientation[0], *spec.orientation[1])]
            ds.PixelSpacing = [_ds(x) for x in spec.pixel_spacing]
            ds.SliceThickness = _ds(spec.slice_spacing)
            ds.SpacingBetweenSlices = _ds(spec.slice_spacing)
            ds.SliceLocation = _ds(float(position_of(spec, k) @ normal_of(spec)))
            slope, intercept = rescale_of(spec, k)
            if spec.modality in ("CT", "PT"):
                ds.RescaleSlope = _ds(slope)
                ds.RescaleIntercept = _ds(intercept)
                ds.RescaleType = "HU" if spec.modality == "CT" else "US"
            if spec.modality == "PT":
                ds.Units = "BQML"
                ds.DecayCorrection = "START"
                ds.CorrectedImage = ["ATTN", "DECY"]
                ds.ImageIndex = v * spec.slices + k + 1  # unique in the series, time slice major
                ds.NumberOfSlices = spec.slices
                ds.NumberOfTimeSlices = spec.volumes
                ds.FrameReferenceTime = 60000.0 * v
                ds.ActualFrameDuration = 60000
            ds.PixelData = np.ascontiguousarray(stored[v, k]).astype("<" + stored.dtype.str[1:]).tobytes()
            _meta(ds)
            datasets.append(ds)
    if spec.shuffle:
        random.Random(spec.seed).shuffle(datasets)
    return datasets


def _enhanced(spec: SeriesSpec) -> Dataset:
    uids = _uids(spec)
    stored = stored_values(spec)
    ds = _common(spec, uids)
    ds.SOPClassUID = ENHANCED_SOP_CLASSES[spec.modality]
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[spec.name, str(spec.seed), "enhanced"])
    ds.InstanceNumber = 1
    ds.ContentTime = "101600"
    ds.AcquisitionDateTime = "20240102101600"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    order = [(v, k) for v in range(spec.volumes) for k in range(spec.slices) if k not in spec.skip_slices]
    if spec.shuffle:
        random.Random(spec.seed).shuffle(order)
    ds.NumberOfFrames = len(order)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [_ds(x) for x in spec.pixel_spacing]
    measures.SliceThickness = _ds(spec.slice_spacing)
    shared.PixelMeasuresSequence = DicomSequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = [_ds(x) for x in (*spec.orientation[0], *spec.orientation[1])]
    shared.PlaneOrientationSequence = DicomSequence([plane])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    pixels = []
    for v, k in order:
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [_ds(x) for x in position_of(spec, k)]
        item.PlanePositionSequence = DicomSequence([position])
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.TemporalPositionIndex = v + 1
        content.DimensionIndexValues = [1, k + 1] if spec.volumes == 1 else [1, k + 1, v + 1]
        item.FrameContentSequence = DicomSequence([content])
        slope, intercept = rescale_of(spec, k)
        if spec.modality in ("CT", "PT"):
            transform = Dataset()
            transform.RescaleSlope = _ds(slope)
            transform.RescaleIntercept = _ds(intercept)
            transform.RescaleType = "HU" if spec.modality == "CT" else "US"
            item.PixelValueTransformationSequence = DicomSequence([transform])
        per_frame.append(item)
        pixels.append(np.ascontiguousarray(stored[v, k]).astype("<" + stored.dtype.str[1:]).tobytes())
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    dimensions = []
    for pointer in ("StackID", "InStackPositionNumber", "TemporalPositionIndex")[: 2 if spec.volumes == 1 else 3]:
        dimension = Dataset()
        dimension.DimensionIndexPointer = pointer
        dimension.FunctionalGroupPointer = "FrameContentSequence"
        dimensions.append(dimension)
    ds.DimensionIndexSequence = DicomSequence(dimensions)
    ds.PixelData = b"".join(pixels)
    _meta(ds)
    return ds


def write_series(datasets: Sequence[Dataset], directory: Path) -> list[Path]:
    """Write ``datasets`` as files ``directory/IM{n}.dcm`` (delivery order); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, ds in enumerate(datasets, start=1):
        path = directory / f"IM{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


#: the geometry cases the parity tests run
CASES: dict[str, SeriesSpec] = {
    spec.name: spec
    for spec in (
        SeriesSpec("axial-ct"),
        SeriesSpec("coronal-mr", modality="MR", orientation=CORONAL),
        SeriesSpec("sagittal-mr", modality="MR", orientation=SAGITTAL, slice_spacing=3.0),
        SeriesSpec("oblique-ct", orientation=rotated(20.0, 20.0)),
        SeriesSpec("oblique-mr", modality="MR", orientation=rotated(-20.0, 15.0, SAGITTAL)),
        SeriesSpec("non-square-pixels-ct", pixel_spacing=(0.7, 1.1)),
        SeriesSpec("thin-slices-ct", slice_spacing=1.5, slices=16),
        SeriesSpec("thick-slices-pt", modality="PT", slice_spacing=3.0, pixel_spacing=(2.0, 2.0)),
        SeriesSpec("shuffled-ct", shuffle=True, orientation=rotated(10.0, -20.0)),
        SeriesSpec("4d-mr", modality="MR", volumes=3, shuffle=True),
        SeriesSpec("4d-pt", modality="PT", volumes=2, pixel_spacing=(2.0, 2.0), slice_spacing=3.0),
        SeriesSpec("enhanced-ct", multiframe=True, shuffle=True),
        SeriesSpec("enhanced-oblique-mr", modality="MR", multiframe=True, orientation=rotated(-20.0, 15.0, SAGITTAL)),
        SeriesSpec("enhanced-4d-mr", modality="MR", multiframe=True, volumes=3, shuffle=True),
    )
}
