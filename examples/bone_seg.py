"""A node that thresholds a CT into a bone mask and sends it back as a DICOM SEG with a volume report.

NumpyGrinder turns the series into a volume (Hounsfield units plus geometry),
``process`` keeps the voxels of at least 200 HU, SegFactory writes them as a
Segmentation whose frames reference their source slices, and
MeasurementReportFactory a TID 1500 report of the bone volume that
references the segment. Both are checked against their IOD before they leave
(``validate=True``: dciodvfy when it is installed) and DicomOutput sends them
to the PACS. Running the job again gives the same UIDs, so the PACS replaces
the earlier result.

Needs the numpy, highdicom and dicom-output plugins::

    pip install ./core ./plugins/numpy ./plugins/highdicom ./plugins/dicom-output
    dicomnode run examples/bone_seg.py --port 11112
"""

from __future__ import annotations

import attrs
import numpy as np

from dicomnode import AbstractInput, AbstractPipeline, InputContainer, PipelineOutput
from dicomnode.net import Address
from dicomnode_dicom_output import DicomOutput
from dicomnode_highdicom import Measurement, MeasurementReportFactory, SegFactory, Segment
from dicomnode_numpy import NumpyGrinder

#: the CT number from which a voxel counts as bone
THRESHOLD_HU = 200


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    required_tags = ["SeriesInstanceUID", "ImagePositionPatient"]
    series_selection = "largest"  # a study has many series: grind the largest
    image_grinder = NumpyGrinder()
    slices = 40

    def validate(self) -> bool:
        return self.images >= type(self).slices


class BoneSeg(AbstractPipeline):
    ae_title = "BONESEG"
    ip = "0.0.0.0"
    port = 11112
    input = {"CT": CT}
    data_directory = "bone-seg-data"
    known_endpoints = {"PACS": Address("127.0.0.1", 4242, "PACS")}

    def post_init(self) -> None:
        made_by = {"algorithm_name": "bone-threshold", "algorithm_version": "1.0", "validate": True}
        self.segmentation = SegFactory(**made_by)
        self.measurements = MeasurementReportFactory(**made_by)

    def process(self, input_container: InputContainer) -> PipelineOutput:
        volume = input_container["CT"]
        source = input_container.datasets["CT"]
        mask = (volume.array >= THRESHOLD_HU).astype(np.uint8)
        seg = self.segmentation.build(attrs.evolve(volume, array=mask), source,
                                      segments=[Segment(number=1, label="bone")])
        millilitres = float(np.count_nonzero(mask) * np.prod(volume.spacing)) / 1000
        report = self.measurements.build(seg, source, measurements=[
            Measurement(segment=1, name="volume", value=round(millilitres, 3), unit="ml"),
        ])
        return DicomOutput([(self.config.known_endpoints["PACS"], [seg, report])], self.config.ae_title)


if __name__ == "__main__":
    BoneSeg().open()
