"""Synthetic studies for the demo, the tests and the benchmarks (nothing is downloaded).

The phantom is a water ellipse (the body) with a denser sphere (a lesion) in
air, stored as 16-bit CT numbers or MR signal, built with the standard library
only so the core keeps no numpy dependency.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["synthetic_series", "write_series"]

_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


def _phantom_slice(rows: int, columns: int, z_fraction: float, modality: str) -> bytes:
    """One slice of the phantom as little-endian uint16 bytes."""
    background, body, lesion = (24, 1064, 1324) if modality == "CT" else (0, 400, 900)
    pixels = array("H", [background]) * (rows * columns)
    centre_r, centre_c = rows / 2, columns / 2
    body_r, body_c = rows * 0.38, columns * 0.45
    lesion_radius = min(rows, columns) * 0.12
    lesion_c = columns * 0.62
    lesion_fraction = max(0.0, 1.0 - ((z_fraction - 0.5) / 0.3) ** 2)
    for r in range(rows):
        dy = (r + 0.5 - centre_r) / body_r
        if abs(dy) < 1.0:
            half = body_c * (1.0 - dy * dy) ** 0.5
            start, stop = max(0, int(centre_c - half)), min(columns, int(centre_c + half))
            # a gentle gradient along the row keeps every slice's values distinct
            row_value = body + (r * 7 + int(z_fraction * 97)) % 32
            pixels[r * columns + start: r * columns + stop] = array("H", [row_value]) * (stop - start)
        dl = (r + 0.5 - centre_r) / lesion_radius
        if lesion_fraction > 0 and abs(dl) < lesion_fraction:
            half = lesion_radius * (lesion_fraction * lesion_fraction - dl * dl) ** 0.5
            start, stop = max(0, int(lesion_c - half)), min(columns, int(lesion_c + half))
            if stop > start:
                pixels[r * columns + start: r * columns + stop] = array("H", [lesion]) * (stop - start)
    if array("H", [1]).tobytes() != b"\x01\x00":  # big-endian host
        pixels.byteswap()
    return pixels.tobytes()


def synthetic_series(
    *,
    patient_id: str = "DEMO001",
    patient_name: str = "Demo^Patient",
    modality: str = "CT",
    slices: int = 64,
    rows: int = 128,
    columns: int = 128,
    pixel_spacing: tuple[float, float] = (0.8, 0.8),
    slice_thickness: float = 2.0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_date: str = "20260101",
    series_number: int = 1,
    series_description: str | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> list[Dataset]:
    """A complete, valid axial CT or MR series of a phantom, one dataset per slice.

    >>> series = synthetic_series(slices=4, rows=16, columns=16)
    >>> len(series), series[0].Modality, series[0].Rows
    (4, 'CT', 16)
    """
    if modality not in _SOP_CLASS:
        raise ValueError(f"modality must be one of {sorted(_SOP_CLASS)}, got {modality!r}")
    if slices < 1 or rows < 1 or columns < 1:
        raise ValueError(f"slices, rows and columns must be positive, got {slices}, {rows}, {columns}")
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    sop_class = _SOP_CLASS[modality]
    datasets = []
    for index in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        sop_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = f"ACC{patient_id}"[:16]
        ds.Modality = modality
        ds.Manufacturer = "dicomnode synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Synthetic phantom study"
        ds.SeriesDescription = series_description or f"Synthetic {modality} phantom"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = f"{slice_thickness:g}"
        if modality == "CT":
            ds.KVP = "120"
        else:
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.RepetitionTime = "500"
            ds.EchoTime = "10"
            ds.EchoTrainLength = "1"
            ds.MagneticFieldStrength = "1.5"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [
            f"{-columns * pixel_spacing[1] / 2:g}",
            f"{-rows * pixel_spacing[0] / 2:g}",
            f"{index * slice_thickness:g}",
        ]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{index * slice_thickness:g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.PixelSpacing = [f"{pixel_spacing[0]:g}", f"{pixel_spacing[1]:g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        if modality == "CT":
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
        ds.PixelData = _phantom_slice(rows, columns, index / max(1, slices - 1), modality)
        datasets.append(ds)
    if shuffle:
        random.Random(seed).shuffle(datasets)
    return datasets


def write_series(datasets: Sequence[Dataset], directory: Path | str) -> list[Path]:
    """Write each dataset as ``<SOPInstanceUID>.dcm`` in ``directory``; return the paths."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for dataset in datasets:
        path = folder / f"{dataset.SOPInstanceUID}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
