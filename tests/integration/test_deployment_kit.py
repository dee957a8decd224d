"""The deployment kit in deploy/: the systemd unit, the container image, the compose example's pipeline.

What can be checked on any machine is checked here: ``systemd-analyze
verify`` on the unit, stop timeouts longer than the node's bounded
shutdown, the image's non-root user and health check, and the kit's
pipeline itself, run against a real Orthanc as compose runs it. The image is
built only where a container engine answers (``docker info``).
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from conftest import require_peer
from orthanc import orthanc

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.net import send_datasets
from dicomnode.net import server as net_server
from dicomnode.server import admin
from dicomnode.server.config import PipelineConfig
from dicomnode.server.maintenance import MaintenanceThread
from dicomnode.server.toml_config import load_pipeline

pytestmark = pytest.mark.plugin("dicom-output")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _shutdown_bound() -> float:
    """The longest a node's close() takes with the default settings: a service and the DICOM edge (the
    instances being received, then the grace their threads get), the maintenance thread, running jobs,
    the admin endpoint (each waits at most its own timeout)."""
    defaults = {field.name: field.default for field in attrs.fields(PipelineConfig)}
    receive, jobs = defaults["close_receive_timeout"], defaults["close_timeout"]
    maintenance = inspect.signature(MaintenanceThread.stop).parameters["timeout"].default
    edge = receive + 2 * net_server._END_GRACE
    return float(receive + edge + maintenance + jobs + admin.STOP_TIMEOUT)


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|min)?", text.strip())
    assert match, text
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = require_peer("systemd-analyze")
    unit = (DEPLOY / "dicomnode.service").read_text(encoding="utf-8")
    assert "ExecStart=/opt/dicomnode/bin/dicomnode run /etc/dicomnode/pipeline.toml" in unit
    # verify checks that the program exists: point it at this environment's dicomnode
    here = shutil.which("dicomnode", path=str(Path(sys.executable).parent))
    assert here is not None
    (tmp_path / "dicomnode.service").write_text(unit.replace("/opt/dicomnode/bin/dicomnode", here), encoding="utf-8")
    done = subprocess.run([analyze, "verify", str(tmp_path / "dicomnode.service")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_the_unit_restarts_on_failure_is_hardened_and_waits_longer_than_the_node_takes_to_stop() -> None:
    unit = (DEPLOY / "dicomnode.service").read_text(encoding="utf-8")
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["Restart"] == "on-failure" and settings["KillSignal"] == "SIGTERM"
    assert _seconds(settings["TimeoutStopSec"]) > _shutdown_bound()
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictAddressFamilies",
                      "CapabilityBoundingSet", "SystemCallFilter"):
        assert hardening in settings, hardening
    assert settings["User"] == "dicomnode" and settings["StateDirectory"] == "dicomnode"


def test_the_image_runs_as_a_user_with_a_health_check_and_compose_waits_long_enough() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*dicomnode\", \"status\", \"--url\", \"http://127.0.0.1:8080\", \"--health",
                     dockerfile, re.M)
    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, re.M)
    compose = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    grace = re.search(r"^\s+stop_grace_period:\s*(\S+)$", compose, re.M)
    assert grace and _seconds(grace[1]) > _shutdown_bound()


def test_the_kits_pipeline_forwards_a_series_to_orthanc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_peer("orthanc")
    with orthanc(tmp_path / "orthanc") as pacs:
        text = (DEPLOY / "node" / "pipeline.toml").read_text(encoding="utf-8")
        for old, new in (('ip = "orthanc"', 'ip = "127.0.0.1"'), ("port = 4242", f"port = {pacs.address.port}"),
                         ('"/srv/dicomnode/data"', f'"{tmp_path / "data"}"')):
            assert old in text, old
            text = text.replace(old, new)
        folder = tmp_path / "node"
        folder.mkdir()
        (folder / "pipeline.toml").write_text(text, encoding="utf-8")
        shutil.copy(DEPLOY / "node" / "forward.py", folder / "forward.py")
        monkeypatch.setenv("DICOMNODE_ADMIN_TOKEN", "a-token-for-the-kit-test")
        declared = load_pipeline(folder / "pipeline.toml")
        # loopback only in tests, and no 10 s wait for a study to settle
        with declared(ip="127.0.0.1", port=0, admin_ip="127.0.0.1", admin_port=0, stable_time=None) as node:
            series = synthetic_series(patient_id="KIT1", slices=3, rows=8, columns=8)
            assert send_datasets(node.address, series).ok
            assert node.wait_for_jobs(60)
            assert node.jobs_succeeded == 1
        assert pacs.sop_instance_uids() == {str(ds.SOPInstanceUID) for ds in series}
