"""The boundary between the network edge and what receives: :class:`InstanceSink` and its values.

The server (:class:`~dicomnode.net.server.DicomServer`) hands each
received instance to a sink and tells it when an association ends; the
node implements the protocol (its ``Receiver``). A sink runs on the
association's own thread: a C-STORE's status goes back when
:meth:`InstanceSink.on_instance` returns, so an instance acknowledged with
success must be stored by then.
"""

from __future__ import annotations

import socket
from io import BytesIO
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from pydicom.dataset import FileMetaDataset

__all__ = ["Handoff", "InstanceSink", "Peer", "ReceivedInstance"]


@attrs.frozen
class Peer:
    """One association: its number in this server, the AE titles of the request, where from, TLS or not."""

    id: int
    calling_ae_title: str
    called_ae_title: str
    address: tuple[str, int]
    tls: bool = False

    def __str__(self) -> str:
        return f"{self.calling_ae_title}@{self.address[0]}:{self.address[1]} (association {self.id})"


@attrs.frozen
class ReceivedInstance:
    """A C-STORE's dataset as it arrived, not decoded and not copied.

    ``encoded`` holds the dataset's bytes in ``transfer_syntax`` (deflated
    when the syntax says so); ``file_meta`` is the File Meta Information a
    file of it needs.
    """

    encoded: BytesIO
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    file_meta: FileMetaDataset


class InstanceSink(Protocol):
    """What receives the instances of a :class:`~dicomnode.net.server.DicomServer`."""

    def on_instance(self, instance: ReceivedInstance, peer: Peer) -> int | tuple[int, str]:
        """Take one instance; return the C-STORE status, with an ErrorComment for a failure.

        0x0000 means the instance is whole and stored as configured. The
        comment is cut to 64 characters: put the reason first. An exception
        answers 0xC000 and is logged.
        """

    def on_refused(self, peer: Peer, sop_instance_uid: str, size: int, status: int, comment: str) -> None:
        """The server refused a C-STORE of ``peer`` itself, before :meth:`on_instance` (too large, no dataset).

        ``status`` and ``comment`` are what the peer was answered; ``size``
        is the dataset's length in bytes. For the node's records only:
        nothing was stored. Called on the association's thread, before its
        :meth:`on_association_end`.
        """

    def on_association_end(self, peer: Peer) -> None:
        """The association ``peer`` ended, however it ended; called once, after its last ``on_instance``.

        Called only for associations that delivered or were refused at least one instance.
        """


class Handoff(Protocol):
    """What takes admitted connections off a :class:`~dicomnode.net.server.DicomServer` to serve them elsewhere.

    The server keeps one association (not TLS) for itself and offers the
    next to the hand-off while it serves that one.

    The node's receiving processes (:mod:`dicomnode.server.processes`)
    implement it; the server keeps the connection's slot until it hears
    :meth:`~dicomnode.net.server.DicomServer.remote_closed`.
    """

    def take(self, sock: socket.socket, address: tuple[str, int], prefix: bytes, peer: Peer) -> bool:
        """Serve this connection, whose association request ``prefix`` was read; False to leave it to the server.

        The server closes its own descriptor of ``sock`` after True.
        """

    def close(self, timeout: float) -> None:
        """Stop taking connections; let the instances being received finish for up to ``timeout`` s, end the rest."""
