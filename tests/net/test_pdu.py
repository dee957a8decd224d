"""Reading PDUs from an untrusted peer: buffers grow with what came, lengths and deadlines are enforced.

The fuzz loop runs a fixed number of hypothesis examples in the suite
(``DICOMNODE_FUZZ_EXAMPLES``, 150 by default); ``nox -s fuzz`` runs it longer.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomnode.net.limits import Limits
from dicomnode.net.pdu import (
    FIRST_PIECE,
    HEADER,
    IncomingPdu,
    PduReader,
    PduRefused,
    a_abort,
    a_associate_rj,
)

pytestmark = pytest.mark.timeout(60)

FUZZ_EXAMPLES = int(os.environ.get("DICOMNODE_FUZZ_EXAMPLES", "150"))
LIMITS = Limits(maximum_pdu_size=65536, pdu_timeout=0.5)


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    return ours, theirs


def _reader(sock: socket.socket, timeout: float = 0.5, prefix: bytes = b"") -> PduReader:
    return PduReader(lambda: sock, LIMITS.longest_pdu, timeout, prefix=prefix)


def test_a_header_announcing_gigabytes_allocates_the_first_piece_at_most() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        theirs.sendall(HEADER.pack(0x04, 0, 60_000) + b"x" * 10)
        incoming = IncomingPdu(lambda _t: 2**32)
        while not incoming.header_complete:
            incoming.receive(ours)
        assert len(incoming.body) == 60_000  # under the first piece: what was announced
        huge = IncomingPdu(lambda _t: 2**32)
        theirs.sendall(HEADER.pack(0x04, 0, 0xFFFFFFF0))
        ours.recv(10)  # the rest of the first PDU
        while not huge.header_complete:
            huge.receive(ours)
        assert len(huge.body) == FIRST_PIECE


def test_the_buffer_grows_only_as_bytes_arrive() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        length = 3 * FIRST_PIECE
        sender = threading.Thread(target=theirs.sendall,
                                  args=(HEADER.pack(0x04, 0, length) + b"y" * (FIRST_PIECE + 10),))
        sender.start()
        incoming = IncomingPdu(lambda _t: 2**32)
        ours.settimeout(1)
        received = 0
        while received < HEADER.size + FIRST_PIECE + 10:
            received += incoming.receive(ours)
        sender.join()
        assert len(incoming.body) <= 2 * (FIRST_PIECE + 10)


def test_a_pdu_longer_than_the_limit_is_refused_from_its_header() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        theirs.sendall(HEADER.pack(0x04, 0, 65_537))
        with pytest.raises(PduRefused, match="more than the 65536 accepted") as refused:
            _reader(ours).recv(6)
        assert refused.value.reason == 0x06


def test_an_unknown_pdu_type_is_refused() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        theirs.sendall(bytes.fromhex("090000000004") + b"\x00" * 4)
        with pytest.raises(PduRefused, match="unknown PDU type 0x09"):
            _reader(ours).recv(6)


def test_a_pdu_arriving_in_pieces_is_read_whole() -> None:
    ours, theirs = _pair()
    payload = bytes(range(256)) * 200

    def trickle() -> None:
        theirs.sendall(HEADER.pack(0x04, 0, len(payload)))
        for start in range(0, len(payload), 7_000):
            theirs.sendall(payload[start:start + 7_000])
            time.sleep(0.005)

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        reader = _reader(ours, timeout=5)
        header = bytes(reader.recv(6))
        assert header == HEADER.pack(0x04, 0, len(payload))
        assert bytes(reader.recv(len(payload))) == payload
    finally:
        sender.join()
        ours.close()
        theirs.close()


def test_a_connection_closed_mid_pdu_gives_what_arrived() -> None:
    ours, theirs = _pair()
    theirs.sendall(HEADER.pack(0x04, 0, 5000) + b"x" * 100)
    theirs.close()
    reader = _reader(ours)
    reader.recv(6)
    assert bytes(reader.recv(5000)) == b"x" * 100
    ours.close()


def test_a_pdu_that_stops_arriving_is_refused_after_its_deadline() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        theirs.sendall(HEADER.pack(0x04, 0, 100) + b"z" * 10)
        reader = _reader(ours, timeout=0.3)
        reader.recv(6)
        started = time.monotonic()
        with pytest.raises(PduRefused, match="did not arrive within pdu_timeout"):
            reader.recv(100)
        assert 0.25 < time.monotonic() - started < 1.5
        assert reader.in_pdu


def test_bytes_already_read_are_served_first() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        request = HEADER.pack(0x01, 0, 4) + b"abcd"
        theirs.sendall(HEADER.pack(0x05, 0, 4) + b"\x00" * 4)
        reader = _reader(ours, prefix=request)
        assert reader.buffered
        assert bytes(reader.recv(6)) + bytes(reader.recv(4)) == request
        assert not reader.buffered
        assert bytes(reader.recv(6)) == HEADER.pack(0x05, 0, 4)


def test_the_pdus_the_edge_writes() -> None:
    assert a_abort(0x06) == bytes.fromhex("07000000000400000206")
    assert a_associate_rj(2, 3, 2) == bytes.fromhex("03000000000400020302")


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=2048), st.integers(min_value=1, max_value=512))
def test_any_bytes_are_read_refused_or_cut_and_cost_at_most_twice_what_came(data: bytes, piece: int) -> None:
    ours, theirs = _pair()
    with ours, theirs:
        for start in range(0, len(data), piece):
            theirs.sendall(data[start:start + piece])
        theirs.shutdown(socket.SHUT_WR)
        reader = PduReader(lambda: ours, Limits(maximum_pdu_size=4096).longest_pdu, 0.5)
        received = 0
        while True:
            try:
                header = reader.recv(6)
                received += len(header)
                if len(header) < 6:
                    break
                length = HEADER.unpack(bytes(header))[2]
                body = reader.recv(length)
                received += len(body)
                assert len(body) <= length
                # what the reader held never passed twice what arrived, or its first piece
                assert len(body) <= max(min(length, FIRST_PIECE), 2 * len(body))
                if len(body) < length:
                    break
            except PduRefused:
                break
        assert received <= len(data)
