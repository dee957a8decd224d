"""A node for one GPU: jobs run one at a time, in the order patients became complete.

:class:`~dicomnode.AbstractQueuedPipeline` never runs two ``process`` calls at
once, so a model loaded once in ``post_init`` is never used by two jobs
together. Here the "model" measures how much of a CT is denser than water
(a stand-in for a real network) and the result is a JSON report per patient,
written by an output of our own: an output is any class with ``send()``.

Runs with the core alone (the pixels are read with the standard library)::

    dicomnode run examples/queued_node.py
"""

from __future__ import annotations

import json
import os
import time
from array import array
from pathlib import Path

from dicomnode import AbstractInput, AbstractQueuedPipeline, InputContainer, PipelineOutput
from dicomnode.extension.grinders import ListGrinder


class DensityModel:
    """Counts voxels above a threshold (in Hounsfield units); loading it is the slow part."""

    def __init__(self, threshold_hu: float = 100.0) -> None:
        self.threshold_hu = threshold_hu
        self.loaded_at = time.time()

    def dense_fraction(self, datasets: list) -> float:
        dense = total = 0
        for ds in datasets:
            pixels = array("H" if ds.PixelRepresentation == 0 else "h", ds.PixelData)
            # HU = stored * slope + intercept  <=>  stored > (threshold - intercept) / slope
            limit = (self.threshold_hu - float(ds.RescaleIntercept)) / float(ds.RescaleSlope)
            dense += sum(1 for value in pixels if value > limit)
            total += len(pixels)
        return dense / total if total else 0.0


class ReportOutput(PipelineOutput):
    """Writes one JSON report per patient, atomically (temporary file, then rename)."""

    def __init__(self, directory: str | Path, patient: str, report: dict) -> None:
        self.path = Path(directory) / f"{patient}.json"
        self.report = report

    def send(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.report, indent=2), encoding="utf-8")
        os.replace(temporary, self.path)
        return True


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    image_grinder = ListGrinder()
    slices = 20

    def validate(self) -> bool:
        return self.images >= type(self).slices


class DensityNode(AbstractQueuedPipeline):
    ae_title = "DENSITY"
    ip = "0.0.0.0"
    port = 11112
    input = {"CT": CT}
    data_directory = "density-data"
    report_directory = "reports"

    def post_init(self) -> None:
        self.model = DensityModel(threshold_hu=100.0)  # loaded once, used by every job in turn

    def process(self, input_container: InputContainer) -> PipelineOutput:
        started = time.time()
        fraction = self.model.dense_fraction(input_container["CT"])
        report = {"patient": input_container.patient_key, "images": len(input_container["CT"]),
                  "dense_fraction": round(fraction, 6), "started": started, "finished": time.time()}
        return ReportOutput(type(self).report_directory, input_container.patient_key, report)


if __name__ == "__main__":
    DensityNode().open()
