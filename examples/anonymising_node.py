"""A node that anonymises every study it receives and forwards it to a research PACS.

Identifiers and UIDs are replaced consistently (the same patient always gets
the same pseudonym, references between objects stay valid); the mapping is
kept in ``mapping.json`` in the data directory so a data manager can
re-identify a result later. Dates, names and free text are removed or
emptied as :func:`dicomnode.dicom.anonymization.anonymize` documents.

Needs the dicom-output plugin::

    pip install ./core ./plugins/dicom-output
    dicomnode run examples/anonymising_node.py
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from dicomnode import AbstractInput, AbstractPipeline, InputContainer, PipelineOutput
from dicomnode.dicom.anonymization import anonymize
from dicomnode.dicom.tree import IdentityMapping
from dicomnode.extension.grinders import ListGrinder
from dicomnode.net import Address
from dicomnode_dicom_output import DicomOutput


class Study(AbstractInput):
    required_tags = ["StudyInstanceUID", "SOPInstanceUID"]
    image_grinder = ListGrinder()


class Anonymiser(AbstractPipeline):
    ae_title = "ANONYMISER"
    ip = "0.0.0.0"
    port = 11112
    input = {"study": Study}
    data_directory = "anonymiser-data"
    stable_time = 15.0  # a study is complete when nothing new arrived for 15 s
    known_endpoints = {"RESEARCH": Address("127.0.0.1", 4242, "RESEARCH")}

    def post_init(self) -> None:
        self.mapping_file = Path(str(self.config.data_directory)) / "mapping.json"
        self.lock = threading.Lock()  # jobs run on several workers; the mapping is shared
        if self.mapping_file.exists():
            self.mapping = IdentityMapping.from_json(self.mapping_file.read_text(encoding="utf-8"))
        else:
            self.mapping = IdentityMapping(identifier_prefix="STUDY")

    def process(self, input_container: InputContainer) -> PipelineOutput:
        with self.lock:
            datasets = anonymize(input_container["study"], self.mapping)
            self.mapping_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.mapping_file.with_suffix(".tmp")
            temporary.write_text(self.mapping.to_json(), encoding="utf-8")
            os.replace(temporary, self.mapping_file)  # never a half-written record of who is who
        return DicomOutput([(self.config.known_endpoints["RESEARCH"], datasets)], self.config.ae_title)


if __name__ == "__main__":
    Anonymiser().open()
