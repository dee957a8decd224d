"""A binary mask as a DICOM Segmentation: SegFactory against highdicom used directly in the plainest way.

The job: a 300-slice 512x512 binary mask (uint8, 75 MiB; an elliptic body in
240 slices holds the segment, so 60 empty frames are left out) over its CT
source series, which arrived in shuffled order, becomes one SEG in memory.

Contenders, interleaved (A B A B ...), each run in a fresh process so its peak
memory can be read (Linux VmHWM, reset just before the measured build):

- ``highdicom directly``: what a script does with highdicom alone — sort the
  sources by ImagePositionPatient z (right for this axial series only), then
  ``highdicom.seg.Segmentation`` with one segment description and new UIDs.
- ``SegFactory``: ``SegFactory(...).build(volume, shuffled sources,
  segments=[Segment(1, "bone")])`` with the mask as the grinder's Volume
  (which names each slice's source): every slice checked against its
  source's position, coded segment, provenance, stable UIDs.

Each process builds once first (highdicom reads its IOD tables on the first
object: a cost a node pays once) and then times a second build; the first
build's time is reported too. Peak memory is the growth over the process's
memory just before the measured build, compared with the mask's size.

    python benchmarks/seg.py --runs 5
    python benchmarks/seg.py --runs 1 --slices 20 --size 64     # a quick check that it runs
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

SLICES = 300
SIZE = 512
SPACING = 0.742
THICKNESS = 2.5
CONTENDERS = ("highdicom directly", "SegFactory")


def make_sources(slices: int = SLICES, size: int = SIZE) -> list[Dataset]:
    """An axial CT in shuffled arrival order; the slices share one pixel buffer, so they cost little."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = bytes(size * size * 2)
    sources = []
    for index in range(slices):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Hansen^Jorgen", "P1", "19600101", "M"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240131", "101500", "ACC-1", "S1"
        ds.ReferringPhysicianName, ds.Modality, ds.Manufacturer = "", "CT", "Scanner Co"
        ds.SeriesNumber, ds.InstanceNumber = 3, index + 1
        ds.ImagePositionPatient = [-190.0, -190.0, -THICKNESS * index]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [SPACING, SPACING], THICKNESS
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        sources.append(ds)
    random.Random(0).shuffle(sources)
    return sources


def segment_slices(slices: int) -> range:
    """The slices that hold the segment: all but a tenth at each end (30..269 of 300)."""
    return range(slices // 10, slices - slices // 10)


def make_mask(slices: int = SLICES, size: int = SIZE) -> np.ndarray:
    """The mask in the grinder's order (along the normal, from the lowest slice up)."""
    mask = np.zeros((slices, size, size), dtype=np.uint8)
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    body = (x**2 / 0.6 + y**2 / 0.4 < 1).astype(np.uint8)
    held = segment_slices(slices)
    mask[held.start:held.stop] = body
    return mask


def highdicom_directly(sources: list[Dataset], mask: np.ndarray) -> Dataset:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ordered = sorted(sources, key=lambda ds: float(ds.ImagePositionPatient[2]))  # lowest first, as the mask
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="bone", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Bone, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="bone-threshold", family=codes.cid7162.ArtificialIntelligence, version="1.0"),
    )
    return hd.seg.Segmentation(
        source_images=ordered, pixel_array=mask, segmentation_type="BINARY", segment_descriptions=[description],
        series_instance_uid=generate_uid(), series_number=1003, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="dicomnode", manufacturer_model_name="bone-threshold",
        software_versions="1.0", device_serial_number="1",
    )


def seg_factory(sources: list[Dataset], mask: Any) -> Dataset:
    from dicomnode_highdicom import SegFactory, Segment

    return SegFactory(algorithm_name="bone-threshold", algorithm_version="1.0").build(
        mask, sources, segments=[Segment(1, "bone")])


def _volume(mask: np.ndarray, sources: list[Dataset]) -> Any:
    from dicomnode_numpy import Volume

    # what NumpyGrinder gives for these sources: the lowest slice first, the normal pointing up,
    # and the source of each slice
    ordered = sorted(sources, key=lambda ds: float(ds.ImagePositionPatient[2]))
    return Volume(array=mask, origin=[-190.0, -190.0, -THICKNESS * (len(mask) - 1)],
                  spacing=[THICKNESS, SPACING, SPACING], direction=np.eye(3)[:, [2, 1, 0]],
                  source_uids=[str(ds.SOPInstanceUID) for ds in ordered])


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def one_run(name: str, slices: int = SLICES, size: int = SIZE) -> dict[str, float]:
    """Build twice with ``name`` in this process; time both, peak memory growth of the second."""
    import highdicom  # noqa: F401  # imports are not part of the job

    import dicomnode_highdicom.seg  # noqa: F401

    sources = make_sources(slices, size)
    mask = make_mask(slices, size)
    job = (lambda: highdicom_directly(sources, mask)) if name == CONTENDERS[0] else \
        (lambda: seg_factory(sources, _volume(mask, sources)))
    start = time.perf_counter()
    first = job()
    first_seconds = time.perf_counter() - start
    frames = int(first.NumberOfFrames)
    del first
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _memory_kib("VmRSS")
    start = time.perf_counter()
    seg = job()
    elapsed = time.perf_counter() - start
    peak = _memory_kib("VmHWM")
    assert int(seg.NumberOfFrames) == frames == len(segment_slices(slices)), frames
    return {"seconds": elapsed, "first_seconds": first_seconds, "peak_growth_mib": (peak - before) / 1024,
            "mask_mib": mask.nbytes / 2**20, "frames": frames}


def measure(runs: int, slices: int = SLICES, size: int = SIZE) -> dict[str, list[dict[str, float]]]:
    """``runs`` counted rounds after a warm-up round, contenders interleaved, each in a fresh process."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    for round_number in range(runs + 1):
        for name in CONTENDERS:
            output = subprocess.run([sys.executable, __file__, "--one", name, "--slices", str(slices),
                                     "--size", str(size)], check=True, capture_output=True, text=True).stdout
            if round_number > 0:  # the first round warms the disk cache and the imports
                results[name].append(json.loads(output))
    return results


def report(results: dict[str, list[dict[str, float]]], slices: int = SLICES, size: int = SIZE) -> str:
    """The Markdown table of a measurement."""
    plain = [r["seconds"] for r in results[CONTENDERS[0]]]
    mask_mib = results[CONTENDERS[0]][0]["mask_mib"]
    held = len(segment_slices(slices))
    lines = [f"A {slices}-slice {size}x{size} binary mask (uint8, {mask_mib:.1f} MiB; {held} slices hold the segment) "
             "over its shuffled CT sources, as one SEG in memory; time of a build after the process's first:", "",
             "| contender | median (s) | min–max (s) | highdicom time / this, round by round | first build in "
             "the process (s) | peak growth (MiB) | peak / mask |", "|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        ratios = [a / b for a, b in zip(plain, seconds)]
        peak = statistics.median(r["peak_growth_mib"] for r in runs)
        lines.append(f"| {name} | {statistics.median(seconds):.3f} | {min(seconds):.3f}–{max(seconds):.3f} | "
                     f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | "
                     f"{statistics.median(r['first_seconds'] for r in runs):.3f} | {peak:.0f} | "
                     f"{peak / mask_mib:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted runs per contender (default 5)")
    parser.add_argument("--slices", type=int, default=SLICES, help=f"slices of the mask (default {SLICES})")
    parser.add_argument("--size", type=int, default=SIZE, help=f"rows and columns (default {SIZE})")
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.slices, args.size)))
        return 0
    print(report(measure(args.runs, args.slices, args.size), args.slices, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
