"""The node's DICOM server: a listening socket and the edge that no peer can exhaust, block or stall.

One thread (``dicomnode-edge``) owns the listening socket and every
connection that has not associated yet. It accepts, finishes the TLS
handshake and reads each connection's first PDU, the A-ASSOCIATE-RQ, with
non-blocking reads into a buffer that grows with the bytes that came
(:class:`~dicomnode.net.pdu.IncomingPdu`), all within
``connection_timeout``. Such a connection holds no association slot; when
more than ``maximum_pending_connections`` wait, the oldest is closed. So a
flood of silent or stalled connections costs a socket each, and a scanner's
association request, which arrives whole in a millisecond, is served.

A complete request is admitted if fewer than ``maximum_associations``
(and, for its IP address, ``maximum_associations_per_address``) are open,
else rejected with an A-ASSOCIATE-RJ (transient, local limit exceeded).
An admitted connection becomes a pynetdicom association on a thread of its
own (:func:`~dicomnode.net.adapter.accept`): its reads are bounded (each
PDU within ``pdu_timeout``, no longer than the node accepts), it is
aborted after ``idle_timeout`` of silence, and however it ends, its end
runs one path: the socket is closed, its slot freed, and the sink told
(:meth:`~dicomnode.net.sink.InstanceSink.on_association_end`).

:meth:`DicomServer.close` is bounded: it stops accepting, lets the
instances being received finish for up to ``close_receive_timeout`` (a peer that
makes no progress for a second is not waited for), then shuts the sockets
of the rest down, so that their threads end at once.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset

from dicomnode.net import adapter
from dicomnode.net.limits import DEFAULT_LIMITS, MAXIMUM_ASSOCIATE_REQUEST, Limits
from dicomnode.net.pdata import answer_c_stores_directly
from dicomnode.net.pdu import (
    ABORT_INVALID_PARAMETER,
    ABORT_UNEXPECTED_PDU,
    IncomingPdu,
    PduRefused,
    a_abort,
    a_associate_rj,
    bound_waits,
)
from dicomnode.net.receiving import StoreRequest, received_file_meta
from dicomnode.net.sink import Handoff, InstanceSink, Peer, ReceivedInstance
from dicomnode.net.tls import TlsSettings
from dicomnode.net.transport import set_tcp_nodelay

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

__all__ = ["DicomServer"]

logger = logging.getLogger("dicomnode.net")

VERIFICATION = "1.2.840.10008.1.1"

#: C-STORE statuses the edge answers itself
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_CANNOT_DECODE = 0xC001

#: a transferring association that received nothing for this long is stalled: close() does not wait
_STALLED = 1.0
#: how long close() waits for the threads of the associations it ended
_END_GRACE = 2.0
#: connections accepted in one go before the edge looks at the others again
_ACCEPTS_PER_TURN = 64


def _first_pdu_limit(pdu_type: int) -> int:
    """The longest body of a connection's first PDU: an A-ASSOCIATE-RQ, or a short A-ABORT."""
    return MAXIMUM_ASSOCIATE_REQUEST - 6 if pdu_type == 0x01 else 4


class _Pending:
    """A connection that has not sent its whole A-ASSOCIATE-RQ yet."""

    def __init__(self, sock: socket.socket, address: tuple[str, int], tls: bool) -> None:
        self.sock = sock
        self.address = address
        self.tls = tls
        self.handshaking = tls
        self.started = time.monotonic()
        self.incoming = IncomingPdu(_first_pdu_limit)


class _Live:
    """An admitted association: its peer, and what close() needs to know of it."""

    def __init__(self, assoc: Association, sock: socket.socket, peer: Peer) -> None:
        self.assoc = assoc
        self.sock = sock
        self.peer = peer
        self.delivered = 0
        #: C-STOREs the server refused itself (the sink heard of them through ``on_refused``)
        self.refused = 0
        self.handling = False
        self.ending = False
        #: held while the sink takes an instance; the end path sets ``ended`` under it
        self.lock = threading.Lock()
        self.ended = False
        self.reader = adapter.reader_of(assoc)

    def busy(self) -> bool:
        """True while an instance is being received or handled."""
        return (self.handling or (self.reader is not None and self.reader.in_pdu)
                or adapter.message_in_progress(self.assoc))

    def stalled(self, now: float) -> bool:
        """True when it is receiving but nothing came for a while."""
        return (not self.handling and self.reader is not None
                and now - self.reader.last_received > _STALLED)


#: pynetdicom's states of an association being released or released (PS3.8 9.2): from the A-RELEASE-RQ on
_RELEASING = frozenset({"Sta7", "Sta8", "Sta9", "Sta10", "Sta11", "Sta12", "Sta13"})


def _released(assoc: Association) -> bool:
    """True once the association's release began or ended (an abort then ends nothing the peer still uses)."""
    state = getattr(getattr(assoc.dul, "state_machine", None), "current_state", None)
    return bool(assoc.is_released) or state in _RELEASING


class _Throttled:
    """One log line for a kind of refusal, then at most one every ``every`` seconds with the count.

    A flood of hostile connections must not fill the log either.
    """

    def __init__(self, level: int = logging.WARNING, every: float = 10.0) -> None:
        self.level = level
        self.every = every
        self.last = -every
        self.skipped = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.skipped += 1
            return
        suffix = f" ({self.skipped} more like it since the last report)" if self.skipped else ""
        logger.log(self.level, message + suffix, *args)
        self.last, self.skipped = now, 0


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


class DicomServer:
    """A Storage and Verification SCP that hands every received instance to ``sink``.

    ``sop_classes`` are the storage SOP classes accepted, in every transfer
    syntax (empty: all of pynetdicom's storage classes); Verification is
    always accepted. ``tls`` makes it speak only DICOM TLS. ``limits``
    bound what any peer can cost (:class:`~dicomnode.net.limits.Limits`).

    >>> server = DicomServer(ae_title="NODE", sink=my_sink, ip="127.0.0.1", port=0)  # doctest: +SKIP
    >>> server.start(); server.port  # doctest: +SKIP
    40123
    >>> server.close()  # doctest: +SKIP
    """

    def __init__(self, *, ae_title: str, sink: InstanceSink, ip: str = "0.0.0.0", port: int = 11112,
                 sop_classes: Sequence[str] = (), require_called_aet: bool = False,
                 require_calling_aet: Sequence[str] = (), tls: TlsSettings | ssl.SSLContext | None = None,
                 limits: Limits = DEFAULT_LIMITS, handoff: Handoff | None = None,
                 on_closed: Callable[[Peer], None] | None = None) -> None:
        self.ae_title = ae_title
        self.sink = sink
        self.ip = ip
        self.port = port
        self.sop_classes = tuple(sop_classes)
        self.require_called_aet = require_called_aet
        self.require_calling_aet = tuple(require_calling_aet)
        self.tls = tls.server_context() if isinstance(tls, TlsSettings) else tls
        self.limits = limits
        self.handoff = handoff
        self.on_closed = on_closed
        #: associations handed to another process (``handoff``) until it says they closed
        self._remote: dict[int, Peer] = {}
        self._listener: socket.socket | None = None
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._pending: dict[socket.socket, _Pending] = {}
        #: admitted associations until their end path is done; ``_open`` counts those not ending
        self._live: dict[int, _Live] = {}
        self._open = 0
        self._per_address: Counter[str] = Counter()
        self._lock = threading.Condition()
        self._next_id = 0
        self._ae: Any = None
        self._contexts: list[Any] = []
        self._handlers: list[tuple[Any, Any]] = []
        self._full = _Throttled()
        self._evicted = _Throttled()
        self._dropped = _Throttled(logging.INFO)
        #: accepted sockets whose TCP_NODELAY was checked after setting it, and how many had it on
        self.nodelay_checked = 0
        self.nodelay_on = 0
        #: connections closed because more were pending, and associations rejected for a limit
        self.evictions = 0
        self.rejections = 0

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind, listen and serve on a thread of its own; :attr:`port` is the real port after."""
        self.prepare()
        family = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        listener = socket.create_server((self.ip, self.port), family=family, backlog=128)
        listener.setblocking(False)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="dicomnode-edge", daemon=True)
        self._thread.start()

    def prepare(self) -> None:
        """Make the application entity that serves associations, without listening.

        :meth:`start` calls it; a receiving process that is handed
        connections (:meth:`serve_connection`) calls it alone.
        """
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        adapter.check()
        adapter.remember_uids()
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = self.limits.maximum_pdu_size
        # the edge counts associations itself, before pynetdicom sees them; pynetdicom's own count
        # also sees threads that are ending, so it must not refuse first
        ae.maximum_associations = self.limits.maximum_associations + self.limits.maximum_pending_connections
        ae.require_called_aet = self.require_called_aet
        ae.require_calling_aet = list(self.require_calling_aet)
        ae.network_timeout = self.limits.idle_timeout
        ae.acse_timeout = self.limits.connection_timeout
        uids = self.sop_classes or tuple(str(c.abstract_syntax) for c in AllStoragePresentationContexts)
        adapter.add_supported_contexts(ae, uids, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        self._ae = ae
        self._contexts = list(ae.supported_contexts)
        self._handlers = [(evt.EVT_C_STORE, self._on_c_store)]

    def close(self) -> None:
        """Stop accepting; let the instances being received finish (``close_receive_timeout``), then end the rest.

        Returns within about ``close_receive_timeout`` + 3 s whatever the peers do.
        Safe to call more than once.
        """
        self._stopping.set()
        self._wake()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_END_GRACE)
        handing: threading.Thread | None = None
        if self.handoff is not None:  # the other processes close their associations alongside these
            handing = threading.Thread(target=self._close_handoff, name="dicomnode-handoff-close", daemon=True)
            handing.start()
        deadline = time.monotonic() + self.limits.close_receive_timeout
        while True:
            now = time.monotonic()
            with self._lock:
                live = [entry for entry in self._live.values() if not entry.ending]
            if not live:
                break
            for entry in live:
                if now >= deadline or not entry.busy() or entry.stalled(now):
                    self._end(entry, "the node is closing")
            with self._lock:
                self._lock.wait(0.05)
        grace = time.monotonic() + _END_GRACE
        with self._lock:
            while self._live and time.monotonic() < grace:
                self._lock.wait(0.05)
            left = len(self._live)
        if left:
            logger.warning("%d association thread(s) had not ended %g s after their sockets were shut down",
                           left, _END_GRACE)
        if handing is not None:
            handing.join()

    def _close_handoff(self) -> None:
        assert self.handoff is not None
        try:
            self.handoff.close(self.limits.close_receive_timeout)
        except Exception:  # the rest of the close must go on
            logger.exception("closing the receiving processes failed")
        with self._lock:
            for peer_id in list(self._remote):
                self._release_remote(peer_id)

    @property
    def associations(self) -> int:
        """Associations admitted and not ended."""
        with self._lock:
            return self._open

    @property
    def pending(self) -> int:
        """Connections that have not sent their A-ASSOCIATE-RQ yet."""
        return len(self._pending)

    # --- the edge's thread ------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_writer is None:
            return
        try:
            self._wake_writer.send(b"\x00")
        except OSError:
            pass

    def _serve(self) -> None:
        listener, wake = self._listener, self._wake_reader
        assert listener is not None and wake is not None and self._wake_writer is not None
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "listen")
        wake.setblocking(False)
        selector.register(wake, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping.is_set():
                for key, events in selector.select(self._next_timeout()):
                    if key.data == "listen":
                        self._accept(selector, listener)
                    elif key.data == "wake":
                        try:
                            wake.recv(4096)
                        except OSError:
                            pass
                    else:
                        self._advance(selector, key.data, events)
                self._expire(selector)
        except Exception:  # the edge must not die silently: say so, the node is deaf without it
            logger.exception("the DICOM server's edge thread failed; no new association is accepted")
        finally:
            for pending in list(self._pending.values()):
                self._drop(selector, pending)
            selector.close()
            listener.close()
            wake.close()
            self._wake_writer.close()

    def _next_timeout(self) -> float:
        if not self._pending:
            return 1.0
        oldest = min(p.started for p in self._pending.values())
        return max(0.0, min(1.0, oldest + self.limits.connection_timeout - time.monotonic()))

    def _expire(self, selector: selectors.BaseSelector) -> None:
        limit = time.monotonic() - self.limits.connection_timeout
        for pending in [p for p in self._pending.values() if p.started <= limit]:
            self._dropped("closing the connection from %s:%d: no complete association request within "
                        "connection_timeout (%g s)", *pending.address[:2], self.limits.connection_timeout)
            self._drop(selector, pending)

    def _accept(self, selector: selectors.BaseSelector, listener: socket.socket) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of file descriptors, most likely: let the others finish
                logger.error("cannot accept a connection: %s", error)
                return
            sock.setblocking(False)
            self._nodelay(sock)
            tls = self.tls is not None
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ssl.SSLError) as error:
                    self._dropped("TLS refused the connection from %s:%d: %s", *address[:2], error)
                    sock.close()
                    continue
            pending = _Pending(sock, address, tls)
            self._pending[sock] = pending
            selector.register(sock, selectors.EVENT_READ, pending)
            if len(self._pending) > self.limits.maximum_pending_connections:
                oldest = next(iter(self._pending.values()))
                self.evictions += 1
                self._evicted("more than maximum_pending_connections (%d) connections have not sent an "
                                   "association request: closing the oldest, from %s",
                                   self.limits.maximum_pending_connections, oldest.address[0])
                self._drop(selector, oldest)

    def _nodelay(self, sock: socket.socket) -> None:
        set_tcp_nodelay(sock)
        try:
            on = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        except OSError:
            return
        self.nodelay_checked += 1
        self.nodelay_on += int(on)

    def _drop(self, selector: selectors.BaseSelector, pending: _Pending, reply: bytes = b"") -> None:
        self._pending.pop(pending.sock, None)
        try:
            selector.unregister(pending.sock)
        except (KeyError, ValueError):
            pass
        if reply:
            try:
                pending.sock.send(reply)
            except (OSError, ValueError):
                pass
        try:
            pending.sock.close()
        except OSError:
            pass

    def _advance(self, selector: selectors.BaseSelector, pending: _Pending, events: int) -> None:
        """Take what the connection has: more of the TLS handshake, more of its association request."""
        try:
            if pending.handshaking:
                pending.sock.do_handshake()  # type: ignore[attr-defined]
                pending.handshaking = False
                selector.modify(pending.sock, selectors.EVENT_READ, pending)
            incoming = pending.incoming
            while not incoming.complete:
                if not incoming.receive(pending.sock):
                    self._drop(selector, pending)  # the peer went away
                    return
                if incoming.header_complete and incoming.pdu_type != 0x01:
                    reply = b"" if incoming.pdu_type == 0x07 else a_abort(ABORT_UNEXPECTED_PDU)
                    self._dropped("closing the connection from %s:%d: it sent %s before an association request",
                                *pending.address[:2], f"a PDU of type 0x{incoming.pdu_type:02X}")
                    self._drop(selector, pending, reply)
                    return
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except ssl.SSLWantWriteError:
            selector.modify(pending.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, pending)
            return
        except PduRefused as refused:
            self._dropped("aborting the connection from %s:%d: %s", *pending.address[:2], refused)
            self._drop(selector, pending, a_abort(refused.reason))
            return
        except (OSError, ssl.SSLError) as error:
            self._dropped("closing the connection from %s:%d: %s", *pending.address[:2], error)
            self._drop(selector, pending)
            return
        self._pending.pop(pending.sock, None)
        selector.unregister(pending.sock)
        self._admit(pending)

    def _admit(self, pending: _Pending) -> None:
        """Hand a complete association request to pynetdicom, or reject it for a limit."""
        body = pending.incoming.body
        sock, address = pending.sock, pending.address
        if len(body) < 68:  # protocol version, reserved, two AE titles, 32 reserved bytes
            self._dropped("aborting the connection from %s:%d: an association request of %d bytes is too short",
                        *address[:2], len(body))
            self._close(sock, a_abort(ABORT_INVALID_PARAMETER))
            return
        called = bytes(body[4:20]).decode("ascii", "replace").strip()
        calling = bytes(body[20:36]).decode("ascii", "replace").strip()
        ip = address[0]
        limits = self.limits
        with self._lock:
            if self._open >= limits.maximum_associations:
                why = f"maximum_associations ({limits.maximum_associations}) are open"
            elif self._per_address[ip] >= limits.maximum_associations_per_address:
                why = f"maximum_associations_per_address ({limits.maximum_associations_per_address}) are open from {ip}"
            else:
                why = ""
                self._next_id += 1
                peer = Peer(self._next_id, calling, called, (ip, int(address[1])), pending.tls)
        if why:
            self.rejections += 1
            self._full("rejected an association from %s (calling AE %r): %s", ip, calling, why)
            # transient, by the service provider (presentation), local limit exceeded
            self._close(sock, a_associate_rj(0x02, 0x03, 0x02))
            return
        # the first association is served here: a single sender gets its answers without a hand-over's round
        # trip; while one is, the next go to the other processes
        if (self.handoff is not None and not pending.tls and self._live
                and self._hand_off(sock, address, pending.incoming.pdu(), peer)):
            return
        self.serve_connection(sock, address, pending.incoming.pdu(), peer)

    def _hand_off(self, sock: socket.socket, address: tuple[str, int], prefix: bytes, peer: Peer) -> bool:
        """Give an admitted connection to another process; False when none takes it (it is served here).

        The slot is held from here until the process says the association closed
        (:meth:`remote_closed`). A TLS connection is never handed over: its
        session lives in this process.
        """
        assert self.handoff is not None
        with self._lock:
            self._remote[peer.id] = peer
            self._take_slot(peer.address[0])
        try:
            taken = self.handoff.take(sock, address, prefix, peer)
        except Exception:
            logger.exception("cannot hand the association from %s to a receiving process", peer)
            taken = False
        if not taken:
            with self._lock:
                self._release_remote(peer.id)
            return False
        try:
            sock.close()  # the other process holds its own descriptor of the connection
        except OSError:
            pass
        return True

    def remote_closed(self, peer_id: int) -> None:
        """An association handed to another process ended: free its slot."""
        with self._lock:
            self._release_remote(peer_id)
            self._lock.notify_all()

    def _release_remote(self, peer_id: int) -> None:
        peer = self._remote.pop(peer_id, None)
        if peer is not None:
            self._free_slot(peer.address[0])

    def _take_slot(self, ip: str) -> None:
        """Count one more open association from ``ip`` (under ``_lock``)."""
        self._open += 1
        self._per_address[ip] += 1

    def _free_slot(self, ip: str) -> None:
        """Count one open association from ``ip`` fewer (under ``_lock``)."""
        self._open -= 1
        self._per_address[ip] -= 1
        if not self._per_address[ip]:
            del self._per_address[ip]

    def serve_connection(self, sock: socket.socket, address: tuple[str, int], prefix: bytes, peer: Peer) -> bool:
        """Serve an admitted connection, whose association request ``prefix`` was read, on a thread of its own.

        Returns False when pynetdicom could not take it (the socket is then
        closed, and ``on_closed`` told).
        """
        limits = self.limits
        ip = address[0]
        try:
            # blocking, without a Python timeout (which would poll before every recv and send); the
            # kernel bounds a write to a peer that does not read, and the reader its PDU's deadline
            sock.setblocking(True)
            bound_waits(sock, send=limits.pdu_timeout)
            assoc = adapter.accept(self._ae, sock, address, prefix=prefix,
                                   contexts=self._contexts, limits=limits, handlers=self._handlers,
                                   ended=self._ended)
            adapter.limit_dataset_size(assoc, limits.maximum_dataset_size)
            adapter.wake_on_data(assoc)
            adapter.wake_on_message(assoc)
            key = id(assoc)
            lane = adapter.take_c_stores(assoc, lambda request: self._take_request(key, request),
                                         limits.maximum_dataset_size)
            if lane is None:
                answer_c_stores_directly(assoc)
        except Exception:  # pynetdicom failed to take it: nothing is open yet
            logger.exception("cannot start the association from %s", peer)
            self._close(sock)
            if self.on_closed is not None:
                self.on_closed(peer)
            return False
        with self._lock:
            self._live[id(assoc)] = _Live(assoc, sock, peer)
            self._take_slot(ip)
        assoc.start()
        return True

    def _close(self, sock: socket.socket, reply: bytes = b"") -> None:
        try:
            if reply:
                sock.send(reply)
        except (OSError, ValueError):
            pass
        try:
            sock.close()
        except OSError:
            pass

    # --- the associations' threads ----------------------------------------------------------------

    def _on_c_store(self, event: Event) -> int | Dataset:
        """pynetdicom's ``EVT_C_STORE`` handler, for the C-STOREs the lane does not take (or without it)."""
        with self._lock:
            live = self._live.get(id(event.assoc))
        request: Any = event.request  # a C_STORE primitive
        encoded = getattr(request, "DataSet", None)
        size = adapter.discarded_size(encoded)
        if size is None:
            size = encoded.getbuffer().nbytes if encoded is not None else 0
        kept = None if adapter.discarded_size(encoded) is not None else encoded
        result = self._deliver(live, kept, size, str(event.context.transfer_syntax),
                               str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID),
                               lambda: event.file_meta)
        return _status(*result) if isinstance(result, tuple) else result

    def _take_request(self, key: int, request: StoreRequest) -> int | tuple[int, str]:
        """A C-STORE request the association's lane read (:func:`~dicomnode.net.adapter.take_c_stores`)."""
        return self._deliver(self._live.get(key), request.dataset, request.size, request.transfer_syntax,
                             request.sop_class, request.sop_instance,
                             lambda: received_file_meta(request.sop_class, request.sop_instance,
                                                        request.transfer_syntax))

    def _deliver(self, live: _Live | None, encoded: BytesIO | None, size: int, transfer_syntax: str,
                 sop_class: str, sop_instance: str, file_meta: Callable[[], FileMetaDataset]
                 ) -> int | tuple[int, str]:
        """Hand one received C-STORE to the sink, once, and return its status; refuse what cannot be taken."""
        if live is None:  # the association is ending
            return STATUS_OUT_OF_RESOURCES, "the node is closing"
        limit = self.limits.maximum_dataset_size
        if size > limit:
            logger.warning("refused a C-STORE from %s: its dataset of %d bytes is larger than "
                           "maximum_dataset_size (%d)", live.peer, size, limit)
            return self._refuse(live, sop_instance, size, STATUS_OUT_OF_RESOURCES,
                                f"dataset too large: {size} bytes, limit {limit}")
        if encoded is None:
            return self._refuse(live, sop_instance, size, STATUS_CANNOT_DECODE, "the C-STORE request has no dataset")
        instance = ReceivedInstance(encoded, transfer_syntax, sop_class, sop_instance, file_meta())
        # the end path waits for this lock: the sink hears of the end after the association's last instance
        with live.lock:
            if live.ended:
                return STATUS_OUT_OF_RESOURCES, "the node is closing"
            live.delivered += 1
            live.handling = True
            try:
                return self.sink.on_instance(instance, live.peer)
            except Exception as error:  # the sink's bug must not take the association down
                logger.exception("the node failed on a C-STORE from %s", live.peer)
                return STATUS_CANNOT_UNDERSTAND, f"the node failed: {type(error).__name__}"
            finally:
                live.handling = False

    def _refuse(self, live: _Live, sop_instance: str, size: int, status: int, comment: str) -> tuple[int, str]:
        """Answer ``status`` without the sink taking the instance, and tell the sink for its records."""
        with live.lock:
            if live.ended:  # the sink already heard of the end: nothing more may follow it
                return status, comment
            live.refused += 1
            try:
                self.sink.on_refused(live.peer, sop_instance, size, status, comment)
            except Exception:  # the sink's bug must not change the answer
                logger.exception("the node failed recording a refused C-STORE from %s", live.peer)
        return status, comment

    def _end(self, live: _Live, why: str) -> None:
        """End an association now: an A-ABORT where it is safe to write one, then shut its socket down."""
        live.ending = True
        if _released(live.assoc):  # the peer released it and has yet to close the connection: nothing to abort
            logger.debug("closing the connection of the released association from %s: %s", live.peer, why)
        else:
            logger.warning("aborting the association from %s: %s", live.peer, why)
        if not live.peer.tls:  # one TLS connection must not be written by two threads at once
            adapter.send_abort(live.sock, 0x00)
        try:
            live.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _ended(self, assoc: Association) -> None:
        """Every association's one end path, on its own thread: free its slot, close, tell the sink."""
        adapter.stop_network_thread(assoc)
        with self._lock:
            live = self._live.get(id(assoc))
            if live is None:
                return
            live.ending = True
            self._free_slot(live.peer.address[0])
        with live.lock:  # an instance the DUL thread is handing to the sink finishes first
            live.ended = True
        try:
            live.sock.close()
        except OSError:
            pass
        try:
            if live.delivered or live.refused:
                self.sink.on_association_end(live.peer)
        except Exception:
            logger.exception("the node failed at the end of the association from %s", live.peer)
        finally:
            with self._lock:
                del self._live[id(assoc)]
                self._lock.notify_all()
            if self.on_closed is not None:
                try:
                    self.on_closed(live.peer)
                except Exception:
                    logger.exception("the node failed at the close of the association from %s", live.peer)
