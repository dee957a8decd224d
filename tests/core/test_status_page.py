"""The status page in a real browser: headless Chromium renders it, and shows what the node holds.

``DICOMNODE_STATUS_SCREENSHOT=docs/images/status-page.png`` makes the test
write the screenshot the documentation shows.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from chromium import render
from conftest import require_peer

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.net import send_datasets
from dicomnode.server.nodes import AbstractPipeline


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    minimum_images = 30


class Structures(AbstractInput):
    required_values = {"Modality": "MR"}
    minimum_images = 1


class SegmentationNode(AbstractPipeline):
    ae_title = "SEGMENTER"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT, "MR": Structures}
    admin_port = 0
    maintenance_thread = False
    log_level = "WARNING"

    def process(self, input_container: InputContainer) -> PipelineOutput:
        if input_container.patient_key == "PAT-0042":
            raise RuntimeError("the model ran out of GPU memory")
        return NoOutput()


def test_chromium_renders_the_status_page_with_the_patients_waiting(tmp_path: Path) -> None:
    chromium = require_peer("chromium")
    with SegmentationNode(data_directory=tmp_path / "data") as node:
        for patient, slices in (("PAT-0017", 12), ("PAT-0023", 30)):
            assert send_datasets(node.address, synthetic_series(patient_id=patient, slices=slices, rows=8,
                                                                columns=8), ae_title="CT_SCANNER").ok
        failing = synthetic_series(patient_id="PAT-0042", slices=30, rows=8, columns=8)
        failing += synthetic_series(patient_id="PAT-0042", slices=1, rows=8, columns=8, modality="MR")
        assert send_datasets(node.address, failing, ae_title="CT_SCANNER").ok
        assert node.wait_for_jobs(60)
        url = f"http://127.0.0.1:{node.operations.admin_port}/"
        picture = Path(os.environ.get("DICOMNODE_STATUS_SCREENSHOT") or tmp_path / "status.png").resolve()
        dom = render(chromium, tmp_path / "profile", url, picture)
    assert "<title>SegmentationNode — dicomnode status</title>" in dom
    assert 'class="state ready"' in dom
    assert "PAT-0017" in dom and "PAT-0023" in dom
    assert "CT: at least 30 images, has 12; MR: at least 1 image, has 0" in dom
    assert "quarantined as" in dom and "the model ran out of GPU memory" in dom  # the latest events
    header = picture.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1200, 860)
