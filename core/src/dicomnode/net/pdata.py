"""Writing C-STORE requests straight to the socket, many P-DATA PDUs per system call.

pynetdicom sends a DIMSE message one P-DATA-TF PDU at a time: each
fragment becomes a primitive, goes through a queue to the DUL thread and
its state machine, is encoded into a new ``bytes`` and written with its
own ``send``. A 512 KiB CT slice to a peer with DCMTK's default 16 KiB
maximum PDU is 32 of those round trips, and a 300-slice series about
9,600; that Python work, not the network, was most of the time a send
took (``benchmarks/send.py``).

:func:`send_c_store` writes a C-STORE request itself: the command set
and the PDU headers are packed with :mod:`struct`, the data is never
copied (each PDU's payload is a :class:`memoryview` of the encoded
dataset) and a whole message goes out with a few ``sendmsg`` calls. The
bytes on the wire are the ones pynetdicom would write: one PDV per PDU,
no PDU longer than the peer's maximum, the command set first. Only the
request is ours; pynetdicom still reads and decodes the response.
:func:`answer_c_stores_directly` does the same for the C-STORE responses
of an association the node accepted.

Writing from the caller's thread is safe here because, in the state
where data is exchanged, pynetdicom's DUL thread writes only what it is
given to send, and :func:`~dicomnode.net.adapter.parked_reactor`
keeps the association's own reactor from sending while we exchange. A
TLS socket is not written this way (an OpenSSL connection must not be
read and written from two threads at once); those associations keep
pynetdicom's path, and so does every association when the speed patches
are off (:func:`~dicomnode.net.adapter.check`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pynetdicom.dimse_primitives import C_STORE

from dicomnode.net import adapter

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = [
    "UNLIMITED_FRAGMENT",
    "answer_c_stores_directly",
    "c_store_command",
    "c_store_response_command",
    "direct_socket",
    "pdu_buffers",
    "send_c_store",
    "write_buffers",
]

logger = logging.getLogger("dicomnode.dimse")

#: the fragment length used when the peer sets no maximum PDU length: any
#: split is then valid, and this keeps each PDU's 4-byte length field far
#: from overflowing for very large instances
UNLIMITED_FRAGMENT = 4 * 1024 * 1024

#: buffers handed to one ``sendmsg`` call (Linux accepts up to 1024)
_BUFFERS_PER_CALL = 512

_PDU_HEADER = struct.Struct(">BBIIBB")  # PDU type, reserved, PDU length, PDV length, context ID, control

#: message control header bits (PS3.8 E.2): command or dataset, last fragment or not
_DATA_MORE, _COMMAND_MORE, _DATA_LAST, _COMMAND_LAST = 0x00, 0x01, 0x02, 0x03


def pdu_buffers(payload: bytes | bytearray | memoryview, context_id: int, max_pdu: int, *,
                command: bool) -> Iterator[bytes | memoryview]:
    """Yield one P-DATA-TF PDU per fragment of ``payload``: its 12-byte header, then the fragment.

    ``max_pdu`` is the peer's maximum PDU length (0: no limit). Each PDU
    carries one presentation data value whose control header says whether
    it is part of the ``command`` set or the dataset and whether it is the
    last fragment. The fragments are views of ``payload``, not copies.
    """
    if 0 < max_pdu < 7:
        raise ValueError(f"a maximum PDU length of {max_pdu} bytes cannot carry any data (at least 7)")
    fragment = max_pdu - 6 if max_pdu else UNLIMITED_FRAGMENT
    more, last = (_COMMAND_MORE, _COMMAND_LAST) if command else (_DATA_MORE, _DATA_LAST)
    view = memoryview(payload).cast("B")
    total = len(view)
    offset = 0
    while True:
        piece = view[offset:offset + fragment]
        offset += len(piece)
        control = last if offset >= total else more
        yield _PDU_HEADER.pack(0x04, 0x00, len(piece) + 6, len(piece) + 2, context_id, control)
        yield piece
        if offset >= total:
            return


def write_buffers(sock: socket.socket, buffers: list[bytes | memoryview]) -> None:
    """Write every buffer, in order, with as few ``sendmsg`` calls as the socket allows.

    A call may write only part of what it was given (the socket's buffer is
    full, or its timeout ran out while waiting for room); the rest follows
    in the next call. Raises :class:`OSError` when the socket fails.
    """
    pending = [memoryview(buffer).cast("B") for buffer in buffers]
    first = 0
    while first < len(pending):
        sent = sock.sendmsg(pending[first:first + _BUFFERS_PER_CALL])
        while sent:
            length = len(pending[first])
            if sent >= length:
                sent -= length
                first += 1
            else:
                pending[first] = pending[first][sent:]
                sent = 0


def direct_socket(assoc: Association) -> socket.socket | None:
    """The association's socket if we may write DIMSE messages on it ourselves, else None.

    Not on a TLS connection (one OpenSSL connection must not be written by
    one thread while another reads it), nor where sockets lack ``sendmsg``,
    nor when the speed patches are off.
    """
    sock = adapter.socket_of(assoc)
    if sock is None or not adapter.fast() or isinstance(sock, ssl.SSLSocket) or not hasattr(sock, "sendmsg"):
        return None
    return sock


def _write_message(assoc: Association, sock: socket.socket, context_id: int, command: bytes,
                   dataset: bytes | memoryview | None = None) -> None:
    """Write one DIMSE message (its command set, then its dataset if any) within the peer's maximum PDU.

    When the socket fails, the association is told its transport is gone
    (Evt17), as pynetdicom does when its own send fails; nothing is raised.
    """
    peer = assoc.acceptor if assoc.is_requestor else assoc.requestor
    max_pdu = peer.maximum_length or 0  # what the peer accepts; 0 (or not said): no limit
    buffers = list(pdu_buffers(command, context_id, max_pdu, command=True))
    if dataset is not None:
        buffers += pdu_buffers(dataset, context_id, max_pdu, command=False)
    try:
        write_buffers(sock, buffers)
    except OSError as error:
        logger.debug("writing a DIMSE message on presentation context %d failed: %s", context_id, error)
        adapter.transport_lost(assoc)
    finally:
        buffers.clear()  # release the views before the dataset's buffer may be changed


_ELEMENT_HEADER = struct.Struct("<HHI")  # group, element, value length (implicit VR little endian)
_US = struct.Struct("<H")


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT_HEADER.pack(0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b"\x00" if len(encoded) % 2 else encoded


def c_store_command(sop_class: str, sop_instance: str, message_id: int, priority: int = 2) -> bytes:
    """The encoded command set of a C-STORE request (PS3.7 9.3.1.1, implicit VR little endian).

    The same bytes pynetdicom encodes for its C-STORE requests (its
    default priority 2, low; the dataset type says a dataset follows).
    """
    body = b"".join((
        _element(0x0002, _uid(sop_class)),          # Affected SOP Class UID
        _element(0x0100, _US.pack(0x0001)),          # Command Field: C-STORE-RQ
        _element(0x0110, _US.pack(message_id)),      # Message ID
        _element(0x0700, _US.pack(priority)),        # Priority
        _element(0x0800, _US.pack(0x0001)),          # Command Data Set Type: a dataset follows
        _element(0x1000, _uid(sop_instance)),        # Affected SOP Instance UID
    ))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def send_c_store(assoc: Association, sock: socket.socket, context_id: int, sop_class: str,
                 sop_instance: str, payload: bytes | memoryview, message_id: int) -> C_STORE | None:
    """Write one C-STORE request on ``sock`` and wait for its response; None when none came.

    ``payload`` is the dataset already encoded in the context's transfer
    syntax. Raises :class:`~dicomnode.errors.DimseError` when the peer
    answers with something that is not this request's response (the
    association is then aborted). When no response comes within the
    association's DIMSE timeout the association is aborted too; call
    :func:`~dicomnode.net.transport.no_response_kind` to learn why.
    Call only with the association's reactor parked
    (:func:`~dicomnode.net.adapter.parked_reactor`).
    """
    from dicomnode.errors import DimseError

    _write_message(assoc, sock, context_id, c_store_command(sop_class, sop_instance, message_id), payload)
    # when the write failed, the association is closing (Evt17) and the wait ends at once
    response = adapter.next_message(assoc)
    if response is None:
        if assoc.is_established and not assoc.acse.is_aborted():
            assoc.abort()  # the DIMSE timeout: nothing more can be trusted on this association
        return None
    if (not isinstance(response, C_STORE) or response.MessageIDBeingRespondedTo != message_id
            or not response.is_valid_response):
        assoc.abort()
        raise DimseError(f"the peer answered the C-STORE of {sop_instance} (message {message_id}) with "
                         f"{type(response).__name__} for message "
                         f"{getattr(response, 'MessageIDBeingRespondedTo', None)}; the association was aborted")
    return response


def c_store_response_command(sop_class: str | None, sop_instance: str | None, message_id: int, status: int,
                             error_comment: str | None = None) -> bytes:
    """The encoded command set of a C-STORE response (PS3.7 9.3.1.2), as pynetdicom encodes it.

    The SOP class and instance are left out when None (pynetdicom drops
    them then too); ``error_comment`` must be ASCII.
    """
    parts = []
    if sop_class is not None:
        parts.append(_element(0x0002, _uid(sop_class)))           # Affected SOP Class UID
    parts.append(_element(0x0100, _US.pack(0x8001)))                # Command Field: C-STORE-RSP
    parts.append(_element(0x0120, _US.pack(message_id)))            # Message ID Being Responded To
    parts.append(_element(0x0800, _US.pack(0x0101)))                # Command Data Set Type: none
    parts.append(_element(0x0900, _US.pack(status)))                # Status
    if error_comment is not None:
        comment = error_comment.encode("ascii")
        parts.append(_element(0x0902, comment + b" " if len(comment) % 2 else comment))  # Error Comment
    if sop_instance is not None:
        parts.append(_element(0x1000, _uid(sop_instance)))         # Affected SOP Instance UID
    body = b"".join(parts)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _plain_response(primitive: Any) -> bytes | None:
    """The command set of a C-STORE response we can encode ourselves, or None for pynetdicom to do it."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.Status is None or primitive.OffendingElement is not None:
        return None
    comment = primitive.ErrorComment
    if comment is not None and not str(comment).isascii():
        return None
    sop_class, sop_instance = primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID
    return c_store_response_command(None if sop_class is None else str(sop_class),
                                    None if sop_instance is None else str(sop_instance),
                                    primitive.MessageIDBeingRespondedTo, int(primitive.Status),
                                    None if comment is None else str(comment))


def answer_c_stores_directly(assoc: Association) -> bool:
    """Have an accepted association write its C-STORE responses itself; say whether it will.

    Each response is then one ``sendmsg`` from the association's own
    thread, instead of a primitive encoded by pynetdicom, queued for the
    DUL thread, which wakes, runs its state machine and sends it. Other
    messages, responses with an offending element or a non-ASCII comment,
    and TLS associations (see :func:`direct_socket`) keep pynetdicom's path.
    Call it before the association's thread starts (the node does, in its
    ``EVT_CONN_OPEN`` handler). ``EVT_DIMSE_SENT`` and the PDU events are
    not fired for the responses written this way.
    """
    sock = direct_socket(assoc)
    if sock is None:
        return False

    def write(primitive: Any, context_id: int) -> bool:
        command = _plain_response(primitive)
        if command is None:
            return False
        _write_message(assoc, sock, context_id, command)
        return True

    return adapter.intercept_messages(assoc, write)
