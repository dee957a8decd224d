"""Synthetic Siemens mosaics with a CSA image header, for the grinder's parity tests with dcm2niix.

A Siemens EPI series stores each volume as one image: a grid of tiles, one
per slice, with the slice count, the slice normal and the slice timing in
the private CSA image header ``(0029,1010)``. :func:`csa_header` writes that
header (the "SV10" layout nibabel and dcm2niix read); :func:`mosaic_series`
builds a series of mosaics with known geometry: the slice normal may point
along ``cross(row, column)`` or against it, as sagittal Siemens mosaics do.

Needs numpy (plugin tests only).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["csa_header", "mosaic_series"]


def csa_header(tags: Mapping[str, tuple[str, Sequence[object]]]) -> bytes:
    """A CSA2 ("SV10") header with ``tags``: name -> (VR, values).

    Each tag: its name (64 bytes), value multiplicity, VR (4 bytes), a
    "syngo" data type, the item count and 77; each item: four 32-bit
    numbers, the second its length, then the value as text, NUL-terminated
    and padded to 4 bytes.
    """
    parts = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<II", len(tags), 77)]
    for name, (vr, values) in tags.items():
        parts.append(struct.pack("<64si4s3i", name.encode("ascii"), len(values), vr.encode("ascii"), 0,
                                 len(values), 77))
        for value in values:
            text = (value if isinstance(value, str) else f"{value:.8f}").encode("ascii") + b"\0"
            parts.append(struct.pack("<4i", len(text), len(text), 77, len(text)))
            parts.append(text + b"\0" * (-len(text) % 4))
    return b"".join(parts)


def _ds(value: float) -> str:
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.8g}"


def mosaic_series(*, row: tuple[float, float, float], column: tuple[float, float, float], normal_sign: float,
                  slices: int = 10, tile: tuple[int, int] = (16, 12), volumes: int = 2,
                  pixel_spacing: tuple[float, float] = (2.0, 2.5), slice_spacing: float = 3.0,
                  first: tuple[float, float, float] = (-20.0, -30.0, 40.0),
                  slice_times: Sequence[float] | None = None, phase: str = "COL", seed: int = 5
                  ) -> tuple[list[Dataset], np.ndarray]:
    """Mosaics of ``volumes`` volumes of ``slices`` tiles; and the stored values ``(volume, slice, row, column)``.

    The slices lie along ``normal_sign * cross(row, column)`` (the CSA
    SliceNormalVector), one ``slice_spacing`` apart from ``first`` (the
    first tile's top left voxel), in the order of the tiles.
    """
    rng = np.random.default_rng(seed)
    rows, columns = tile
    values = rng.integers(0, 4000, size=(volumes, slices, rows, columns), dtype=np.uint16)
    grid = math.ceil(math.sqrt(slices))
    row_vector, column_vector = np.array(row, dtype=float), np.array(column, dtype=float)
    normal = normal_sign * np.cross(row_vector, column_vector)
    corner = (np.array(first) - row_vector * pixel_spacing[1] * (grid * columns - columns) / 2.0
              - column_vector * pixel_spacing[0] * (grid * rows - rows) / 2.0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    times = list(slice_times) if slice_times is not None else [  # interleaved: 1, 3, 5, ... then 2, 4, ...
        50.0 * (k // 2 if k % 2 == 0 else (slices + 1) // 2 + k // 2) for k in range(slices)]
    csa = csa_header({
        "NumberOfImagesInMosaic": ("US", [str(slices)]),
        "SliceNormalVector": ("FD", [float(v) for v in normal]),
        "MosaicRefAcqTimes": ("FD", [float(t) for t in times]),
    })
    datasets = []
    for v in range(volumes):
        mosaic = np.zeros((grid * rows, grid * columns), dtype=np.uint16)
        for k in range(slices):
            top, left = (k // grid) * rows, (k % grid) * columns
            mosaic[top:top + rows, left:left + columns] = values[v, k]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.Modality = "MR"
        ds.Manufacturer = "SIEMENS"
        ds.PatientName, ds.PatientID = "Mosaic^Phantom", "MOSAIC"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = "20240102"
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 7, v + 1, v + 1
        ds.AcquisitionTime = f"1016{v:02d}.000000"
        ds.SeriesDescription = "ep2d_bold"
        ds.MRAcquisitionType = "2D"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "EP", "SK", ""
        ds.RepetitionTime, ds.EchoTime = 2000, 30
        ds.InPlanePhaseEncodingDirection = phase
        ds.ImagePositionPatient = [_ds(x) for x in corner]
        ds.ImageOrientationPatient = [_ds(x) for x in (*row, *column)]
        ds.PixelSpacing = [_ds(x) for x in pixel_spacing]
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(slice_spacing)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = mosaic.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0A, "US", slices)
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", csa)
        ds.PixelData = mosaic.astype("<u2").tobytes()
        datasets.append(ds)
    return datasets, values
