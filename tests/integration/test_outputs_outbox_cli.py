"""What DicomOutput leaves in the outbox, `dicomnode outbox list` shows and `dicomnode outbox retry` delivers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp
from pydicom import dcmread

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.net import Address
from dicomnode.server.outbox import Outbox
from dicomnode.testing import output_context

pytestmark = pytest.mark.plugin("dicom-output")

try:
    from dicomnode_dicom_output import DicomOutput
except ImportError:  # a session without the plugin deselects every test here (pytestmark)
    pass


def _dicomnode(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomnode", *arguments], capture_output=True, text=True,
                          timeout=120)


def _undelivered(data: Path, address: Address, slices: int = 3) -> set[str]:
    """Run a DicomOutput against a destination that is down; return the UIDs left in the outbox."""
    series = synthetic_series(slices=slices, rows=8, columns=8)
    output = DicomOutput([(address, series)], "CLINODE", attempts=1)
    output.bind(output_context(data, pipeline_name="cli", ae_title="CLINODE", patient_key="P1",
                               output_name="dicom"))
    assert output.send() is True  # deferred to the outbox
    return {str(ds.SOPInstanceUID) for ds in series}


def test_outbox_list_shows_the_destination_and_why(tmp_path: Path) -> None:
    address = Address("127.0.0.1", free_port(), "ARCHIVE")
    _undelivered(tmp_path, address)

    listed = _dicomnode("outbox", "list", "--data-directory", str(tmp_path))

    assert listed.returncode == 0, listed.stderr
    assert "output dicom" in listed.stdout and "3 file(s)" in listed.stdout
    assert "not delivered to ARCHIVE@127.0.0.1" in listed.stdout and "Connection refused" in listed.stdout


def test_outbox_retry_delivers_once_the_destination_is_up(tmp_path: Path) -> None:
    require_peer("dcmtk")
    port = free_port()
    address = Address("127.0.0.1", port, "ARCHIVE")
    uids = _undelivered(tmp_path, address)

    still_down = _dicomnode("outbox", "retry", "--data-directory", str(tmp_path))
    assert still_down.returncode == 1
    assert "still undelivered" in still_down.stdout and "ARCHIVE@127.0.0.1" in still_down.stdout

    with storescp(tmp_path / "archive", port, ae_title="ARCHIVE"):
        retried = _dicomnode("outbox", "retry", "--data-directory", str(tmp_path))

    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "delivered by output 'dicom'" in retried.stdout
    received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (tmp_path / "archive").iterdir()}
    assert received == uids
    assert Outbox(tmp_path / "outbox").entries() == []
