"""DicomServer in this process: its limits, and the one path every end of an association takes."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hostile import association_request, read_pdu
from node import wait_until
from pynetdicom import AE

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.net.limits import Limits
from dicomnode.net.pdu import PduReader
from dicomnode.net.server import DicomServer
from dicomnode.net.sink import Peer, ReceivedInstance

pytestmark = pytest.mark.timeout(60)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Sink:
    """Stores nothing; records every instance and every end, with the thread each came on."""

    def __init__(self) -> None:
        self.instances: list[tuple[int, str]] = []
        self.ends: list[Peer] = []
        self.refused: list[tuple[int, str, int, int]] = []
        self.lock = threading.Lock()

    def on_instance(self, instance: ReceivedInstance, peer: Peer) -> int:
        with self.lock:
            self.instances.append((peer.id, instance.sop_instance_uid))
        return 0x0000

    def on_refused(self, peer: Peer, sop_instance_uid: str, size: int, status: int, comment: str) -> None:
        with self.lock:
            self.refused.append((peer.id, sop_instance_uid, size, status))

    def on_association_end(self, peer: Peer) -> None:
        with self.lock:
            self.ends.append(peer)


@pytest.fixture
def served() -> Iterator[tuple[DicomServer, Sink]]:
    with _serve(Limits(idle_timeout=2.0, pdu_timeout=2.0)) as pair:
        yield pair


@contextmanager
def _serve(limits: Limits, **options: object) -> Iterator[tuple[DicomServer, Sink]]:
    sink = Sink()
    server = DicomServer(ae_title="EDGE", sink=sink, ip="127.0.0.1", port=0, limits=limits, **options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server, sink
    finally:
        server.close()


def _associate(port: int, calling: str = "SCANNER") -> object:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CT_IMAGE_STORAGE)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE")
    assert assoc.is_established
    return assoc


def _store(assoc: object, count: int, size: int = 16) -> list[int]:
    series = synthetic_series(slices=count, rows=size, columns=size)
    return [int(assoc.send_c_store(dataset).Status) for dataset in series]  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["release", "abort", "connection closed", "connection reset", "idle timeout"])
def test_every_end_of_an_association_tells_the_sink_once(served: tuple[DicomServer, Sink], how: str) -> None:
    server, sink = served
    assoc = _associate(server.port)
    assert _store(assoc, 3) == [0, 0, 0]
    if how == "release":
        assoc.release()  # type: ignore[attr-defined]
    elif how == "abort":
        assoc.abort()  # type: ignore[attr-defined]
    elif how == "connection closed":
        assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
    elif how == "connection reset":  # SO_LINGER 0: close() sends a TCP RST
        raw = assoc.dul.socket.socket  # type: ignore[attr-defined]
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
    assert wait_until(lambda: len(sink.ends) == 1, timeout=6)
    time.sleep(0.2)
    assert len(sink.ends) == 1 and sink.ends[0].calling_ae_title == "SCANNER"
    assert server.associations == 0
    assoc.kill()  # type: ignore[attr-defined]


def test_a_memory_error_while_reading_a_pdu_still_ends_the_association(served: tuple[DicomServer, Sink],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server, sink = served
    assoc = _associate(server.port)
    assert _store(assoc, 5) == [0] * 5
    original = PduReader.recv

    def out_of_memory(self: PduReader, nr_bytes: int) -> bytes | bytearray:
        if not self.buffered:
            raise MemoryError
        return original(self, nr_bytes)

    monkeypatch.setattr(PduReader, "recv", out_of_memory)
    assoc.send_c_echo()  # type: ignore[attr-defined]
    assert wait_until(lambda: len(sink.ends) == 1, timeout=6)
    assert len(sink.instances) == 5
    assoc.kill()  # type: ignore[attr-defined]


def test_a_dataset_over_the_limit_is_refused_and_the_association_goes_on() -> None:
    with _serve(Limits(maximum_dataset_size=64 * 1024, maximum_pdu_size=16384)) as (server, sink):
        assoc = _associate(server.port)
        big = synthetic_series(slices=1, rows=256, columns=256)[0]  # 128 KiB of pixels
        status = assoc.send_c_store(big)  # type: ignore[attr-defined]
        assert int(status.Status) == 0xA700
        assert str(status.ErrorComment).startswith("dataset too large")
        assert _store(assoc, 1) == [0]
        assert len(sink.instances) == 1
        assert [(status, size > 128 * 1024) for _, _, size, status in sink.refused] == [(0xA700, True)]
        assoc.release()  # type: ignore[attr-defined]


def test_one_address_cannot_take_every_association() -> None:
    with _serve(Limits(maximum_associations_per_address=2)) as (server, _):
        held = [_associate(server.port) for _ in range(2)]
        ae = AE(ae_title="THIRD")
        ae.add_requested_context(CT_IMAGE_STORAGE)
        third = ae.associate("127.0.0.1", server.port, ae_title="EDGE")
        assert third.is_rejected
        assert server.rejections == 1
        for assoc in held:
            assoc.release()  # type: ignore[attr-defined]
        assert wait_until(lambda: server.associations == 0)
        _associate(server.port).release()  # type: ignore[attr-defined]


def test_more_pending_connections_than_allowed_close_the_oldest() -> None:
    with _serve(Limits(maximum_pending_connections=4)) as (server, _):
        silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(6)]
        assert wait_until(lambda: server.evictions == 2)
        silent[0].settimeout(2)
        assert silent[0].recv(10) == b""  # the oldest was closed
        assert server.pending == 4
        _associate(server.port).release()  # type: ignore[attr-defined]
        for sock in silent:
            sock.close()


def test_a_silent_tls_connection_does_not_block_the_next(tmp_path: Path) -> None:
    from certificates import make_certificate

    from dicomnode.net import echo
    from dicomnode.net.address import Address
    from dicomnode.net.tls import TlsSettings

    cert, key = make_certificate(tmp_path, "edge")
    with _serve(Limits(), tls=TlsSettings(cert, key)) as (server, _):
        silent = socket.create_connection(("127.0.0.1", server.port))  # starts no handshake
        started = time.monotonic()
        address = Address("127.0.0.1", server.port, "EDGE")
        assert echo(address, tls=TlsSettings(ca=cert), timeout=5) == 0
        assert time.monotonic() - started < 2
        silent.close()


def test_close_returns_soon_with_a_stalled_association() -> None:
    sink = Sink()
    server = DicomServer(ae_title="EDGE", sink=sink, ip="127.0.0.1", port=0)
    server.start()
    assoc = _associate(server.port)
    raw = assoc.dul.socket.socket  # type: ignore[attr-defined]
    raw.sendall(bytes.fromhex("0400000010000000") + b"\x00" * 64)  # a PDU that never ends
    time.sleep(0.2)
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 3.5
    assert server.associations == 0
    assoc.kill()  # type: ignore[attr-defined]


def test_close_does_not_call_ending_an_association_the_peer_released_an_abort(
        caplog: pytest.LogCaptureFixture) -> None:
    # a peer that released its association but has not closed the connection yet (it may be about to):
    # there is nothing left to abort, and an operator must not read a warning about it
    with _serve(Limits(connection_timeout=30.0)) as (server, _sink), \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(association_request("EDGE", "RELEASER"))
        assert read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
        sock.sendall(struct.pack(">BBI", 0x05, 0, 4) + bytes(4))  # A-RELEASE-RQ
        assert read_pdu(sock)[0] == 0x06  # A-RELEASE-RP; the connection stays open
        assert server.associations == 1
        with caplog.at_level("DEBUG", logger="dicomnode.net"):
            server.close()
        assert server.associations == 0
    ending = [record for record in caplog.records if "RELEASER" in record.getMessage()]
    assert ending and all(record.levelname == "DEBUG" for record in ending), [
        (record.levelname, record.getMessage()) for record in ending]
