"""DICOM TLS on the node: it speaks only TLS when given a certificate, and can require client certificates."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from certificates import make_certificate
from node import RECORD, RecordingNode, read_jobs, wait_until

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import AssociationError, ConfigurationError
from dicomnode.net import Address, echo, send_datasets


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    return {name: make_certificate(folder, name) for name in ("node", "client")}


def _trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def test_a_node_with_a_certificate_receives_over_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     certificates: dict[str, tuple[Path, Path]]) -> None:
    monkeypatch.setenv(RECORD, str(tmp_path / "jobs.jsonl"))
    cert, key = certificates["node"]
    series = synthetic_series(patient_id="TLS1", slices=6, rows=16, columns=16)
    with RecordingNode(tls_certificate=cert, tls_key=key) as node:
        result = send_datasets(node.address, series, tls=_trusting(cert), timeout=10)
        assert result.ok, result
        assert wait_until(lambda: read_jobs(tmp_path / "jobs.jsonl"))
        assert node._server.nodelay_on == node._server.nodelay_checked == 1


def test_a_tls_node_refuses_a_plain_association(certificates: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certificates["node"]
    with RecordingNode(tls_certificate=cert, tls_key=key) as node, pytest.raises(AssociationError):
        echo(Address("127.0.0.1", node.port, "TESTNODE"), timeout=5)


def test_with_a_ca_the_node_requires_a_client_certificate(certificates: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certificates["node"]
    client_cert, client_key = certificates["client"]
    with RecordingNode(tls_certificate=cert, tls_key=key, tls_ca=client_cert) as node:
        anonymous = _trusting(cert)
        with pytest.raises(AssociationError):
            echo(node.address, tls=anonymous, timeout=5)
        known = _trusting(cert)
        known.load_cert_chain(client_cert, client_key)
        assert echo(node.address, tls=known, timeout=5) == 0x0000


def test_a_missing_certificate_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'tls_certificate' must name a readable PEM file"):
        RecordingNode(tls_certificate=tmp_path / "nope.crt")
