"""A TOML pipeline delivering through registered outputs of the plugins, to real peers."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp, storescu
from node import wait_until, write_patient
from pydicom import dcmread

from dicomnode.server.toml_config import load_pipeline

pytestmark = pytest.mark.plugin("dicom-output")

PIPELINE = """
process = "forward_jobs:forward"

[node]
ae_title = "FORWARDER"
ip = "127.0.0.1"
port = 0
maintenance_thread = false
data_directory = "data"

[node.known_endpoints.PACS]
ip = "127.0.0.1"
port = {port}
ae_title = "STORESCP"

[inputs.CT]
required_values = {{ Modality = "CT" }}
grinder = "list"
images = 3

[[outputs]]
type = "dicom"
destination = "PACS"
attempts = 2
first_delay = 0.1
"""


def test_datasets_go_to_a_known_endpoint_with_the_node_calling(tmp_path: Path) -> None:
    require_peer("dcmtk")
    port = free_port()
    (tmp_path / "forward_jobs.py").write_text("def forward(container):\n    return container['CT']\n")
    (tmp_path / "forward.toml").write_text(PIPELINE.format(port=port))
    sent = write_patient(tmp_path / "P1", "P1", slices=3)
    with storescp(tmp_path / "pacs", port), load_pipeline(tmp_path / "forward.toml")() as node:
        result = storescu(node.port, [tmp_path / "P1"], called_aet="FORWARDER")
        assert result.returncode == 0, result.stdout + result.stderr
        assert wait_until(lambda: node.jobs_succeeded == 1, timeout=60)
    received = sorted((tmp_path / "pacs").iterdir())
    assert sorted(str(dcmread(p).SOPInstanceUID) for p in received) == sorted(p.stem for p in sent)
    # storescp records the calling AE title of each instance in the file meta
    assert {dcmread(p).file_meta.SourceApplicationEntityTitle.strip() for p in received} == {"FORWARDER"}


def test_settings_the_dicom_output_does_not_take_are_refused(tmp_path: Path) -> None:
    from dicomnode.errors import ConfigurationError

    (tmp_path / "forward_jobs.py").write_text("def forward(container):\n    return container['CT']\n")
    (tmp_path / "forward.toml").write_text(PIPELINE.format(port=4242) + "retries_please = 3\n")
    with pytest.raises(ConfigurationError, match=r"\[\[outputs\]\] 1 \(dicom\).*retries_please"):
        load_pipeline(tmp_path / "forward.toml")
