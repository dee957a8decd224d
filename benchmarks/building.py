"""Writing a float volume as a CT series: NumpyFactory against a plain pydicom loop.

The job: a 300-slice 512x512 float32 result volume (a program's output, in HU)
on the grid of its 300-slice CT parent series becomes 300 CT datasets in memory
with 16-bit pixels, RescaleSlope/RescaleIntercept, new UIDs, positions and the
parent's patient and study.

Contenders, interleaved (A B A B …), each run in a fresh process so its peak
memory can be read (Linux VmHWM, reset just before the build):

- ``pydicom template loop``: what a script without dicomnode does — deep-copy
  a template dataset per slice, set UIDs, InstanceNumber and position, scale
  the slice with one slope and intercept for the series, set PixelData.
- ``NumpyFactory``: ``build_series_header`` with DEFAULT_BLUEPRINT +
  CT_IMAGE_BLUEPRINT, then ``build_series(volume, header)`` (rescale kept
  within half a step, window, references to the source slices).

Peak memory is the growth over the process's memory just before the build,
compared with the size of the pixel data written (300 x 512 x 512 x 2 bytes).

    python benchmarks/building.py --runs 5
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SLICES = 300
SIZE = 512
SPACING = 0.742
THICKNESS = 2.5
CONTENDERS = ("pydicom template loop", "NumpyFactory")


def make_parents() -> list[Dataset]:
    """A 300-slice CT series; every slice shares one pixel buffer, so the parents cost little memory."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = bytes(SIZE * SIZE * 2)
    parents = []
    for index in range(SLICES):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240131"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber, ds.Modality, ds.Manufacturer = "ACC-1", "CT", "Scanner Co"
        ds.ReferringPhysicianName, ds.StudyDescription = "Ref^Doctor", "Abdomen"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Hansen^Jorgen", "P1", "19600101", "M"
        ds.BodyPartExamined, ds.PatientPosition, ds.KVP = "ABDOMEN", "HFS", 120
        ds.SliceThickness, ds.ConvolutionKernel = THICKNESS, "B30f"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = "S1", 3, 1, index + 1
        ds.ImagePositionPatient = [-190.0, -190.0, -THICKNESS * index]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, ""
        ds.SliceLocation = -THICKNESS * index
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = SIZE
        ds.PixelSpacing = [SPACING, SPACING]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = pixels
        parents.append(ds)
    return parents


def make_volume() -> np.ndarray:
    """A float32 result in HU: a smooth body with noise, ordered from the lowest slice up."""
    generator = np.random.default_rng(0)
    y, x = np.mgrid[-1:1:SIZE * 1j, -1:1:SIZE * 1j]
    body = np.where(x**2 / 0.8 + y**2 / 0.5 < 1, 40.0, -1000.0).astype(np.float32)
    volume = np.empty((SLICES, SIZE, SIZE), dtype=np.float32)
    for k in range(SLICES):
        volume[k] = body + generator.standard_normal((SIZE, SIZE), dtype=np.float32) * 12.5 + k * 0.1
    return volume


def template_loop(parents: list[Dataset], volume: np.ndarray) -> list[Dataset]:
    # the parents run downwards; the volume is ordered upwards
    ordered = sorted(parents, key=lambda p: float(p.ImagePositionPatient[2]))
    template = copy.deepcopy(ordered[0])
    del template.PixelData
    template.SeriesInstanceUID = generate_uid()
    template.SeriesNumber = 1003
    template.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    template.BitsStored, template.HighBit = 16, 15
    low, high = float(volume.min()), float(volume.max())
    slope = (high - low) / 65535
    result = []
    for k, parent in enumerate(ordered):
        ds = copy.deepcopy(template)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = parent.ImagePositionPatient
        ds.SliceLocation = parent.SliceLocation
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = f"{low:.10g}"
        ds.PixelData = np.rint((volume[k] - low) / slope).astype("<u2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        reference = Dataset()
        reference.ReferencedSOPClassUID = parent.SOPClassUID
        reference.ReferencedSOPInstanceUID = parent.SOPInstanceUID
        ds.SourceImageSequence = DicomSequence([reference])
        result.append(ds)
    return result


def numpy_factory(parents: list[Dataset], volume: np.ndarray) -> list[Dataset]:
    from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT
    from dicomnode_numpy import NumpyFactory

    factory = NumpyFactory(pipeline_name="benchmark")
    header = factory.build_series_header(parents, DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT)
    return factory.build_series(volume, header)


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def one_run(name: str) -> dict[str, float]:
    """Build once with ``name`` in this process; time and peak memory growth."""
    # imports are not part of the job: load every module either contender uses first
    import dicomnode.dicom.blueprints  # noqa: F401
    import dicomnode_numpy.factory
    import dicomnode_numpy.frames
    import dicomnode_numpy.geometry  # noqa: F401

    parents = make_parents()
    volume = make_volume()
    gc.collect()
    # give freed heap memory back to the system, so the baseline counts only what is live
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _memory_kib("VmRSS")
    start = time.perf_counter()
    datasets = (template_loop if name == CONTENDERS[0] else numpy_factory)(parents, volume)
    elapsed = time.perf_counter() - start
    peak = _memory_kib("VmHWM")
    assert len(datasets) == SLICES and len(datasets[0].PixelData) == SIZE * SIZE * 2
    return {"seconds": elapsed, "peak_growth_mib": (peak - before) / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted runs per contender (default 5)")
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one)))
        return 0
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    for round_number in range(args.runs + 1):
        for name in CONTENDERS:
            output = subprocess.run([sys.executable, __file__, "--one", name], check=True,
                                    capture_output=True, text=True).stdout
            if round_number > 0:  # the first round warms the disk cache and the imports
                results[name].append(json.loads(output))
    output_mib = SLICES * SIZE * SIZE * 2 / 2**20
    loop = statistics.median(r["seconds"] for r in results[CONTENDERS[0]])
    print(f"A {SLICES}-slice {SIZE}x{SIZE} float32 volume written as a CT series in memory "
          f"({args.runs} interleaved runs after a warm-up, Python {sys.version.split()[0]}; "
          f"pixel data written: {output_mib:.0f} MiB):\n")
    print("| contender | median (s) | min–max (s) | loop time / this | peak memory growth (MiB) "
          "| peak / output size |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        peaks = [r["peak_growth_mib"] for r in runs]
        median = statistics.median(seconds)
        peak = statistics.median(peaks)
        print(f"| {name} | {median:.2f} | {min(seconds):.2f}–{max(seconds):.2f} | {loop / median:.2f}× "
              f"| {peak:.0f} | {peak / output_mib:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
