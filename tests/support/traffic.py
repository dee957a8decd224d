"""A CT study as a PACS sends it (scout, thin and thick reconstructions) and a node that records its jobs."""

from __future__ import annotations

from typing import Any, ClassVar

from pydicom import Dataset

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.grinders import ListGrinder
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.server.nodes import AbstractPipeline

STUDY = "1.2.826.0.1.3680043.8.498.4242"


def ct_study(patient_id: str = "TRAFFIC", study_uid: str = STUDY) -> dict[str, list[Dataset]]:
    """A scout (2 images), a thin (12) and a thick (4) reconstruction of one CT study."""
    common: dict[str, Any] = {"patient_id": patient_id, "study_uid": study_uid, "rows": 8, "columns": 8}
    scout = synthetic_series(slices=2, series_number=1, series_description="Scout", slice_thickness=10.0, **common)
    for image in scout:
        image.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    thin = synthetic_series(slices=12, series_number=2, series_description="AX 1.0", slice_thickness=1.0, **common)
    thick = synthetic_series(slices=4, series_number=3, series_description="AX 3.0", slice_thickness=3.0, **common)
    return {"scout": scout, "thin": thin, "thick": thick}


class LargestCT(AbstractInput):
    required_values = {"Modality": "CT"}
    image_grinder = ListGrinder()
    series_selection = "largest"


class ThinCT(AbstractInput):
    required_values = {"Modality": "CT", "SliceThickness": lambda value: float(value) <= 2.0}
    image_grinder = ListGrinder()


class Recorder(AbstractPipeline):
    """Keeps what each job ground: the SeriesInstanceUIDs and the number of images."""

    ae_title = "TRAFFIC"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": LargestCT}
    maintenance_thread = False
    log_level = "INFO"
    jobs: ClassVar[list[tuple[set[str], int]]] = []

    def process(self, input_container: InputContainer) -> PipelineOutput:
        images = input_container["CT"]
        type(self).jobs.append(({str(image.SeriesInstanceUID) for image in images}, len(images)))
        return NoOutput()
