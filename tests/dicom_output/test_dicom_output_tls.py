"""DicomOutput speaks DICOM TLS, verifying the peer; an outbox entry keeps the TLS settings."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from certificates import make_certificate
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


@pytest.fixture
def tls_peer(tmp_path: Path) -> Iterator[tuple[Address, Path, Path]]:
    """A DCMTK storescp that only speaks TLS, with its certificate."""
    require_peer("dcmtk")
    cert, key = make_certificate(tmp_path, "server")
    port = free_port()
    received = tmp_path / "received"
    with storescp(received, port, ae_title="TLSSCP", extra=["+tls", str(key), str(cert), "-ic"]):
        yield Address("127.0.0.1", port, "TLSSCP"), received, cert


def _received(directory: Path) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in directory.iterdir()}


def test_sends_over_tls_verifying_the_peer_against_the_ca_file(tls_peer: tuple[Address, Path, Path]) -> None:
    address, received, cert = tls_peer
    series = synthetic_series(slices=3, rows=8, columns=8)

    assert DicomOutput([(address, series)], tls_ca=cert).send() is True

    assert _received(received) == {ds.SOPInstanceUID for ds in series}


def test_sends_over_tls_with_an_ssl_context(tls_peer: tuple[Address, Path, Path]) -> None:
    address, received, cert = tls_peer
    series = synthetic_series(slices=2, rows=8, columns=8)
    context = ssl.create_default_context(cafile=str(cert))

    assert DicomOutput([(address, series)], tls=context).send() is True

    assert _received(received) == {ds.SOPInstanceUID for ds in series}


def test_a_peer_whose_certificate_is_not_trusted_is_refused(tls_peer: tuple[Address, Path, Path],
                                                             tmp_path: Path) -> None:
    address, received, _ = tls_peer
    other_ca, _ = make_certificate(tmp_path, "other")
    series = synthetic_series(slices=1, rows=8, columns=8)

    output = DicomOutput([(address, series)], tls_ca=other_ca, attempts=1, timeout=5)

    assert output.send() is False
    assert not received.exists() or not any(received.iterdir())
    assert str(address) in (output.report[0].error or "")


def test_a_peer_that_requires_a_client_certificate_accepts_ours(tmp_path: Path) -> None:
    require_peer("dcmtk")
    server_cert, server_key = make_certificate(tmp_path, "server")
    client_cert, client_key = make_certificate(tmp_path, "client")
    port = free_port()
    address = Address("127.0.0.1", port, "MTLSSCP")
    series = synthetic_series(slices=2, rows=8, columns=8)
    mutual = ["+tls", str(server_key), str(server_cert), "-rc", "+cf", str(client_cert)]

    with storescp(tmp_path / "received", port, ae_title="MTLSSCP", extra=mutual):
        without = DicomOutput([(address, series)], tls_ca=server_cert, attempts=1, timeout=5)
        assert without.send() is False
        with_cert = DicomOutput([(address, series)], tls_ca=server_cert, tls_cert=client_cert,
                                tls_key=client_key, attempts=1, timeout=5)
        assert with_cert.send() is True

    assert _received(tmp_path / "received") == {ds.SOPInstanceUID for ds in series}


def test_a_plain_connection_to_a_tls_peer_fails_and_says_where(tls_peer: tuple[Address, Path, Path]) -> None:
    address, _, _ = tls_peer
    output = DicomOutput([(address, synthetic_series(slices=1, rows=8, columns=8))], attempts=1, timeout=5)

    assert output.send() is False
    assert str(address) in (output.report[0].error or "")


def test_an_outbox_entry_remembers_the_tls_files_and_is_retried_over_tls(tmp_path: Path) -> None:
    require_peer("dcmtk")
    cert, key = make_certificate(tmp_path, "server")
    port = free_port()
    address = Address("127.0.0.1", port, "TLSSCP")
    series = synthetic_series(slices=2, rows=8, columns=8)
    outbox = Outbox(tmp_path / "outbox")
    output = DicomOutput([(address, series)], tls_ca=cert, attempts=1)
    output.bind(output_context(tmp_path, pipeline_name="t", patient_key="P", output_name="dicom"))
    assert output.send() is True  # nobody listens yet: deferred to the outbox
    (entry,) = outbox.entries()
    assert entry.settings["tls"]["ca"] == str(cert.resolve())

    with storescp(tmp_path / "received", port, ae_title="TLSSCP", extra=["+tls", str(key), str(cert), "-ic"]):
        assert DicomOutput.retry_outbox_entry(entry) is True

    assert _received(tmp_path / "received") == {ds.SOPInstanceUID for ds in series}


def test_an_outbox_entry_made_with_an_ssl_context_is_retried_in_the_same_process(tmp_path: Path) -> None:
    require_peer("dcmtk")
    cert, key = make_certificate(tmp_path, "server")
    port = free_port()
    series = synthetic_series(slices=2, rows=8, columns=8)
    outbox = Outbox(tmp_path / "outbox")
    output = DicomOutput([(Address("127.0.0.1", port, "TLSSCP"), series)], attempts=1,
                         tls=ssl.create_default_context(cafile=str(cert)))
    output.bind(output_context(tmp_path, pipeline_name="t", patient_key="P", output_name="dicom"))
    assert output.send() is True
    (entry,) = outbox.entries()
    assert set(entry.settings["tls"]) == {"context"}  # an SSLContext cannot be written to disk

    with storescp(tmp_path / "received", port, ae_title="TLSSCP", extra=["+tls", str(key), str(cert), "-ic"]):
        assert DicomOutput.retry_outbox_entry(entry) is True

    assert _received(tmp_path / "received") == {ds.SOPInstanceUID for ds in series}
