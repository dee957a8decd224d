"""A node that stores every series it receives into a folder, patient/study/series/instance.

It does not know how many images a study has, so a patient counts as
complete when no new image arrived for ``stable_time`` seconds. Every image is
written to ``data_directory`` before the sender is told "success", so a crash
loses nothing; the result goes to ``output_directory`` with FileOutput
(the ``dicom`` files are written atomically: no half-written files).

Needs the file-output plugin::

    pip install ./core ./plugins/file-output
    python examples/store_to_folder.py          # or: dicomnode run examples/store_to_folder.py
    storescu -aec STORE 127.0.0.1 11112 some/folder/
"""

from __future__ import annotations

from dicomnode import AbstractInput, AbstractPipeline, InputContainer, PipelineOutput
from dicomnode.extension.grinders import ListGrinder
from dicomnode_file_output import FileOutput


class AnyImage(AbstractInput):
    """Every image with a SOP instance UID; complete as soon as it holds one (the stable time decides)."""

    required_tags = ["SOPInstanceUID"]
    image_grinder = ListGrinder()


class StoreToFolder(AbstractPipeline):
    ae_title = "STORE"
    ip = "0.0.0.0"
    port = 11112
    input = {"images": AnyImage}
    data_directory = "store-data"
    stable_time = 10.0  # seconds without a new image of the patient before it is stored
    output_directory = "stored"

    def process(self, input_container: InputContainer) -> PipelineOutput:
        return FileOutput([(type(self).output_directory, input_container["images"])], existing="overwrite")


if __name__ == "__main__":
    StoreToFolder().open()
