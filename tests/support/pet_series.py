"""A complete, valid PET image series (PET Image Storage) for factory tests.

The values are activity concentrations in Bq/ml: a warm body with a hot
sphere, stored as signed 16-bit integers with a RescaleSlope per slice and
RescaleIntercept 0, as scanners write them. Every attribute the PET IOD
requires is present, so ``dciodvfy`` accepts the series without errors.

Needs numpy (imported by plugin tests only).
"""

from __future__ import annotations

import random

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"


def activity(slices: int, rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """``(slices, rows, columns)`` float64 activity in Bq/ml."""
    generator = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.linspace(-1, 1, slices), np.linspace(-1, 1, rows),
                          np.linspace(-1, 1, columns), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    sphere = (x - 0.3) ** 2 + y**2 + z**2 < 0.15
    values = body * 5000.0 + sphere * 40000.0 + generator.random((slices, rows, columns)) * 300.0
    return values


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def pet_series(
    *,
    slices: int = 8,
    rows: int = 16,
    columns: int = 16,
    pixel_spacing: tuple[float, float] = (4.0, 4.0),
    slice_spacing: float = 3.27,
    origin: tuple[float, float, float] = (-32.0, -30.5, -100.0),
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    shuffle: bool = False,
    seed: int = 0,
) -> list[Dataset]:
    """A PET series of ``slices`` images; slice ``k`` lies ``k * slice_spacing`` along the normal."""
    values = activity(slices, rows, columns, seed)
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, column)
    study, series, frame = (generate_uid(entropy_srcs=["pet", str(seed), key]) for key in "ABC")
    datasets = []
    for k in range(slices):
        slope = float(values[k].max()) / 32767
        stored = np.rint(values[k] / slope).astype("<i2")
        position = np.array(origin) + k * slice_spacing * normal
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SOPClassUID = PET_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["pet", str(seed), str(k)])
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20250301"
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "093000"
        ds.AccessionNumber = "PET1"
        ds.Modality = "PT"
        ds.Manufacturer = "dicomnode synthetic"
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = "Synthetic PET"
        ds.BodyPartExamined = "CHEST"
        ds.PatientName = "Pet^Phantom"
        ds.PatientID = "PET001"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "F"
        ds.PatientWeight = "70"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "1"
        ds.SeriesNumber = 5
        ds.InstanceNumber = k + 1
        ds.PatientOrientation = ""
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in orientation]
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        ds.SliceThickness = f"{slice_spacing:g}"
        ds.SliceLocation = f"{float(position @ normal):.6g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = f"{slope:.10g}"
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.NumberOfSlices = slices
        ds.CollimatorType = "NONE"
        ds.CorrectedImage = ["ATTN", "DECY", "SCAT"]
        ds.DecayCorrection = "START"
        ds.DecayFactor = "1.0"
        ds.FrameReferenceTime = "0"
        ds.ActualFrameDuration = "120000"
        ds.ImageIndex = k + 1
        dose = Dataset()
        dose.RadiopharmaceuticalStartTime = "083000"
        dose.RadionuclideTotalDose = "350000000"
        dose.RadionuclideHalfLife = "6586.2"
        dose.RadionuclideCodeSequence = DicomSequence([_code("77004003", "SCT", "^18^Fluorine")])
        ds.RadiopharmaceuticalInformationSequence = DicomSequence([dose])
        ds.PatientOrientationCodeSequence = DicomSequence([_code("102538003", "SCT", "recumbent")])
        ds.PatientGantryRelationshipCodeSequence = DicomSequence([_code("126830004", "SCT", "headfirst")])
        ds.PixelData = stored.tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        datasets.append(ds)
    if shuffle:
        random.Random(seed).shuffle(datasets)
    return datasets
