"""The smallest image-processing node: add 1 to every voxel of a CT and send the result to a PACS.

NumpyGrinder turns the series into a volume (voxels in Hounsfield units plus
the geometry), ``process`` adds one, NumpyFactory builds a new, valid CT
series from the result and the default blueprints, and DicomOutput sends it
to the PACS (with retries, and an outbox if the PACS stays down).

Needs the numpy and dicom-output plugins::

    pip install ./core ./plugins/numpy ./plugins/dicom-output
    dicomnode run examples/plus_one.py --port 11112
"""

from __future__ import annotations

import attrs

from dicomnode import AbstractInput, AbstractPipeline, InputContainer, PipelineOutput
from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT
from dicomnode.dicom.factory import Blueprint, StaticElement
from dicomnode.net import Address
from dicomnode_dicom_output import DicomOutput
from dicomnode_numpy import NumpyFactory, NumpyGrinder

BLUEPRINT = DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT + Blueprint([
    StaticElement("SeriesDescription", "LO", "plus one"),
])


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    required_tags = ["SeriesInstanceUID", "ImagePositionPatient"]
    series_selection = "largest"  # a study has many series: grind the largest
    image_grinder = NumpyGrinder()
    slices = 40

    def validate(self) -> bool:
        return self.images >= type(self).slices


class PlusOne(AbstractPipeline):
    ae_title = "PLUSONE"
    ip = "0.0.0.0"
    port = 11112
    input = {"CT": CT}
    data_directory = "plus-one-data"
    known_endpoints = {"PACS": Address("127.0.0.1", 4242, "PACS")}

    def post_init(self) -> None:
        # one factory for the node's life: it names the pipeline in the derived UIDs, so a re-run
        # of the same input replaces its earlier result in the PACS instead of duplicating it
        self.factory = NumpyFactory(pipeline_name="plus-one")

    def process(self, input_container: InputContainer) -> PipelineOutput:
        volume = input_container["CT"]
        result = attrs.evolve(volume, array=volume.array + 1)
        header = self.factory.build_series_header(input_container.datasets["CT"], BLUEPRINT)
        series = self.factory.build_series(result, header)
        return DicomOutput([(self.config.known_endpoints["PACS"], series)], self.config.ae_title)


if __name__ == "__main__":
    PlusOne().open()
