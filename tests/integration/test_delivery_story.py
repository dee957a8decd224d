"""Quarantine and outbox tell one story: what an output delivered is never sent again.

A job whose output deferred its work to the outbox waits in the quarantine
until the outbox delivers, then its entry closes; a job that failed after an
output delivered is retried without sending that output again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import free_port
from recording_scp import recording_scp

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import PipelineOutput
from dicomnode.net import Address
from dicomnode.server.maintenance import MaintenanceThread
from dicomnode.server.nodes import AbstractPipeline

pytestmark = pytest.mark.plugin("dicom-output")


class Three(AbstractInput):
    def validate(self) -> bool:
        return self.images >= 3


class Explodes(PipelineOutput):
    """Fails until ``healed``."""

    healed = False

    def send(self) -> bool:
        if not Explodes.healed:
            raise ConnectionError("the second destination is unreachable")
        return True


class Story(AbstractPipeline):
    ae_title = "STORY"
    input = {"all": Three}
    maintenance_thread = False
    outbox_retry_delay = 0.01
    port_of_peer = 0
    also_explode = False

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        from dicomnode_dicom_output import DicomOutput

        peer = Address("127.0.0.1", type(self).port_of_peer, "RECORDER")
        outputs: list[PipelineOutput] = [DicomOutput([(peer, input_container.datasets["all"])], attempts=1,
                                                     timeout=5)]
        if type(self).also_explode:
            outputs.append(Explodes())
        return outputs


def _receive(node: AbstractPipeline, patient: str = "P1") -> set[str]:
    """Store a patient's series as the node's receive path would, and run its job here."""
    assert node.store is not None
    series = synthetic_series(patient_id=patient, slices=3, rows=8, columns=8)
    for image in series:
        node.tree.add_image(patient, image, node.store.write_dataset(patient, image), "SCANNER")
    assert node.check_ready() == 1  # the node is not open: the job runs in this thread
    return {str(image.SOPInstanceUID) for image in series}


def test_a_job_whose_output_deferred_waits_and_closes_when_the_outbox_delivers(tmp_path: Path) -> None:
    port = free_port()
    Story.port_of_peer, Story.also_explode = port, False
    node = Story(data_directory=tmp_path / "data")
    assert node.quarantine is not None and node.outbox is not None and node.store is not None

    uids = _receive(node)  # nobody listens: the series goes to the outbox

    (entry,) = node.quarantine.list()
    (deferred,) = node.outbox.entries()
    assert not entry.failed and entry.state == "waiting for the outbox"
    assert entry.pending_outbox == (deferred.id,) and entry.outputs_done == ("0:dicom",)
    assert (deferred.patient_key, deferred.job_id) == ("P1", entry.job_id)
    assert node.jobs_succeeded == 1 and node.jobs_failed == 0
    assert list(node.store.files()) == []  # the images wait in the quarantine entry

    with recording_scp(port) as peer:
        assert MaintenanceThread(node).retry_outbox() == 1

    assert peer.accepted() == dict.fromkeys(uids, 1)
    assert node.outbox.entries() == [] and node.quarantine.list() == []


def test_a_retry_never_sends_again_what_an_output_delivered(tmp_path: Path) -> None:
    port = free_port()
    Story.port_of_peer, Story.also_explode = port, True
    Explodes.healed = False
    node = Story(data_directory=tmp_path / "data")
    assert node.quarantine is not None

    with recording_scp(port) as peer:
        uids = _receive(node)
        (entry,) = node.quarantine.list()
        assert entry.failed and entry.outputs_done == ("0:dicom",)
        assert "Explodes.send() raised ConnectionError" in entry.reason

        Explodes.healed = True
        assert node.quarantine.retry(entry.id, node) is True

    assert peer.sent() == dict.fromkeys(uids, 1)  # the DicomOutput's series went out once
    assert node.quarantine.list() == []


def test_a_retry_that_fails_again_keeps_what_was_done(tmp_path: Path) -> None:
    port = free_port()
    Story.port_of_peer, Story.also_explode = port, True
    Explodes.healed = False
    node = Story(data_directory=tmp_path / "data")
    assert node.quarantine is not None

    with recording_scp(port) as peer:
        uids = _receive(node)
        (entry,) = node.quarantine.list()
        assert node.quarantine.retry(entry.id, node) is False

    (again,) = node.quarantine.list()
    assert again.id == entry.id and again.failed and again.outputs_done == ("0:dicom",)
    assert peer.sent() == dict.fromkeys(uids, 1)
