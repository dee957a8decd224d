"""DICOM over TLS: the client helpers take an ``ssl.SSLContext`` (peer: a pynetdicom SCP with TLS)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from certificates import make_certificate
from conftest import free_port
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.presentation import build_context

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import AssociationError
from dicomnode.net import Address, echo, send_datasets
from dicomnode.net.adapter import parked_reactor
from dicomnode.net.pdata import direct_socket
from dicomnode.net.transport import application_entity, associate


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl program."""
    return make_certificate(tmp_path_factory.mktemp("tls"), "peer")


@pytest.fixture
def tls_peer(certificate: tuple[Path, Path]) -> Iterator[tuple[Address, list[str]]]:
    """A pynetdicom storage SCP that speaks only TLS; yields its address and the UIDs it stored."""
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    stored: list[str] = []

    def on_store(event: evt.Event) -> int:
        stored.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    ae = AE(ae_title="TLSSCP")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context("1.2.840.10008.1.1")
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=server_context,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield Address("127.0.0.1", port, "TLSSCP"), stored
    finally:
        server.shutdown()


def _trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_echo_over_tls(tls_peer: tuple[Address, list[str]], certificate: tuple[Path, Path]) -> None:
    address, _ = tls_peer
    assert echo(address, tls=_trusting(certificate), timeout=10) == 0x0000


def test_send_datasets_over_tls(tls_peer: tuple[Address, list[str]], certificate: tuple[Path, Path]) -> None:
    address, stored = tls_peer
    series = synthetic_series(slices=3, rows=16, columns=16)
    result = send_datasets(address, series, tls=_trusting(certificate), timeout=10)
    assert result.ok, result
    assert stored == [ds.SOPInstanceUID for ds in series]


def test_the_tls_socket_has_tcp_nodelay(tls_peer: tuple[Address, list[str]],
                                        certificate: tuple[Path, Path]) -> None:
    address, _ = tls_peer
    assoc = associate(application_entity("DICOMNODE", 10), address, [build_context("1.2.840.10008.1.1")],
                      timeout=10, tls=_trusting(certificate))
    try:
        sock = assoc.dul.socket.socket
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()


def test_c_stores_over_tls_are_left_to_pynetdicom_and_arrive(tls_peer: tuple[Address, list[str]],
                                                               certificate: tuple[Path, Path]) -> None:
    # one OpenSSL connection must not be written by us while pynetdicom's thread reads it
    address, stored = tls_peer
    dataset = synthetic_series(slices=1, rows=16, columns=16)[0]
    assoc = associate(application_entity("DICOMNODE", 10), address,
                      [build_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)],
                      timeout=10, tls=_trusting(certificate))
    try:
        assert direct_socket(assoc) is None
        with parked_reactor(assoc):
            status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    assert int(status.Status) == 0x0000
    assert stored == [dataset.SOPInstanceUID]


def test_an_untrusted_certificate_fails_with_the_tls_reason(tls_peer: tuple[Address, list[str]]) -> None:
    address, _ = tls_peer
    with pytest.raises(AssociationError, match=r"TLS handshake failed.*certificate verify failed"):
        echo(address, tls=ssl.create_default_context(), timeout=10)
