"""Building a derived series' headers: dicomnode's SeriesHeader against a deep-copy loop.

The job: from a 300-slice CT parent series (read from files, about 150
attributes each including private ones and sequences), make the non-pixel
attributes of 300 derived instances: new series and instance UIDs, series
number, derived image type, equipment, dates, a reference to the source
slice, the parent's patient, study, frame of reference and per-slice geometry.

Contenders, run interleaved in one process (A B C A B C …) after a warm-up,
each on freshly read parents so no one profits from another's decoding:

- ``pydicom deepcopy loop``: what a script without dicomnode does — deep-copy
  each parent, drop its pixel data, set the new values.
- ``dicomnode (discard)``: ``build_series_header`` with DEFAULT_BLUEPRINT +
  CT_IMAGE_BLUEPRINT, then ``instantiate`` 300 times; deterministic UIDs.
- ``dicomnode (copy policy)``: the same, also carrying over every parent
  attribute the slices share (like the loop does).

    python benchmarks/build_header.py --runs 7
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT
from dicomnode.dicom.factory import DicomFactory, InstanceEnvironment, SeriesHeader

SLICES = 300
SIZE = 512


class HeaderOnlyFactory(DicomFactory):
    """Makes the instances' headers; the pixel data is another benchmark's business."""

    def build_series(self, image: Any, header: SeriesHeader, parent_series: Sequence[Dataset] | None = None,
                     kwargs: Any = None) -> list[Dataset]:
        return [
            header.instantiate(InstanceEnvironment(
                number, header_dataset=header.dataset, factory=self, total_images=image))
            for number in range(1, image + 1)
        ]


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99LOCAL", meaning
    return item


def make_parents(directory: Path) -> list[Path]:
    """A CT series as a scanner sends it: many attributes, private ones, a few sequences."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = bytes(SIZE * SIZE * 2)
    paths = []
    for index in range(SLICES):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            setattr(ds, keyword, "20240131")
        for keyword in ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime"):
            setattr(ds, keyword, "101500.123456")
        ds.AccessionNumber, ds.Modality, ds.Manufacturer = "ACC-1", "CT", "Scanner Co"
        ds.InstitutionName, ds.InstitutionAddress = "University Hospital", "Blegdamsvej 9, Copenhagen"
        ds.ReferringPhysicianName, ds.StationName = "Ref^Doctor", "CT01"
        ds.StudyDescription, ds.SeriesDescription = "Abdomen with contrast", "Portal venous 2.5mm"
        ds.InstitutionalDepartmentName = "Radiology"
        ds.PerformingPhysicianName, ds.OperatorsName = "Perf^Doctor", "Op^Erator"
        ds.ManufacturerModelName = "Scanner 9000"
        ds.ProcedureCodeSequence = DicomSequence([_code("CTABD", "CT abdomen")])
        ds.ReferencedImageSequence = DicomSequence([Dataset()])
        ds.ReferencedImageSequence[0].ReferencedSOPClassUID = ds.SOPClassUID
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = "Hansen^Jorgen", "PID-0042"
        ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19600101", "M", "064Y"
        ds.PatientSize, ds.PatientWeight = 1.80, 82.5
        ds.ContrastBolusAgent, ds.BodyPartExamined = "Omnipaque", "ABDOMEN"
        ds.ScanOptions, ds.SliceThickness, ds.KVP = "HELICAL MODE", 2.5, 120
        ds.DataCollectionDiameter, ds.DeviceSerialNumber = 500, "12345"
        ds.SoftwareVersions, ds.ProtocolName = "VA40", "Abdomen portal"
        ds.ReconstructionDiameter, ds.DistanceSourceToDetector, ds.DistanceSourceToPatient = 380, 1085.6, 595
        ds.GantryDetectorTilt, ds.TableHeight, ds.RotationDirection = 0, 150, "CW"
        ds.ExposureTime, ds.XRayTubeCurrent, ds.Exposure = 500, 250, 125
        ds.FilterType, ds.GeneratorPower, ds.FocalSpots = "FLAT", 30, 1.2
        ds.ConvolutionKernel, ds.PatientPosition = "B30f", "HFS"
        ds.RevolutionTime, ds.SingleCollimationWidth, ds.TotalCollimationWidth = 0.5, 0.6, 38.4
        ds.TableSpeed, ds.TableFeedPerRotation, ds.SpiralPitchFactor = 46, 23, 0.6
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = "S1", 3, 1, index + 1
        ds.ImagePositionPatient = [-190.0, -190.0, -2.5 * index]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, "XY"
        ds.SliceLocation = -2.5 * index
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = SIZE
        ds.PixelSpacing = [0.742, 0.742]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = [40, 300], [400, 1500]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.RequestAttributesSequence = DicomSequence([Dataset()])
        ds.RequestAttributesSequence[0].RequestedProcedureID = "RP1"
        ds.RequestAttributesSequence[0].ScheduledProcedureStepID = "SPS1"
        block = ds.private_block(0x0019, "SCANNER CO CT", create=True)
        for offset in range(40):
            block.add_new(0x10 + offset, "LO", f"private value {offset}")
        ds.PixelData = pixels
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = directory / f"{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def deepcopy_loop(parents: list[Dataset]) -> list[Dataset]:
    series_uid = generate_uid()
    now = datetime.datetime.now()
    date, clock = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    result = []
    for number, parent in enumerate(parents, start=1):
        ds = copy.deepcopy(parent)
        del ds.PixelData
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = int(parent.SeriesNumber) + 1000
        ds.ImageType = ["DERIVED", "SECONDARY", *list(parent.ImageType)[2:]]
        ds.Manufacturer, ds.SoftwareVersions = "dicomnode", "dicomnode 0.1.0"
        ds.InstanceCreationDate = ds.SeriesDate = ds.ContentDate = date
        ds.InstanceCreationTime = ds.SeriesTime = ds.ContentTime = clock
        ds.InstanceNumber = number
        reference = Dataset()
        reference.ReferencedSOPClassUID = parent.SOPClassUID
        reference.ReferencedSOPInstanceUID = parent.SOPInstanceUID
        ds.SourceImageSequence = DicomSequence([reference])
        result.append(ds)
    return result


def dicomnode_series(policy: str) -> Callable[[list[Dataset]], list[Dataset]]:
    factory = HeaderOnlyFactory(pipeline_name="benchmark", unmentioned_parent_tags=policy)
    blueprint = DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT

    def build(parents: list[Dataset]) -> list[Dataset]:
        header = factory.build_series_header(parents, blueprint)
        return factory.build_series(len(parents), header, parents)

    return build


CONTENDERS: dict[str, Callable[[list[Dataset]], list[Dataset]]] = {
    "pydicom deepcopy loop": deepcopy_loop,
    "dicomnode (discard)": dicomnode_series("discard"),
    "dicomnode (copy policy)": dicomnode_series("copy"),
}


def measure(paths: list[Path], runs: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    elements: dict[str, int] = {}
    for round_number in range(runs + 1):
        for name, build in CONTENDERS.items():
            parents = [dcmread(path) for path in paths]  # fresh: nothing decoded yet
            gc.collect()  # start each contender without the garbage of the last
            start = time.perf_counter()
            datasets = build(parents)
            elapsed = time.perf_counter() - start
            assert len(datasets) == SLICES
            elements[name] = len(datasets[0])
            if round_number > 0:  # the first round is the warm-up
                times[name].append(elapsed)
    return times, elements


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="counted runs per contender (default 7)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dicomnode-bench-") as directory:
        paths = make_parents(Path(directory))
        times, elements = measure(paths, args.runs)
    reference = statistics.median(times["pydicom deepcopy loop"])
    print(f"Headers of {SLICES} derived instances from a {SLICES}-slice CT parent "
          f"({args.runs} interleaved runs after a warm-up, Python {sys.version.split()[0]}):\n")
    print("| contender | median (ms) | min–max (ms) | elements per instance | loop time / this |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1000:.1f} | {min(values) * 1000:.1f}–{max(values) * 1000:.1f} "
              f"| {elements[name]} | {reference / median:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
