"""Every C-STORE answer is a documented status (see dicomnode.server.receive).

A pynetdicom client sends here because it reports the exact status code and
ErrorComment; DCMTK storescu only prints the status class.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_peer
from dcmtk import storescu
from node import RecordingNode, wait_until
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.server import ingest as receive
from dicomnode.server.storage import InstanceStore


class PickyNode(RecordingNode):
    """Refuses images whose SeriesDescription says so."""

    def filter(self, dataset: Dataset) -> bool:
        return dataset.get("SeriesDescription", "") != "refuse me"


def _send(port: int, dataset: Dataset) -> Dataset:
    client = AE(ae_title="CLIENT")
    client.add_requested_context(CTImageStorage)
    assoc = client.associate("127.0.0.1", port, ae_title="TESTNODE")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    return status


def _image(**options: object) -> Dataset:
    return synthetic_series(slices=1, rows=8, columns=8, **options)[0]  # type: ignore[arg-type]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[PickyNode]:
    """A node that refuses with a failure status (``rejection_policy = "failure"``; the default discards)."""
    with PickyNode(data_directory=tmp_path / "data", rejection_policy="failure") as running:
        yield running


def test_an_accepted_image_gets_success(node: PickyNode) -> None:
    assert _send(node.port, _image()).Status == receive.STATUS_SUCCESS == 0x0000


def test_an_image_no_input_accepts_gets_0xC004_saying_why(node: PickyNode) -> None:
    mr = _image()
    mr.Modality = "MR"
    status = _send(node.port, mr)
    assert status.Status == receive.STATUS_NOT_ACCEPTED == 0xC004
    assert "no input accepts it" in status.ErrorComment


def test_an_image_without_the_patient_identifier_gets_0xC002(node: PickyNode) -> None:
    image = _image()
    del image.PatientID
    status = _send(node.port, image)
    assert status.Status == receive.STATUS_MISSING_PATIENT_ID == 0xC002
    assert "patient identifier" in status.ErrorComment


def test_an_image_the_filter_rejects_gets_0xC003(node: PickyNode) -> None:
    status = _send(node.port, _image(series_description="refuse me"))
    assert status.Status == receive.STATUS_REJECTED_BY_FILTER == 0xC003


def test_a_filter_that_raises_gets_0xC005_and_the_association_goes_on(tmp_path: Path) -> None:
    class Broken(RecordingNode):
        def filter(self, dataset: Dataset) -> bool:
            raise KeyError("bug")

    with Broken() as broken:
        assert _send(broken.port, _image()).Status == receive.STATUS_FILTER_ERROR == 0xC005
        assert _send(broken.port, _image()).Status == 0xC005


def test_an_unwritable_data_directory_gets_0xA700(node: PickyNode) -> None:
    assert node.store is not None
    (node.store.directory / "P-BLOCKED").write_text("a file where the patient folder should be")
    status = _send(node.port, _image(patient_id="P-BLOCKED"))
    assert status.Status == receive.STATUS_OUT_OF_RESOURCES == 0xA700


def test_rejected_images_are_stored_nowhere(node: PickyNode) -> None:
    mr = _image()
    mr.Modality = "MR"
    _send(node.port, mr)
    assert node.store is not None and list(node.store.files()) == []
    assert len(node.tree) == 0


def test_the_default_discard_policy_answers_success_and_keeps_nothing(tmp_path: Path) -> None:
    with PickyNode(data_directory=tmp_path / "data") as node:
        assert node.config.rejection_policy == "discard"
        mr = _image()
        mr.Modality = "MR"
        assert _send(node.port, mr).Status == 0x0000
        assert _send(node.port, _image(series_description="refuse me")).Status == 0x0000
        assert list(InstanceStore(tmp_path / "data").files()) == []


def test_dcmtk_sees_a_refused_image_as_a_failure(tmp_path: Path, node: PickyNode) -> None:
    require_peer("dcmtk")
    mr = _image()
    mr.Modality = "MR"
    paths = write_series([mr], tmp_path / "mr")
    result = storescu(node.port, paths, called_aet="TESTNODE", extra=["-v"])
    assert result.returncode != 0
    assert "Received Store Response (Error: CannotUnderstand)" in result.stdout + result.stderr


def test_an_image_over_maximum_dataset_size_gets_0xA700_and_the_node_records_it(tmp_path: Path) -> None:
    from dicomnode.server.events import AssociationSummary, NodeListener

    class Summaries(NodeListener):
        def __init__(self) -> None:
            self.seen: list[AssociationSummary] = []

        def association(self, summary: AssociationSummary) -> None:
            self.seen.append(summary)

    summaries = Summaries()
    with PickyNode(maximum_dataset_size=2048) as running:
        running.events.add(summaries)
        big = synthetic_series(slices=1, rows=64, columns=64)[0]  # 8 KiB of pixels
        status = _send(running.port, big)
        assert status.Status == 0xA700 and str(status.ErrorComment).startswith("dataset too large")
        assert wait_until(lambda: len(summaries.seen) == 1, timeout=5)
    [summary] = summaries.seen
    assert dict(summary.refused) == {0xA700: 1} and summary.stored == 0
    assert summary.bytes > 8192
