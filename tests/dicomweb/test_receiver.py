"""The STOW-RS receiver (service ``stow``): Orthanc pushes studies into a node; the statuses it answers."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import require_peer
from node import CT, RecordingNode, read_jobs, wait_until
from orthanc import OrthancError, orthanc
from pydicom import Dataset, dcmwrite

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError
from dicomnode_dicomweb import StowService

pytestmark = pytest.mark.plugin("dicomweb")

BOUNDARY = "dicomnode-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _file(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _body(parts: list[bytes]) -> bytes:
    chunks = [f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
              for part in parts]
    return b"".join(chunks) + f"--{BOUNDARY}--\r\n".encode()


def _post(url: str, parts: list[bytes], **headers: str) -> requests.Response:
    return requests.post(url, data=_body(parts), headers={"Content-Type": MULTIPART, **headers}, timeout=30)


def _ct(patient: str = "P1", slices: int = CT.expected) -> list[Dataset]:
    return synthetic_series(patient_id=patient, slices=slices, rows=8, columns=8)


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "jobs.jsonl"
    monkeypatch.setenv("DICOMNODE_TEST_RECORD", str(path))
    return path


@pytest.fixture
def node(tmp_path: Path, record: Path) -> Iterator[RecordingNode]:
    # rejection_policy "failure": an instance no input takes is refused (0xC004), not discarded as by default
    with RecordingNode(services={"stow": {"port": 0, "root": "/dicom-web/"}}, data_directory=tmp_path / "data",
                       rejection_policy="failure") as n:
        yield n


def test_orthanc_pushes_a_study_by_stow_rs_and_the_node_processes_it(tmp_path: Path, record: Path) -> None:
    require_peer("orthanc")
    require_peer("orthanc-dicomweb")
    settings = {"port": 0, "token": "s3cret"}
    with RecordingNode(services={"stow": settings}, data_directory=tmp_path / "data") as node:
        url = node.services["stow"].url
        servers = {"node": {"Url": f"{url}/", "HttpHeaders": {"Authorization": "Bearer s3cret"}},
                   "stranger": {"Url": f"{url}/"}}
        with orthanc(tmp_path, dicomweb=True, dicomweb_servers=servers) as pacs:
            series = _ct("PUSHED")
            pacs.upload_datasets(series)
            [study] = pacs.rest("GET", "/studies")
            with pytest.raises(OrthancError, match=r"HTTP 500"):  # Orthanc says its push failed
                pacs.stow_to("stranger", [study])  # no token: refused
            assert read_jobs(record) == []
            pacs.stow_to("node", [study])
            assert wait_until(lambda: read_jobs(record), timeout=15)
    [job] = read_jobs(record)
    assert job["patient"] == "PUSHED"
    assert job["uids"] == sorted(str(ds.SOPInstanceUID) for ds in series)


def test_orthanc_pushes_with_basic_authentication(tmp_path: Path, record: Path) -> None:
    require_peer("orthanc")
    require_peer("orthanc-dicomweb")
    with RecordingNode(services={"stow": {"port": 0, "username": "pacs", "password": "pw"}}) as node:
        servers = {"node": {"Url": node.services["stow"].url + "/", "Username": "pacs", "Password": "pw"}}
        with orthanc(tmp_path, dicomweb=True, dicomweb_servers=servers) as pacs:
            pacs.upload_datasets(_ct("BASIC"))
            pacs.stow_to("node", pacs.rest("GET", "/studies"))
            assert wait_until(lambda: read_jobs(record), timeout=15)
    assert read_jobs(record)[0]["patient"] == "BASIC"


def test_every_instance_stored_is_200_with_the_referenced_sop_sequence(node: RecordingNode, tmp_path: Path) -> None:
    series = _ct(slices=2)
    response = _post(node.services["stow"].url + "/studies", [_file(ds) for ds in series])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    body = Dataset.from_json(response.json())
    assert [str(item.ReferencedSOPInstanceUID) for item in body.ReferencedSOPSequence] == \
        [str(ds.SOPInstanceUID) for ds in series]
    assert str(body.ReferencedSOPSequence[0].ReferencedSOPClassUID) == str(series[0].SOPClassUID)
    assert "FailedSOPSequence" not in body
    assert len(list((tmp_path / "data").rglob("*.dcm"))) == 2  # stored before the answer


def test_with_pseudonyms_the_request_line_names_the_patient_by_its_pseudonym(tmp_path: Path, record: Path) -> None:
    from dicomnode.extension.labels import pseudonym
    from dicomnode.server.logs import read_secret

    log, data = tmp_path / "node.log", tmp_path / "data"
    with RecordingNode(services={"stow": {"port": 0, "root": "/dicom-web/"}}, data_directory=data,
                       log_output=log, log_level="INFO", log_patient_keys="pseudonym") as running:
        assert _post(running.services["stow"].url + "/studies",
                     [_file(ds) for ds in _ct("SECRET5", slices=1)]).status_code == 200
    secret = read_secret(data, create=False)
    assert secret is not None
    text = log.read_text(encoding="utf-8")
    assert "SECRET5" not in text
    assert f"1 instance(s) of patient(s) {pseudonym('SECRET5', secret)} stored" in text, text


def test_a_refused_instance_is_in_the_failed_sop_sequence_with_the_c_store_status(node: RecordingNode) -> None:
    ct = _ct(slices=1)[0]
    mr = synthetic_series(patient_id="P1", slices=1, rows=8, columns=8, modality="MR")[0]
    response = _post(node.services["stow"].url + "/studies", [_file(ct), _file(mr)])
    assert response.status_code == 202
    body = Dataset.from_json(response.json())
    assert [str(i.ReferencedSOPInstanceUID) for i in body.ReferencedSOPSequence] == [str(ct.SOPInstanceUID)]
    [failed] = body.FailedSOPSequence
    assert str(failed.ReferencedSOPInstanceUID) == str(mr.SOPInstanceUID)
    assert failed.FailureReason == 0xC004  # no input accepts it, as a C-STORE would be told


def test_nothing_stored_is_409(node: RecordingNode) -> None:
    mr = synthetic_series(slices=1, rows=8, columns=8, modality="MR")[0]
    truncated = _file(_ct(slices=1)[0])[:-40]
    response = _post(node.services["stow"].url + "/studies", [_file(mr), truncated])
    assert response.status_code == 409
    reasons = [item.FailureReason for item in Dataset.from_json(response.json()).FailedSOPSequence]
    assert reasons == [0xC004, 0xC001]  # not accepted; not whole


def test_an_instance_of_another_study_than_the_path_names_fails_with_a900(node: RecordingNode) -> None:
    ct = _ct(slices=1)[0]
    response = _post(node.services["stow"].url + "/studies/1.2.3.4", [_file(ct)])
    assert response.status_code == 409
    assert Dataset.from_json(response.json()).FailedSOPSequence[0].FailureReason == 0xA900
    good = _post(node.services["stow"].url + f"/studies/{ct.StudyInstanceUID}", [_file(ct)])
    assert good.status_code == 200


@pytest.mark.parametrize(("method", "path", "content_type", "status"), [
    ("POST", "/dicom-web/studies", "application/dicom", 415),
    ("POST", "/dicom-web/studies", 'multipart/related; type="application/json"; boundary=x', 415),
    ("GET", "/dicom-web/studies", MULTIPART, 405),
    ("POST", "/elsewhere/studies", MULTIPART, 404),
    ("POST", "/dicom-web/studies", MULTIPART, 400),  # a body that is not multipart
])
def test_requests_that_are_not_stow_rs_are_answered_with_what_is_wrong(node: RecordingNode, method: str, path: str,
                                                                       content_type: str, status: int) -> None:
    base = node.services["stow"].url.removesuffix("/dicom-web")
    response = requests.request(method, base + path, data=b"not multipart", timeout=10,
                                headers={"Content-Type": content_type})
    assert response.status_code == status
    assert "error" in response.json()


def test_a_request_larger_than_the_limit_is_413(tmp_path: Path) -> None:
    with RecordingNode(services={"stow": {"port": 0, "maximum_request_size": 1000}}) as node:
        response = _post(node.services["stow"].url + "/studies", [_file(ds) for ds in _ct(slices=2)])
    assert response.status_code == 413


def test_an_instance_larger_than_its_limit_fails_and_is_not_ingested(tmp_path: Path) -> None:
    with RecordingNode(services={"stow": {"port": 0, "maximum_instance_size": 500}}) as node:
        response = _post(node.services["stow"].url + "/studies", [_file(_ct(slices=1)[0])])
        assert response.status_code == 409
        assert Dataset.from_json(response.json()).FailedSOPSequence[0].FailureReason == 0xA700
        assert node.tree.keys() == []


def test_without_authentication_the_service_is_refused_beyond_loopback() -> None:
    # only the settings are checked: nothing binds a non-loopback address here
    with pytest.raises(ConfigurationError, match="not a loopback address, and has no authentication"):
        StowService({"ip": "0.0.0.0"})
    with pytest.raises(ConfigurationError, match="not a loopback address"):
        StowService({"ip": "pacs-gateway.example.org"})
    assert StowService({"ip": "0.0.0.0", "token": "s3cret"}).authenticated
    assert StowService({"ip": "0.0.0.0", "username": "a", "password": {"env": "STOW_PASSWORD"}}).authenticated
    assert not StowService({"ip": "127.0.0.1"}).authenticated
    assert not StowService({"ip": "::1"}).authenticated


def test_the_refusal_is_a_configuration_error_of_the_node() -> None:
    with pytest.raises(ConfigurationError, match=r"services\['stow'\].*loopback"):
        RecordingNode(services={"stow": {"ip": "0.0.0.0"}})


@pytest.mark.parametrize(("settings", "message"), [
    ({"port": 70000}, "port from 1 to 65535"),
    ({"username": "a"}, "needs both 'username' and 'password'"),
    ({"token": "t", "username": "a", "password": "p"}, "either 'token'"),
    ({"tls_certificate": "/no/such.pem"}, "readable PEM file"),
    ({"root": "dicom-web"}, "starting with '/'"),
    ({"tokn": "x"}, r"unknown setting\(s\) \['tokn'\]"),
    ({"token": {"file": "x"}}, "must be text or"),
])
def test_wrong_settings_say_what_is_allowed(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        StowService(settings)


def test_a_token_is_never_shown_in_an_error() -> None:
    with pytest.raises(ConfigurationError) as raised:
        StowService({"token": 123456789})
    assert "123456789" not in str(raised.value)


def test_an_unset_token_variable_fails_the_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_STOW_TOKEN", raising=False)
    node = RecordingNode(services={"stow": {"port": 0, "token": {"env": "NO_SUCH_STOW_TOKEN"}}})
    with pytest.raises(ConfigurationError, match="NO_SUCH_STOW_TOKEN, which is not set"):
        node.open(blocking=False)
    assert not node.is_open


def test_the_service_serves_https_with_its_certificate(tmp_path: Path) -> None:
    from certificates import make_certificate

    cert, key = make_certificate(tmp_path, "stow")
    with RecordingNode(services={"stow": {"port": 0, "tls_certificate": str(cert), "tls_key": str(key),
                                          "token": "t"}}) as node:
        url = node.services["stow"].url
        assert url.startswith("https://127.0.0.1:")
        response = requests.post(url + "/studies", data=_body([_file(_ct(slices=1)[0])]), verify=str(cert),
                                 headers={"Content-Type": MULTIPART, "Authorization": "Bearer t"}, timeout=10)
        assert response.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(url + "/studies", data=b"", verify=True, timeout=10)


def test_close_stops_the_service_and_frees_its_port(tmp_path: Path) -> None:
    node = RecordingNode(services={"stow": {"port": 0}})
    with node:
        port = node.services["stow"].port
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_port_in_use_fails_the_open() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        node = RecordingNode(services={"stow": {"port": taken.getsockname()[1]}})
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1"):
            node.open(blocking=False)
        assert not node.is_open


def test_a_response_is_dicom_json(node: RecordingNode) -> None:
    response = _post(node.services["stow"].url + "/studies", [_file(_ct(slices=1)[0])])
    assert json.loads(response.content)["00081199"]["vr"] == "SQ"
