"""Complete CT and MR parent series made with plain bytes (no numpy), and a factory that writes bytes.

:func:`ct_series` and :func:`mr_series` make small series that are valid
images by ``dciodvfy`` — parents a pipeline would receive. :class:`RawFactory`
is the smallest concrete :class:`~dicomnode.dicom.factory.DicomFactory`: its
image is a list of slices, each a list of rows of unsigned 16-bit ints, written
as little-endian bytes. :func:`write` saves a dataset as a DICOM file.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.dicom.factory import DicomFactory, InstanceEnvironment, SeriesHeader

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _pixels(rows: int, columns: int, seed: int) -> bytes:
    values = [(seed * 31 + r * columns + c) % 4096 for r in range(rows) for c in range(columns)]
    return struct.pack(f"<{len(values)}H", *values)


def _common(modality: str, sop_class: str, count: int, rows: int, columns: int) -> list[Dataset]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for index in range(count):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate = "20240131"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "ACC1"
        ds.Modality = modality
        ds.Manufacturer = "Scanner Co"
        ds.ReferringPhysicianName = "Ref^Doctor"
        ds.StudyDescription = "Abdomen"
        ds.SeriesDescription = f"{modality} parent"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.PatientName = "Hansen^Jørgen"
        ds.PatientID = "PID-0042"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "M"
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "ABDOMEN"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = "S1"
        ds.SeriesNumber = 3
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [-100.0, -100.0, 2.5 * index]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = 2.5 * index
        ds.SliceThickness = 2.5
        ds.PixelSpacing = [0.8, 0.8]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = _pixels(rows, columns, index)
        datasets.append(ds)
    return datasets


def ct_series(count: int = 4, rows: int = 8, columns: int = 8) -> list[Dataset]:
    """A CT series of ``count`` axial slices."""
    datasets = _common("CT", CT_IMAGE_STORAGE, count, rows, columns)
    for ds in datasets:
        ds.KVP = 120
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.ConvolutionKernel = "B30f"
    return datasets


def mr_series(count: int = 4, rows: int = 8, columns: int = 8) -> list[Dataset]:
    """An MR series of ``count`` axial slices (a T1 spin echo)."""
    datasets = _common("MR", MR_IMAGE_STORAGE, count, rows, columns)
    for ds in datasets:
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500
        ds.EchoTime = 15
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 1.5
        ds.ImagedNucleus = "1H"
    return datasets


def write(ds: Dataset, path: Path) -> Path:
    """Save ``ds`` as a DICOM file (explicit VR little endian) and return the path."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


class RawFactory(DicomFactory):
    """Writes slices given as lists of rows of unsigned 16-bit ints: ``image[slice][row][column]``."""

    def build_series(
        self,
        image: Any,
        header: SeriesHeader,
        parent_series: Sequence[Dataset] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> list[Dataset]:
        datasets = []
        for index, slice_rows in enumerate(image):
            env = InstanceEnvironment(
                index + 1,
                kwargs=kwargs or {},
                header_dataset=header.dataset,
                image=slice_rows,
                factory=self,
                total_images=len(image),
            )
            ds = header.instantiate(env)
            values = [value for row in slice_rows for value in row]
            ds.Rows = len(slice_rows)
            ds.Columns = len(slice_rows[0])
            ds.PixelData = struct.pack(f"<{len(values)}H", *values)
            if ds.Modality == "CT":
                ds.RescaleIntercept = 0
                ds.RescaleSlope = 1
            datasets.append(ds)
        return datasets


def slices(count: int, rows: int = 8, columns: int = 8) -> list[list[list[int]]]:
    """An image for :class:`RawFactory`: ``count`` slices of distinct values."""
    return [[[(s * 7 + r * columns + c) % 65536 for c in range(columns)] for r in range(rows)]
            for s in range(count)]
