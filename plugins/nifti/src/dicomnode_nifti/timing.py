"""The time step of a 4D image: RepetitionTime, and what vendors add to it.

GE fMRI with a slice-group delay ("delay after acquisition", private
``(0043,107C)`` in the ``GEMS_PARM_01`` block, in seconds) acquires a volume
every RepetitionTime plus that delay; dcm2niix writes the sum as the NIfTI
time step, and so do we.
"""

from __future__ import annotations

from pydicom import Dataset

from dicomnode_numpy import text_value

__all__ = ["ge_group_delay", "time_step"]

_GE_CREATOR = "GEMS_PARM_01"


def ge_group_delay(dataset: Dataset) -> float:
    """GE's slice-group delay of ``dataset`` in seconds; 0 when it has none (or is not GE)."""
    if "GE" not in str(text_value(dataset, "Manufacturer") or "").upper():
        return 0.0
    try:
        value = dataset.private_block(0x0043, _GE_CREATOR)[0x7C].value
        delay = float(value[0] if isinstance(value, list | tuple) else value)
    except (KeyError, TypeError, ValueError):
        return 0.0
    return delay if delay > 0.0 else 0.0


def time_step(dataset: Dataset) -> float | None:
    """Seconds between the volumes of a 4D series, from its first image; None without RepetitionTime."""
    repetition = text_value(dataset, "RepetitionTime")
    if isinstance(repetition, list):
        repetition = repetition[0]
    try:
        milliseconds = float(repetition) if repetition is not None else 0.0
    except ValueError:
        return None
    if milliseconds <= 0.0:
        return None
    return milliseconds / 1000.0 + ge_group_delay(dataset)
