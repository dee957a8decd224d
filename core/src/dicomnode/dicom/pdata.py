"""Writing C-STORE requests straight to the socket, many P-DATA PDUs per system call.

pynetdicom sends a DIMSE message one P-DATA-TF PDU at a time: each
fragment becomes a primitive, goes through a queue to the DUL thread and
its state machine, is encoded into a new ``bytes`` and written with its
own ``send``. A 512 KiB CT slice to a peer with DCMTK's default 16 KiB
maximum PDU is 32 of those round trips, and a 300-slice series about
9,600; that Python work, not the network, was most of the time a send
took (``benchmarks/send.py``).

:func:`direct_pdata` makes an association write its C-STORE requests
itself: the PDU headers are packed with :mod:`struct`, the data is never
copied (each PDU's payload is a :class:`memoryview` of the encoded
dataset) and a whole message goes out with a few ``sendmsg`` calls. The
bytes on the wire are the ones pynetdicom would write: one PDV per PDU,
no PDU longer than the peer's maximum, the command set first. Only the
sending is replaced; the response is still read by pynetdicom.

Writing from the caller's thread is safe here because, in the state
where data is exchanged, pynetdicom's DUL thread writes only what it is
given to send, and :func:`~dicomnode.dicom.transport.parked_reactor`
keeps the association's own reactor from sending while we exchange. A
TLS socket is not written this way (an OpenSSL connection must not be
read and written from two threads at once); those associations keep
pynetdicom's path.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = ["UNLIMITED_FRAGMENT", "direct_pdata", "pdu_buffers", "write_buffers"]

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


def _dataset_payload(message: C_STORE_RQ) -> bytes | memoryview:
    """The encoded dataset of ``message``: a view of its buffer, or the rest of the file it names."""
    path_and_offset: tuple[Any, int] | None = getattr(message, "_data_set_path", None)
    if path_and_offset is not None:
        path, offset = path_and_offset
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read()
    if message.data_set is None:
        return b""
    return message.data_set.getbuffer()


class _Writer:
    """Sends the C-STORE requests of one association; anything else goes to pynetdicom's ``send_msg``."""

    def __init__(self, assoc: Association, sock: socket.socket) -> None:
        self.assoc = assoc
        self.sock = sock
        self.fallback = assoc.dimse.send_msg

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is not None:
            self.fallback(primitive, context_id)
            return
        message = C_STORE_RQ()
        message.primitive_to_message(primitive)
        message.context_id = context_id
        evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
        max_pdu = self.assoc.dimse.maximum_pdu_size
        # the command set is always implicit VR little endian (PS3.7 6.3.1)
        command = encode(message.command_set, True, True)
        if command is None:
            raise ValueError(f"cannot encode the C-STORE command set: {message.command_set}")
        buffers = list(pdu_buffers(command, context_id, max_pdu, command=True))
        if message.command_set.CommandDataSetType != 0x0101:
            buffers.extend(pdu_buffers(_dataset_payload(message), context_id, max_pdu, command=False))
        try:
            write_buffers(self.sock, buffers)
        except OSError as error:
            # what pynetdicom does when its own send fails: the transport is
            # gone (Evt17), so the request waiting for its response ends at once
            logger.debug("writing a C-STORE request failed: %s", error)
            self.assoc.dul.event_queue.put("Evt17")
        finally:
            buffers.clear()  # release the views before the dataset's buffer is closed


@contextmanager
def direct_pdata(assoc: Association) -> Iterator[bool]:
    """While active, the association's C-STORE requests are written by us; yields whether they are.

    They are not on a TLS connection, nor on a platform whose sockets
    have no ``sendmsg``: pynetdicom's own path is kept there. Use it
    inside :func:`~dicomnode.dicom.transport.parked_reactor`.
    """
    wrapper = assoc.dul.socket
    sock = wrapper.socket if wrapper is not None else None
    if sock is None or isinstance(sock, ssl.SSLSocket) or not hasattr(sock, "sendmsg"):
        yield False
        return
    dimse = assoc.dimse
    writer = _Writer(assoc, sock)
    dimse.send_msg = writer.send_msg  # type: ignore[method-assign]
    try:
        yield True
    finally:
        del dimse.send_msg
