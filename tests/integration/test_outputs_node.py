"""A node delivering its result through both outputs at once: C-STORE to DCMTK storescp and files on disk."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp, storescu
from node import CT, wait_until
from pydicom import dcmread

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.outputs import PipelineOutput
from dicomnode.net import Address
from dicomnode.server.nodes import AbstractPipeline

pytestmark = pytest.mark.plugin("dicom-output", "file-output")

try:
    from dicomnode_dicom_output import DicomOutput
    from dicomnode_file_output import FileOutput
except ImportError:  # a session without the plugins deselects every test here (pytestmark)
    pass


class TwoOutputNode(AbstractPipeline):
    """Sends each patient's CT on to an archive and writes it to a results folder."""

    ae_title = "TWOOUT"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT}
    log_level = "WARNING"
    maintenance_thread = False
    archive: ClassVar[Address | None] = None
    results: ClassVar[Path | None] = None

    def process(self, input_container: InputContainer) -> list[PipelineOutput]:
        assert self.archive is not None and self.results is not None
        images = input_container["CT"]
        return [DicomOutput([(self.archive, images)], self.config.ae_title, attempts=2, first_delay=0.1),
                FileOutput([(self.results, images)])]


def test_a_node_delivers_to_storescp_and_to_a_folder(tmp_path: Path) -> None:
    require_peer("dcmtk")
    series = synthetic_series(slices=6, rows=16, columns=16, patient_id="../../BOTH")
    files = write_series(series, tmp_path / "in")
    port = free_port()
    uids = {str(ds.SOPInstanceUID) for ds in series}

    class Node(TwoOutputNode):
        archive = Address("127.0.0.1", port, "ARCHIVE")
        results = tmp_path / "results"

    with storescp(tmp_path / "archive", port, ae_title="ARCHIVE"), Node() as node:
        sent = storescu(node.port, files, called_aet="TWOOUT")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert wait_until(lambda: node.jobs_succeeded == 1, timeout=30)

    archived = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (tmp_path / "archive").iterdir()}
    assert archived == uids
    written = list((tmp_path / "results").rglob("*.dcm"))
    assert {p.stem for p in written} == uids
    assert all((tmp_path / "results") in p.parents for p in written)
    (patient_folder,) = (tmp_path / "results").iterdir()
    assert patient_folder.name.startswith("BOTH-")



class BackToSenderNode(AbstractPipeline):
    """Returns each patient's images to whichever known endpoint sent them."""

    ae_title = "RETURNER"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT}
    log_level = "WARNING"
    maintenance_thread = False

    def process(self, input_container: InputContainer) -> PipelineOutput:
        return DicomOutput.back_to_sender(input_container["CT"], attempts=2, first_delay=0.1)


def test_a_node_returns_the_result_to_the_known_endpoint_that_sent_the_images(tmp_path: Path) -> None:
    require_peer("dcmtk")
    series = synthetic_series(slices=6, rows=16, columns=16, patient_id="RETURN")
    files = write_series(series, tmp_path / "in")
    port = free_port()

    class Node(BackToSenderNode):
        known_endpoints = {"MODALITY": Address("127.0.0.1", port, "MODALITY")}

    with storescp(tmp_path / "modality", port, ae_title="MODALITY"), Node() as node:
        sent = storescu(node.port, files, called_aet="RETURNER", calling_aet="MODALITY")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert wait_until(lambda: node.jobs_succeeded + node.jobs_failed == 1, timeout=30)
        assert node.jobs_succeeded == 1

    returned = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (tmp_path / "modality").iterdir()}
    assert returned == {str(ds.SOPInstanceUID) for ds in series}


def test_an_unknown_sender_gets_nothing_back_and_the_job_is_quarantined_with_the_reason(tmp_path: Path) -> None:
    require_peer("dcmtk")
    series = synthetic_series(slices=6, rows=16, columns=16, patient_id="STRANGER")
    files = write_series(series, tmp_path / "in")

    class Node(BackToSenderNode):
        data_directory = tmp_path / "data"

    with Node() as node:
        sent = storescu(node.port, files, called_aet="RETURNER", calling_aet="STRANGER")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        # the failure is counted before the patient's files are moved: wait for the entry itself
        assert wait_until(lambda: len(node.quarantine.list()) == 1, timeout=30)
        (entry,) = node.quarantine.list()
        assert node.jobs_failed == 1 and node.jobs_succeeded == 0
    assert "known_endpoints" in entry.reason
