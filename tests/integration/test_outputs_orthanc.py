"""DicomOutput against a real Orthanc PACS: what Orthanc holds afterwards is checked through its REST API.

A node receives a series from DCMTK storescu, derives a new series and
delivers it; a destination that is down at first gets the series exactly
once; an Orthanc that refuses our AE title leaves a clear error and the data
in the outbox, from where the maintenance pass delivers it once Orthanc
accepts us.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp, storescu
from node import CT, wait_until
from orthanc import ORTHANC, OrthancServer, orthanc
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.outputs import OutputContext, PipelineOutput
from dicomnode.net import Address
from dicomnode.server.nodes import AbstractPipeline
from dicomnode.server.outbox import Outbox
from dicomnode.testing import output_context

pytestmark = pytest.mark.plugin("dicom-output")

try:
    from dicomnode_dicom_output import DicomOutput
except ImportError:  # a session without the plugin deselects every test here (pytestmark)
    pass

#: Orthanc settings that refuse every calling AE title it does not know
REFUSE_UNKNOWN = {"DicomAlwaysAllowStore": False, "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowFind": False,
                  "DicomAlwaysAllowGet": False, "DicomAlwaysAllowMove": False}


@pytest.fixture(autouse=True)
def _peers() -> None:
    require_peer("orthanc")


def _uids(datasets: Sequence[Dataset]) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds in datasets}


def _context(directory: Path) -> OutputContext:
    return output_context(directory, pipeline_name="test", patient_key="P1", output_name="dicom")


def _restart(pacs: OrthancServer, settings: dict[str, Any] | None = None) -> subprocess.Popen[bytes]:
    """Start Orthanc again on the same ports and storage (optionally with changed settings)."""
    config_path = pacs.directory / "orthanc.json"
    if settings:
        config = json.loads(config_path.read_text())
        config.update(settings)
        config_path.write_text(json.dumps(config))
    log = open(pacs.directory / "orthanc-restarted.log", "ab")  # noqa: SIM115 - closed by Popen's owner
    process = subprocess.Popen([ORTHANC, str(config_path)], env={**os.environ, "TCP_NODELAY": "1"},
                               stdout=log, stderr=subprocess.STDOUT, cwd=pacs.directory)
    log.close()
    assert wait_until(lambda: _answers(pacs), timeout=30), "Orthanc did not come back"
    return process


def _answers(pacs: OrthancServer) -> bool:
    try:
        pacs.rest("GET", "/system", timeout=1.0)
    except Exception:
        return False
    return True


def _kill(pacs: OrthancServer) -> None:
    """Take Orthanc down at once: the destination now refuses connections."""
    _stop_now(pacs.process)


def _stop_now(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL by PID (Orthanc's storage here is throw-away; its own shutdown takes seconds)."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_orthanc_holds_exactly_the_delivered_instances(tmp_path: Path) -> None:
    series = synthetic_series(slices=8, rows=32, columns=32)
    with orthanc(tmp_path) as pacs:
        output = DicomOutput([(pacs.address, series)], "DICOMNODE")

        assert output.send() is True

        assert pacs.count_instances() == len(series)
        assert pacs.sop_instance_uids() == _uids(series)


def test_orthanc_and_storescp_as_two_destinations_of_one_output(tmp_path: Path) -> None:
    require_peer("dcmtk")
    for_pacs = synthetic_series(slices=4, rows=16, columns=16)
    for_archive = synthetic_series(slices=3, rows=16, columns=16)
    port = free_port()
    with orthanc(tmp_path) as pacs, storescp(tmp_path / "archive", port, ae_title="ARCHIVE"):
        output = DicomOutput([(pacs.address, for_pacs), (Address("127.0.0.1", port, "ARCHIVE"), for_archive)])

        assert output.send() is True

        assert pacs.sop_instance_uids() == _uids(for_pacs)
        archived = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (tmp_path / "archive").iterdir()}
        assert archived == _uids(for_archive)


def test_a_destination_down_at_first_gets_the_series_once_and_the_log_shows_the_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomnode.output.dicom")
    series = synthetic_series(slices=10, rows=16, columns=16)
    with orthanc(tmp_path) as pacs:
        _kill(pacs)
        output = DicomOutput([(pacs.address, series)], attempts=8, first_delay=0.5, max_delay=2.0, timeout=10)
        outcome: list[bool] = []
        sender = threading.Thread(target=lambda: outcome.append(output.send()))
        sender.start()
        time.sleep(1.5)
        restarted = _restart(pacs)
        try:
            sender.join(timeout=60)
            assert outcome == [True]
            assert pacs.count_instances() == len(series)
            assert pacs.sop_instance_uids() == _uids(series)
        finally:
            _stop_now(restarted)

    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) >= 1
    assert all(str(pacs.address) in line and "attempt" in line for line in retries)


def test_orthanc_refusing_our_ae_title_gives_a_clear_error_and_the_data_waits_in_the_outbox(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    series = synthetic_series(slices=5, rows=16, columns=16)
    with orthanc(tmp_path, config=REFUSE_UNKNOWN) as pacs:
        output = DicomOutput([(pacs.address, series)], "STRANGER", attempts=2, first_delay=0.1)
        output.bind(_context(tmp_path))

        assert output.send() is True  # deferred: the series waits in the outbox

        assert pacs.count_instances() == 0
    error = output.report[0].error or ""
    assert str(pacs.address) in error
    assert "rejected the association" in error and "Calling AE title not recognised" in error
    (entry,) = Outbox(tmp_path / "outbox").entries()
    assert _uids(entry.datasets()) == _uids(series)
    assert str(pacs.address) in entry.reason and "Calling AE title not recognised" in entry.reason
    gave_up = [r for r in caplog.records if r.levelno == logging.ERROR and "giving up" in r.getMessage()]
    assert gave_up and str(pacs.address) in gave_up[0].getMessage()


# -- a node in front of Orthanc -------------------------------------------------------------------


def derive(datasets: Sequence[Dataset], description: str = "Derived by dicomnode") -> list[Dataset]:
    """A new series from the input: same pixels, deterministic new UIDs (re-running gives the same)."""
    derived = []
    for ds in datasets:
        new = copy.deepcopy(ds)
        new.SeriesInstanceUID = generate_uid(entropy_srcs=[str(ds.SeriesInstanceUID), "derived"])
        new.SOPInstanceUID = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), "derived"])
        if "file_meta" in new.__dict__:
            new.file_meta.MediaStorageSOPInstanceUID = new.SOPInstanceUID
        new.SeriesDescription = description
        new.SeriesNumber = 100
        new.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        derived.append(new)
    return derived


class DeliveringNode(AbstractPipeline):
    """Derives a series from each patient's CT and sends it with DicomOutput to ``destination``."""

    ae_title = "DERIVER"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT}
    log_level = "WARNING"
    maintenance_thread = False
    destination: ClassVar[Address | None] = None
    sent: ClassVar[list[DicomOutput]] = []

    def process(self, input_container: InputContainer) -> PipelineOutput:
        assert self.destination is not None
        output = DicomOutput([(self.destination, derive(input_container["CT"]))], self.config.ae_title,
                             attempts=2, first_delay=0.1)
        type(self).sent.append(output)
        return output


@pytest.fixture
def node_class() -> Iterator[type[DeliveringNode]]:
    class Node(DeliveringNode):
        sent: ClassVar[list[DicomOutput]] = []

    before = CT.expected
    CT.expected = 6
    yield Node
    CT.expected = before


def test_a_node_receives_from_storescu_and_orthanc_then_holds_the_derived_series(
    tmp_path: Path, node_class: type[DeliveringNode],
) -> None:
    require_peer("dcmtk")
    series = synthetic_series(slices=6, rows=16, columns=16, patient_id="NODE1")
    files = write_series(series, tmp_path / "in")
    expected = _uids(derive(series))
    with orthanc(tmp_path) as pacs:
        node_class.destination = pacs.address
        with node_class() as node:
            sent = storescu(node.port, files, called_aet="DERIVER")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert wait_until(lambda: pacs.count_instances() >= len(expected), timeout=30)
            node.wait_for_jobs(10)
        assert pacs.sop_instance_uids() == expected
        assert pacs.count_instances() == len(expected)
        described = {pacs.tags(i)["SeriesDescription"] for i in pacs.instances()}
        assert described == {"Derived by dicomnode"}
        assert node.jobs_succeeded == 1


def test_a_node_whose_destination_refuses_it_keeps_the_result_in_the_outbox_until_maintenance_delivers_it(
    tmp_path: Path, node_class: type[DeliveringNode],
) -> None:
    require_peer("dcmtk")
    series = synthetic_series(slices=6, rows=16, columns=16, patient_id="NODE2")
    files = write_series(series, tmp_path / "in")
    expected = _uids(derive(series))
    data = tmp_path / "data"
    outbox = Outbox(data / "outbox")
    with orthanc(tmp_path, config=REFUSE_UNKNOWN) as pacs:
        node_class.destination = pacs.address
        with node_class(data_directory=data, maintenance_thread=True, maintenance_interval=0.2,
                        outbox_retry_delay=0.2, outbox_max_delay=0.5) as node:
            sent = storescu(node.port, files, called_aet="DERIVER")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert wait_until(lambda: len(outbox.entries()) == 1, timeout=30)
            (entry,) = outbox.entries()
            assert _uids(entry.datasets()) == expected
            assert str(pacs.address) in entry.reason and "Calling AE title not recognised" in entry.reason
            assert pacs.count_instances() == 0

            # the PACS administrator registers the node; a later maintenance pass delivers
            _kill(pacs)
            restarted = _restart(pacs, {"DicomModalities": {"deriver": ["DERIVER", "127.0.0.1", node.port]}})
            try:
                assert wait_until(lambda: pacs.count_instances() == len(expected), timeout=30)
                assert wait_until(lambda: outbox.entries() == [], timeout=10)
                assert pacs.sop_instance_uids() == expected
            finally:
                _stop_now(restarted)
