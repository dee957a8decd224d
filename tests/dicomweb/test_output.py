"""DicomWebOutput against a real Orthanc with its DICOMweb plugin: stored, found by QIDO-RS, retried, outboxed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from node import RecordingNode
from orthanc import OrthancServer, orthanc
from pydicom import Dataset

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError
from dicomnode.plugins import get_registry
from dicomnode.server.outbox import Outbox
from dicomnode.testing import output_context
from dicomnode_dicomweb import DicomWebOutput, WebConnection

pytestmark = pytest.mark.plugin("dicomweb")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    require_peer("orthanc")
    require_peer("orthanc-dicomweb")
    with orthanc(tmp_path_factory.mktemp("dicomweb-output"), dicomweb=True) as server:
        yield server


@pytest.fixture
def empty(pacs: OrthancServer) -> OrthancServer:
    pacs.clear()
    return pacs


def _series(slices: int = 3, description: str = "RESULT") -> list[Dataset]:
    return synthetic_series(slices=slices, rows=8, columns=8, series_description=description)


def test_results_are_stored_and_then_found_by_qido_rs(empty: OrthancServer) -> None:
    series = _series(5)
    output = DicomWebOutput(empty.dicomweb_url, series, batch_size=2)  # three requests
    assert output.send() is True
    assert output.report is not None and output.report.ok
    assert sorted(output.report.accepted) == sorted(str(ds.SOPInstanceUID) for ds in series)
    found = WebConnection(empty.dicomweb_url).client().search_for_instances(
        study_instance_uid=str(series[0].StudyInstanceUID))
    assert {item["00080018"]["Value"][0] for item in found} == {str(ds.SOPInstanceUID) for ds in series}


def test_files_are_sent_as_they_are(empty: OrthancServer, tmp_path: Path) -> None:
    from dicomnode.dicom.synthetic import write_series

    paths = write_series(_series(2), tmp_path / "files")
    assert DicomWebOutput(empty.dicomweb_url, paths).send() is True
    assert empty.count_instances() == 2


def test_instances_the_server_refuses_are_read_from_the_response_and_only_they_go_to_the_outbox(
        tmp_path: Path) -> None:
    # the server is a node's own STOW-RS service: its input takes CT only, so the MR slice is
    # refused (0xC004, rejection_policy "failure") while the CT slices are stored, in the same request (HTTP 202)
    good, bad = _series(2), synthetic_series(slices=1, rows=8, columns=8, modality="MR")
    with RecordingNode(services={"stow": {"port": 0}}, rejection_policy="failure") as node:
        output = DicomWebOutput(node.services["stow"].url, [*good, *bad], attempts=2, first_delay=0.01)
        output.bind(output_context(tmp_path, output_name="dicomweb"))
        assert output.send() is True  # safe: stored or in the outbox
    report = output.report
    assert report is not None and not report.ok and report.safe
    assert set(report.accepted) == {str(ds.SOPInstanceUID) for ds in good}
    assert report.failed == {str(bad[0].SOPInstanceUID): "FailureReason 0xC004 (cannot understand)"}
    assert report.attempts == 2  # the refused instance was tried again, the stored ones were not
    entries = Outbox(tmp_path / "outbox").entries()
    assert len(entries) == 1 and len(entries[0].files) == 1
    assert "1 instance(s) not stored at" in entries[0].reason


def test_a_server_that_is_down_means_the_outbox_then_delivery_once(tmp_path: Path) -> None:
    require_peer("orthanc")
    require_peer("orthanc-dicomweb")
    port = free_port()
    series = _series(3)
    output = DicomWebOutput(f"http://127.0.0.1:{port}/dicom-web", series, attempts=2, first_delay=0.01,
                            timeout=5)
    output.bind(output_context(tmp_path, output_name="dicomweb"))
    assert output.send() is True
    assert output.report is not None and output.report.outbox_entry is not None
    assert "cannot reach http://127.0.0.1" in str(output.report.error)
    outbox = Outbox(tmp_path / "outbox")
    [entry] = outbox.entries()
    assert json.dumps(entry.settings)  # plain JSON
    with pytest.raises(ConnectionError, match="3 instance\\(s\\) not stored"):
        DicomWebOutput.retry_outbox_entry(entry)
    with orthanc(tmp_path / "pacs", dicomweb=True, http_port=port) as pacs:
        assert outbox.retry(entry, get_registry()) is True
        assert outbox.entries() == []
        assert pacs.sop_instance_uids() == {str(ds.SOPInstanceUID) for ds in series}
        assert pacs.count_instances() == 3


@pytest.mark.parametrize(("service", "credentials"), [
    ({"token": "s3cret"}, {"token": "s3cret"}),
    ({"username": "alice", "password": "wonder"}, {"username": "alice", "password": "wonder"}),
    ({"token": "s3cret"}, {"headers": {"Authorization": "Bearer s3cret"}}),  # a custom header is sent as given
], ids=["bearer", "basic", "custom-header"])
def test_authentication(service: dict[str, str], credentials: dict[str, object]) -> None:
    with RecordingNode(services={"stow": {"port": 0, **service}}) as node:
        url = node.services["stow"].url
        refused = DicomWebOutput(url, _series(1), attempts=1)
        assert refused.send() is False  # no outbox: nothing safe
        assert refused.report is not None and "HTTP 401" in str(refused.report.error)
        wrong = {key: "wrong" if isinstance(value, str) else {"Authorization": "Bearer wrong"}
                 for key, value in credentials.items()}
        assert DicomWebOutput(url, _series(1), attempts=1, **wrong).send() is False  # type: ignore[arg-type]
        output = DicomWebOutput(url, _series(2), attempts=1, **credentials)  # type: ignore[arg-type]
        assert output.send() is True
        assert output.report is not None and len(output.report.accepted) == 2


def test_tls_is_verified_by_default(tmp_path: Path) -> None:
    from certificates import make_certificate

    cert, key = make_certificate(tmp_path, "stow")
    with RecordingNode(services={"stow": {"port": 0, "tls_certificate": str(cert), "tls_key": str(key)}}) as node:
        url = node.services["stow"].url
        assert url.startswith("https://")
        unverified = DicomWebOutput(url, _series(1), attempts=1)  # the system's CAs do not know it
        assert unverified.send() is False
        assert "SSLError" in str(unverified.report.error if unverified.report else "")
        assert DicomWebOutput(url, _series(1), attempts=1, verify=str(cert)).send() is True
        assert DicomWebOutput(url, _series(1), attempts=1, verify=False).send() is True


def test_secrets_given_as_text_stay_out_of_the_outbox_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    output = DicomWebOutput(down, _series(1), token="very-secret", headers={"X-Api-Key": "also-secret"},
                            attempts=1)
    output.bind(output_context(tmp_path, output_name="dicomweb"))
    assert output.send() is True
    [entry] = Outbox(tmp_path / "outbox").entries()
    text = json.dumps(entry.settings)
    assert "very-secret" not in text and "also-secret" not in text
    assert WebConnection.from_settings(entry.settings["connection"], entry.id).token == "very-secret"

    monkeypatch.setenv("PACS_TOKEN", "from-the-environment")
    output = DicomWebOutput(down, _series(1), token={"env": "PACS_TOKEN"}, attempts=1)
    output.bind(output_context(tmp_path / "two", output_name="dicomweb"))
    assert output.send() is True
    [entry] = Outbox(tmp_path / "two" / "outbox").entries()
    assert entry.settings["connection"]["token"] == {"env": "PACS_TOKEN"}
    assert "from-the-environment" not in json.dumps(entry.settings)


def test_an_unset_environment_variable_is_named_and_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    output = DicomWebOutput(f"http://127.0.0.1:{free_port()}", _series(1), token={"env": "NO_SUCH_TOKEN"},
                            attempts=1)
    assert output.send() is False
    assert "environment variable NO_SUCH_TOKEN, which is not set" in str(output.report.error if output.report else "")


@pytest.mark.parametrize(("options", "message"), [
    ({"url": "ftp://pacs"}, "must be an http:// or https:// URL"),
    ({"username": "alice"}, "needs both username and password"),
    ({"token": "t", "username": "a", "password": "p"}, "either token"),
    ({"verify": "/no/such/ca.pem"}, "verify must be true"),
    ({"batch_size": 0}, "batch_size must be a whole number"),
    ({"attempts": 0}, "attempts must be a whole number"),
    ({"headers": {"Bad Name": "x"}}, "is not a header name"),
])
def test_wrong_settings_are_refused_with_what_is_allowed(options: dict[str, object], message: str) -> None:
    arguments = {"url": "https://pacs.example.org/dicom-web", **options}
    with pytest.raises(ConfigurationError, match=message):
        DicomWebOutput(arguments.pop("url"), [], **arguments)  # type: ignore[arg-type]


def test_a_secret_is_not_shown_in_an_error_or_a_repr() -> None:
    connection = WebConnection("https://pacs.example.org/dicom-web", token="hidden-token")
    assert "hidden-token" not in repr(connection)
    with pytest.raises(ConfigurationError) as raised:
        WebConnection("https://pacs.example.org", headers={"X-Key": 12345})  # type: ignore[dict-item]
    assert "12345" not in str(raised.value)
