"""Checks for result objects (SEG, SR, secondary captures) made from the synthetic geometry series.

:func:`source_and_volume` makes a series of :mod:`geometry_series` and grinds
it; :func:`dciodvfy` runs the real dciodvfy on a dataset written to a file
(independent of dicomnode's own validation module); :func:`frame_references`
reads, for every frame of a SEG, its position and the source it references.

Needs numpy and the numpy plugin (so it is only imported by plugin tests).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from conftest import require_peer
from geometry_series import CASES, SeriesSpec, build_series
from pydicom import Dataset

from dicomnode_numpy import NumpyGrinder


def source_and_volume(case: str | SeriesSpec) -> tuple[list[Dataset], Any]:
    """The datasets of a geometry case (in delivery order) and the grinder's Volume of them."""
    spec = CASES[case] if isinstance(case, str) else case
    datasets = build_series(spec)
    return datasets, NumpyGrinder()(datasets)


def dciodvfy(dataset: Dataset, path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) of dciodvfy for ``dataset`` written to ``path``."""
    program = require_peer("dciodvfy")
    dataset.save_as(path, enforce_file_format=True)
    result = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], [line for line in lines if line.startswith("Warning")]


def position(dataset: Dataset, frame: int | None = None) -> np.ndarray:
    """ImagePositionPatient of a single-frame image, or of frame ``frame`` (1-based) of a multi-frame one."""
    if frame is None:
        return np.array([float(v) for v in dataset.ImagePositionPatient])
    item = dataset.PerFrameFunctionalGroupsSequence[frame - 1]
    return np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])


def frame_references(seg: Dataset) -> list[tuple[np.ndarray, str, int | None, int]]:
    """For every frame of ``seg``: (its position, the referenced SOPInstanceUID, frame number, segment number)."""
    found = []
    shared = seg.SharedFunctionalGroupsSequence[0]
    for item in seg.PerFrameFunctionalGroupsSequence:
        identification = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        found.append((
            np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]),
            str(source.ReferencedSOPInstanceUID),
            int(source.ReferencedFrameNumber) if "ReferencedFrameNumber" in source else None,
            int(identification[0].ReferencedSegmentNumber),
        ))
    return found


def blob_mask(shape: tuple[int, ...], labels: int = 1) -> np.ndarray:
    """A uint8 mask with ``labels`` boxes (values 1..labels) that leaves the first and last slices empty."""
    mask = np.zeros(shape, dtype=np.uint8)
    slices, rows, columns = shape
    for label in range(1, labels + 1):
        top = (label - 1) * rows // (labels + 1)
        mask[1:slices - 1, top + 1:top + rows // (labels + 1), 2 + label:columns // 2 + label] = label
    return mask
