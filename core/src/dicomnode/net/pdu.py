"""Reading PDUs from an untrusted peer, and the few PDUs the edge writes itself.

Every PDU starts with a 6-byte header: its type and the length of the rest.
That length is the peer's word, nothing more, so a PDU is read into a
buffer that grows with the bytes that really arrived (:class:`IncomingPdu`):
it starts at :data:`FIRST_PIECE` at most and doubles only when full, so
the node never holds more than about twice what a peer sent. A length
longer than the node accepts for that type of PDU, or an unknown type, is
refused as soon as the header is in (:class:`PduRefused`); the caller then
sends an A-ABORT (:func:`a_abort`).

:class:`PduReader` serves pynetdicom's two reads per PDU (``recv(6)``, then
``recv(length)``) from such buffers, with a deadline for the whole PDU once
its first byte arrived. The edge's selector loop feeds an
:class:`IncomingPdu` itself, a piece per readable event, for a connection's
first PDU. Nothing here imports pynetdicom.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable

__all__ = [
    "FIRST_PIECE",
    "HEADER",
    "WAKE_UP",
    "IncomingPdu",
    "PduReader",
    "PduRefused",
    "a_abort",
    "a_associate_rj",
    "bound_waits",
]

logger = logging.getLogger("dicomnode.net")

#: PDU type (1 byte), reserved (1 byte), length of the rest (4 bytes, big endian)
HEADER = struct.Struct(">BBI")

#: the most a PDU's buffer holds before a byte of its body arrived; larger PDUs grow to their length
#: by doubling as the bytes come. DCMTK sends P-DATA in PDUs of 128 KiB at most, which fit at once.
FIRST_PIECE = 256 * 1024

#: PDU types PS3.8 9.3 defines: A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP, A-ABORT
PDU_NAMES = {0x01: "A-ASSOCIATE-RQ", 0x02: "A-ASSOCIATE-AC", 0x03: "A-ASSOCIATE-RJ", 0x04: "P-DATA-TF",
             0x05: "A-RELEASE-RQ", 0x06: "A-RELEASE-RP", 0x07: "A-ABORT"}

#: A-ABORT reasons of the service provider (PS3.8 9.3.8): source 2 and one of these
ABORT_NOT_SPECIFIED = 0x00
ABORT_UNRECOGNIZED_PDU = 0x01
ABORT_UNEXPECTED_PDU = 0x02
ABORT_INVALID_PARAMETER = 0x06


def a_abort(reason: int = ABORT_NOT_SPECIFIED, source: int = 0x02) -> bytes:
    """An A-ABORT PDU (PS3.8 9.3.8); source 2 is the DICOM UL service provider, the node's edge."""
    return HEADER.pack(0x07, 0x00, 4) + bytes((0x00, 0x00, source, reason))


def a_associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4): result 1 permanent / 2 transient, source, reason."""
    return HEADER.pack(0x03, 0x00, 4) + bytes((0x00, result, source, reason))


class PduRefused(ConnectionError):
    """A PDU the node will not read: an unknown type, a length beyond the limit, or too slow.

    ``reason`` is the A-ABORT reason to send (PS3.8 9.3.8).
    """

    def __init__(self, message: str, reason: int = ABORT_NOT_SPECIFIED) -> None:
        super().__init__(message)
        self.reason = reason


#: how often a read blocked in the middle of a PDU wakes up to look at the PDU's deadline
WAKE_UP = 1.0


def bound_waits(sock: socket.socket, *, receive: float | None = None, send: float | None = None) -> None:
    """Make a blocking socket's blocked reads and writes give up after so many seconds (EAGAIN).

    The kernel's ``SO_RCVTIMEO`` / ``SO_SNDTIMEO``, unlike a Python socket
    timeout, cost nothing while data flows: Python then calls ``recv`` and
    ``send`` directly instead of polling first.
    """
    for option, seconds in ((socket.SO_RCVTIMEO, receive), (socket.SO_SNDTIMEO, send)):
        if seconds is None:
            continue
        whole = int(seconds)
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", whole, int((seconds - whole) * 1e6)))
        except OSError as error:  # a closed socket, or one without these options
            logger.debug("cannot bound the socket's waits: %s", error)


def _name(pdu_type: int) -> str:
    return PDU_NAMES.get(pdu_type, f"type 0x{pdu_type:02X}")


class IncomingPdu:
    """One PDU as it arrives: its header, then its body in a buffer that grows with what came.

    ``longest(pdu_type)`` is the longest body accepted for a type; a header
    announcing more, or an unknown type, raises :class:`PduRefused` from
    :meth:`receive` as soon as the header is complete.
    """

    def __init__(self, longest: Callable[[int], int]) -> None:
        self._longest = longest
        self.header = bytearray(HEADER.size)
        self._header_read = 0
        self.pdu_type = -1
        self.length = -1
        self.body = bytearray()
        self.body_read = 0

    @property
    def started(self) -> bool:
        """True once a byte of the PDU arrived."""
        return self._header_read > 0

    @property
    def header_complete(self) -> bool:
        """True once the 6-byte header arrived (and was accepted)."""
        return self.length >= 0

    @property
    def complete(self) -> bool:
        """True once the whole PDU arrived."""
        return self.body_read == self.length

    def receive(self, sock: socket.socket) -> int:
        """Take what the socket holds of this PDU, in one ``recv_into``; return how many bytes (0: closed).

        Reads no byte past the PDU. A non-blocking socket raises what it
        raises when it has nothing (``BlockingIOError``, ``ssl.SSLWantReadError``).
        """
        if self.length < 0:
            with memoryview(self.header) as view:
                count = sock.recv_into(view[self._header_read:], HEADER.size - self._header_read)
            self._header_read += count
            if self._header_read == HEADER.size:
                self._accept_header()
            return count
        body, read = self.body, self.body_read
        if read == len(body):
            self._grow()
            body = self.body
        with memoryview(body) as view:
            count = sock.recv_into(view[read:], len(body) - read)
        self.body_read = read + count
        return count

    def _accept_header(self) -> None:
        pdu_type, _, length = HEADER.unpack(self.header)
        if pdu_type not in PDU_NAMES:
            raise PduRefused(f"unknown PDU type 0x{pdu_type:02X}", ABORT_UNRECOGNIZED_PDU)
        longest = self._longest(pdu_type)
        if length > longest:
            raise PduRefused(f"{_name(pdu_type)} PDU announcing {length} bytes, more than the {longest} "
                             "accepted", ABORT_INVALID_PARAMETER)
        self.body = bytearray(min(length, FIRST_PIECE))
        self.pdu_type, self.length = pdu_type, length

    def _grow(self) -> None:
        # the peer sent as many bytes as the buffer holds: at most double it, never past the PDU
        size = min(self.length, 2 * len(self.body))
        self.body.extend(bytes(size - len(self.body)))

    def pdu(self) -> bytes:
        """The whole PDU, header and body (a copy), once complete."""
        return bytes(self.header) + bytes(self.body)


class PduReader:
    """pynetdicom's reads of one connection (``recv(6)`` then ``recv(length)``), bounded.

    ``sock()`` gives the connection's socket (None once closed). Each PDU
    is an :class:`IncomingPdu` with ``longest``; its bytes must all arrive
    within ``pdu_timeout`` seconds of its first. ``prefix`` holds bytes
    already read from the connection (its A-ASSOCIATE-RQ), served first.
    What pynetdicom expects of ``recv`` stays true: the bytes asked for,
    fewer only when the peer closed the connection, and an ``OSError`` when
    the connection fails; a PDU the node will not read raises
    :class:`PduRefused` (an ``OSError`` too).
    """

    def __init__(self, sock: Callable[[], socket.socket | None], longest: Callable[[int], int],
                 pdu_timeout: float | None, *, prefix: bytes = b"") -> None:
        self._sock = sock
        self._longest = longest
        self._timeout = pdu_timeout
        self._prefix = memoryview(prefix)
        self._incoming: IncomingPdu | None = None
        self._deadline = 0.0
        #: the socket whose blocked reads wake up to look at the deadline
        self._bounded: socket.socket | None = None
        #: monotonic time of the last byte received, and whether a PDU is half read
        self.last_received = time.monotonic()

    @property
    def buffered(self) -> bool:
        """True when bytes already read wait to be served (select cannot see them)."""
        return len(self._prefix) > 0

    def unread(self, data: bytes) -> None:
        """Serve ``data`` before anything else the connection sends (only when nothing is buffered)."""
        if self._prefix:
            raise RuntimeError("unread() while bytes already read wait to be served")
        self._prefix = memoryview(data)

    @property
    def in_pdu(self) -> bool:
        """True between a PDU's first byte and its last."""
        incoming = self._incoming
        return incoming is not None and incoming.started and not incoming.complete

    def recv(self, nr_bytes: int) -> bytes | bytearray:
        """The next ``nr_bytes`` bytes of the connection: a PDU header, or the rest of the PDU."""
        if self._prefix:
            piece, self._prefix = self._prefix[:nr_bytes], self._prefix[nr_bytes:]
            return piece.tobytes()
        sock = self._sock()
        if sock is None:
            raise OSError("the connection is closed")
        if nr_bytes == HEADER.size and (self._incoming is None or self._incoming.complete):
            return self._read_header(sock)
        incoming = self._incoming
        if incoming is None or not incoming.header_complete or nr_bytes != incoming.length - incoming.body_read:
            raise OSError(f"a read of {nr_bytes} bytes that is not the next part of a PDU")
        return self._read_body(sock, incoming)

    def _read_header(self, sock: socket.socket) -> bytearray:
        incoming = self._incoming = IncomingPdu(self._longest)
        while not incoming.header_complete:
            if not self._receive(sock, incoming):
                return incoming.header[:incoming._header_read]
        return incoming.header

    def _read_body(self, sock: socket.socket, incoming: IncomingPdu) -> bytearray:
        while incoming.body_read < incoming.length:
            if not self._receive(sock, incoming):
                break
        body = incoming.body
        if incoming.body_read < len(body):
            del body[incoming.body_read:]
        return body

    def _receive(self, sock: socket.socket, incoming: IncomingPdu) -> int:
        """One piece of the PDU within its deadline; 0 when the peer closed the connection.

        The socket stays blocking: a Python socket timeout would poll before
        every ``recv`` (two system calls and two GIL hand-overs for each
        piece). A blocked ``recv`` wakes up instead every :data:`WAKE_UP`
        seconds (``SO_RCVTIMEO``, :func:`bound_waits`) to look at the deadline.
        """
        if not incoming._header_read:  # the PDU's first byte: its deadline starts
            self._deadline = time.monotonic() + self._timeout if self._timeout is not None else float("inf")
            if self._bounded is not sock:
                bound_waits(sock, receive=min(WAKE_UP, self._timeout or WAKE_UP))
                self._bounded = sock
        while True:
            try:
                count = incoming.receive(sock)
            except (BlockingIOError, TimeoutError, ssl.SSLWantReadError):
                if time.monotonic() >= self._deadline:
                    raise self._too_slow(incoming) from None
                continue
            if count:
                self.last_received = time.monotonic()
            return count

    def _too_slow(self, incoming: IncomingPdu) -> PduRefused:
        what = _name(incoming.pdu_type) if incoming.header_complete else "PDU header"
        return PduRefused(f"the {what} did not arrive within pdu_timeout ({self._timeout:g} s)")
