"""The admin endpoint: /healthz, /status, /metrics and the page, on loopback or behind a token."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.net import send_datasets
from dicomnode.server.nodes import AbstractPipeline

TOKEN = "s3cret-token-for-the-tests"


class CT(AbstractInput):
    required_values = {"Modality": "CT"}
    minimum_images = 4


class Report(AbstractInput):
    required_values = {"Modality": "MR"}

    def validate(self) -> bool:
        return self.images >= 1


class Admin(AbstractPipeline):
    ae_title = "ADMIN"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT, "MR": Report}
    admin_port = 0
    maintenance_thread = False
    log_level = "WARNING"

    def process(self, input_container: InputContainer) -> PipelineOutput:
        return NoOutput()


def _get(url: str, token: str | None = None, basic: bool = False) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        value = (f"Basic {base64.b64encode(f'any:{token}'.encode()).decode()}" if basic else f"Bearer {token}")
        request.add_header("Authorization", value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _url(node: AbstractPipeline, path: str) -> str:
    return f"http://127.0.0.1:{node.operations.admin_port}{path}"


def test_healthz_is_ok_while_the_node_serves_and_not_before_or_after(tmp_path: Path) -> None:
    node = Admin(data_directory=tmp_path)
    assert node.operations.health() == (False, {"status": "starting"})
    with node:
        code, headers, body = _get(_url(node, "/healthz"))
        assert code == 200 and json.loads(body)["status"] == "ok"
        assert headers["Content-Type"] == "application/json"
        node.events.closing()  # what close() says first: from now on the node is going away
        code, _, body = _get(_url(node, "/healthz"))
        assert code == 503 and json.loads(body) == {"status": "closing"}
    assert node.operations.admin_port is None  # the endpoint stopped with the node


def test_status_names_each_waiting_patient_with_its_inputs_rule_and_since_when(tmp_path: Path) -> None:
    with Admin(data_directory=tmp_path / "data") as node:
        assert send_datasets(node.address, synthetic_series(patient_id="WAIT1", slices=3, rows=8, columns=8)).ok
        code, _, body = _get(_url(node, "/status"))
    assert code == 200
    status = json.loads(body)
    assert status["node"]["ready"] and status["node"]["ae_title"] == "ADMIN"
    assert status["patients"]["count"] == 1 and status["patients"]["images"] == 3
    [held] = status["patients"]["held"]
    assert held["patient"] == "WAIT1" and held["first_image"].endswith("Z")
    assert held["waiting_for"] == "CT: at least 4 images, has 3; MR: Report.validate(), has 0"
    assert held["inputs"] == [
        {"name": "CT", "images": 3, "complete": False, "rule": "at least 4 images"},
        {"name": "MR", "images": 0, "complete": False, "rule": "Report.validate()"},
    ]
    assert status["jobs"]["queued"] == 0 and status["jobs"]["running"] == 0
    assert status["outbox"]["entries"] == 0 and status["quarantine"] == {
        "entries": 0, "failed": 0, "waiting_for_outbox": 0, "oldest": None}


def test_status_limits_the_patients_listed_but_counts_them_all() -> None:
    with Admin() as node:
        for number in range(3):
            assert send_datasets(node.address, synthetic_series(patient_id=f"L{number}", slices=1, rows=8,
                                                                columns=8)).ok
        code, _, body = _get(_url(node, "/status?limit=1"))
        bad, _, error = _get(_url(node, "/status?limit=lots"))
    status = json.loads(body)
    assert code == 200 and status["patients"]["count"] == 3
    assert len(status["patients"]["held"]) == 1 and status["patients"]["not_listed"] == 2
    assert status["outbox"] is None  # no data directory, no outbox
    assert bad == 400 and "limit must be a whole number" in json.loads(error)["error"]


def test_metrics_count_instances_refusals_associations_jobs_and_stage_times(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client", reason="the metrics need the dicomnode[metrics] extra")

    class Complete(Admin):
        input = {"CT": CT}
        rejection_policy = "failure"  # refused with a status, counted by it

    with Complete(data_directory=tmp_path) as node:
        assert send_datasets(node.address, synthetic_series(patient_id="M1", slices=4, rows=8, columns=8)).ok
        assert not send_datasets(node.address, synthetic_series(patient_id="M2", slices=1, rows=8, columns=8,
                                                                modality="MR")).ok
        assert node.wait_for_jobs(30)
        code, headers, body = _get(_url(node, "/metrics"))
    text = body.decode()
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    lines = set(text.splitlines())
    for expected in ('dicomnode_instances_stored_total{source="c-store"} 4.0',
                     'dicomnode_instances_refused_total{status="0xC004"} 1.0',
                     "dicomnode_associations_total 2.0", 'dicomnode_jobs_total{outcome="done"} 1.0',
                     'dicomnode_job_stage_seconds_count{stage="process"} 1.0', "dicomnode_ready 1.0",
                     "dicomnode_patients_held 0.0", "dicomnode_outbox_entries 0.0",
                     'dicomnode_quarantine_entries{state="failed"} 0.0'):
        assert expected in lines, expected
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert all(name.startswith("dicomnode_") for name in names), sorted(names)


def test_metrics_count_what_the_default_policy_discards() -> None:
    pytest.importorskip("prometheus_client", reason="the metrics need the dicomnode[metrics] extra")

    class Complete(Admin):
        input = {"CT": CT}

    with Complete() as node:
        assert send_datasets(node.address, synthetic_series(patient_id="M2", slices=2, rows=8, columns=8,
                                                            modality="MR")).ok  # acknowledged, dropped
        code, _, body = _get(_url(node, "/metrics"))
    lines = set(body.decode().splitlines())
    assert code == 200 and 'dicomnode_instances_discarded_total{source="c-store"} 2.0' in lines, sorted(lines)
    assert not any(line.startswith("dicomnode_instances_refused_total{") for line in lines)


def test_metrics_say_what_to_install_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as when it is not installed
    with Admin() as node:
        code, _, body = _get(_url(node, "/metrics"))
        healthy, _, _ = _get(_url(node, "/healthz"))
    assert code == 503 and "pip install 'dicomnode[metrics]'" in json.loads(body)["error"]
    assert healthy == 200


def test_the_page_is_html_that_refreshes_itself_and_escapes_what_it_shows() -> None:
    with Admin() as node:
        assert send_datasets(node.address, synthetic_series(patient_id="<b>X</b>", slices=1, rows=8, columns=8)).ok
        code, headers, body = _get(_url(node, "/"))
    page = body.decode()
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<meta http-equiv="refresh"' in page and "<script" not in page
    assert "&lt;b&gt;X&lt;/b&gt;" in page and "<b>X</b>" not in page
    assert "CT: at least 4 images, has 1" in page


def test_unknown_paths_are_404_and_other_methods_are_refused() -> None:
    with Admin() as node:
        code, _, body = _get(_url(node, "/nothing"))
        request = urllib.request.Request(_url(node, "/status"), data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as posted:
            urllib.request.urlopen(request, timeout=10)
    assert code == 404 and "/healthz" in json.loads(body)["error"]
    assert posted.value.code == 501


def test_a_token_is_asked_for_everything_but_healthz() -> None:
    with Admin(admin_token=TOKEN) as node:
        assert _get(_url(node, "/healthz"))[0] == 200
        code, headers, _ = _get(_url(node, "/status"))
        assert code == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert _get(_url(node, "/status"), token="wrong-token-wrong-token")[0] == 401
        assert _get(_url(node, "/status"), token=TOKEN)[0] == 200
        assert _get(_url(node, "/"), token=TOKEN, basic=True)[0] == 200  # a browser's login prompt


def test_another_address_than_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigurationError, match="needs 'admin_token'"):
        Admin(admin_ip="0.0.0.0")
    Admin(admin_ip="0.0.0.0", admin_token=TOKEN)  # allowed with one
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        Admin(admin_token="short")


def test_the_token_can_come_from_the_environment_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_ADMIN_TOKEN", TOKEN)
    with Admin(admin_token="env:NODE_ADMIN_TOKEN") as node:
        assert _get(_url(node, "/status"))[0] == 401
        assert _get(_url(node, "/status"), token=TOKEN)[0] == 200
    assert node.config.admin_secret() == TOKEN and TOKEN not in repr(node.config)
    monkeypatch.delenv("NODE_ADMIN_TOKEN")
    node = Admin(admin_token="env:NODE_ADMIN_TOKEN")  # reading the settings needs no secret …
    with pytest.raises(ConfigurationError, match="NODE_ADMIN_TOKEN is not set"):
        node.open(blocking=False)  # … serving them does
    assert not node.is_open


def test_an_admin_port_in_use_names_the_address_and_the_setting() -> None:
    taken = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        node = Admin(admin_port=taken)
        with pytest.raises(ConfigurationError, match=rf"127\.0\.0\.1:{taken}: the address is already in use.*"
                                                     "admin_port"):
            node.open(blocking=False)
    assert not node.is_open
