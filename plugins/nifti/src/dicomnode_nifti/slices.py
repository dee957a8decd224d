"""What the NIfTI header says about slices: ``dim_info`` and ``slice_code``, set where dcm2niix sets them.

``dim_info`` names the frequency, phase and slice axes (1-based, two bits
each). dcm2niix sets it for every image whose header has
InPlanePhaseEncodingDirection: ``ROW`` gives frequency 2, phase 1, slice 3
(54), ``COL`` frequency 1, phase 2, slice 3 (57); otherwise it stays 0.

``slice_code`` says in which order the slices were acquired. dcm2niix reads
it from the Siemens CSA image header's MosaicRefAcqTimes (the acquisition
time of every slice, in file order) of the first image, or else of the
last, and recognises the patterns NIfTI names from the earliest slice and
its neighbours; a multiband acquisition (several slices at time 0), a 3D
acquisition, a protocol whose slice numbering does not start at 1, or times
that fit no pattern leave it 0 (unknown).
"""

from __future__ import annotations

import warnings
from typing import Any

from pydicom import Dataset

from dicomnode_numpy import text_value

__all__ = ["SLICE_CODES", "dim_info", "slice_code"]

#: NIfTI's slice order codes
SLICE_CODES = {"unknown": 0, "seq_inc": 1, "seq_dec": 2, "alt_inc": 3, "alt_dec": 4, "alt_inc2": 5, "alt_dec2": 6}

_DIM_INFO = {"ROW": (3 << 4) | (1 << 2) | 2, "COL": (3 << 4) | (2 << 2) | 1}


def _phase_direction(dataset: Dataset) -> str:
    value = text_value(dataset, "InPlanePhaseEncodingDirection")
    if value:
        return str(value).upper()
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = dataset.get(sequence)
        if not groups:
            continue
        geometry = groups[0].get("MRFOVGeometrySequence")
        if geometry:
            found = geometry[0].get("InPlanePhaseEncodingDirection")
            if found:
                return str(found).upper()
    return ""


def dim_info(dataset: Dataset) -> int:
    """The ``dim_info`` byte of a series whose first image is ``dataset`` (0: unknown)."""
    return _DIM_INFO.get(_phase_direction(dataset)[:3], 0)


def _csa_numbers(dataset: Dataset, name: str) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nibabel warns about its DICOM readers on import
        from nibabel.nicom import csareader

    try:
        header: dict[str, Any] | None = csareader.get_csa_header(dataset, "image")  # type: ignore[no-untyped-call]
    except Exception:  # a damaged private header is the same as none
        return []
    if not header:
        return []
    items = header.get("tags", {}).get(name, {}).get("items", [])
    try:
        return [float(item) for item in items]
    except (TypeError, ValueError):
        return []


def _order(times: list[float]) -> int:
    """The NIfTI slice code of slice acquisition ``times`` in file order, as dcm2niix tells it."""
    lowest = min(times)
    if lowest < 0:  # the CSA times may start below zero
        times = [time - lowest for time in times]
    count = len(times)
    earliest = min(range(count), key=lambda index: (times[index], index))
    latest = max(range(count), key=lambda index: (times[index], -index))
    zeros = sum(1 for time in times if time == 0)
    if earliest == latest or zeros >= 2:  # no spread (3D), or several slices at once (multiband)
        return SLICE_CODES["unknown"]
    if earliest == 1:
        return SLICE_CODES["alt_inc2"]
    if earliest == count - 2:
        return SLICE_CODES["alt_dec2"]
    if earliest == 0:
        return SLICE_CODES["seq_inc"] if times[1] < times[2] else (
            SLICE_CODES["alt_inc"] if times[1] > times[2] else SLICE_CODES["unknown"])
    if earliest == count - 1:
        return SLICE_CODES["seq_dec"] if times[count - 3] > times[count - 2] else (
            SLICE_CODES["alt_dec"] if times[count - 3] < times[count - 2] else SLICE_CODES["unknown"])
    return SLICE_CODES["unknown"]


def _slice_code_of(dataset: Dataset) -> int:
    if "SIEMENS" not in str(text_value(dataset, "Manufacturer") or "").upper():
        return 0
    if str(text_value(dataset, "MRAcquisitionType") or "").upper() == "3D":
        return 0
    protocol = _csa_numbers(dataset, "ProtocolSliceNumber")
    if protocol and protocol[0] > 1:
        return 0
    times = _csa_numbers(dataset, "MosaicRefAcqTimes")
    return _order(times) if len(times) > 3 else 0


def slice_code(first: Dataset, last: Dataset) -> int:
    """The ``slice_code`` of a series from its first image, or its last when the first does not tell."""
    return _slice_code_of(first) or (_slice_code_of(last) if last is not first else 0)
