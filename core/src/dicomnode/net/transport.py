"""The network plumbing every association shares: TCP_NODELAY, PDU size, timeouts, failure reasons.

pynetdicom never sets ``TCP_NODELAY``. A C-STORE is written as a command
PDU followed by data PDUs, each smaller than a loopback segment, so with
Nagle's algorithm the last piece can wait for the peer's delayed ACK (about
40 ms per instance on Linux). :func:`on_connection_open` is an
``EVT_CONN_OPEN`` handler that turns Nagle off; pynetdicom fires that event
for the sockets it connects *and* for the ones its server accepts, so the
client helpers here and the node's server use the same handler through
:data:`NODELAY_HANDLERS`.

What else our associations change of pynetdicom (reading PDUs, waiting
instead of polling) is in :mod:`dicomnode.net.adapter`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, evt

from dicomnode.errors import AssociationError

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

    from dicomnode.net.address import Address

__all__ = [
    "NODELAY_HANDLERS",
    "UNLIMITED_PDU",
    "application_entity",
    "associate",
    "describe_failure",
    "end",
    "no_response_kind",
    "no_response_reason",
    "on_connection_open",
    "set_tcp_nodelay",
]

logger = logging.getLogger("dicomnode.dimse")

#: the maximum PDU size we announce for what we receive: 0 means no limit, so
#: the peer sends each instance in as few PDUs as it likes
UNLIMITED_PDU = 0


def set_tcp_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off on a connected TCP socket (TLS sockets included)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as error:  # a closed socket, or a family without TCP options
        logger.debug("could not set TCP_NODELAY: %s", error)


def on_connection_open(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler: set TCP_NODELAY on the association's socket."""
    from dicomnode.net.adapter import socket_of

    sock = socket_of(event.assoc)
    if sock is not None:
        set_tcp_nodelay(sock)


#: pass as ``evt_handlers`` to ``AE.associate`` or ``AE.start_server``
NODELAY_HANDLERS: list[Any] = [(evt.EVT_CONN_OPEN, on_connection_open)]


def application_entity(ae_title: str, timeout: float) -> AE:
    """A pynetdicom AE for one client operation, every network step bounded by ``timeout``."""
    from dicomnode.net.address import check_ae_title

    check_ae_title(ae_title, "calling AE title")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.maximum_pdu_size = UNLIMITED_PDU
    return ae


def _connect_error(address: Address, timeout: float, tls: ssl.SSLContext | None) -> str:
    """Why connecting to the peer fails (tried again only after a failure, for the message).

    pynetdicom logs the error of its own attempt but does not return it.
    """
    try:
        with socket.create_connection((address.ip, address.port), timeout=min(timeout, 5.0)) as sock:
            if tls is not None:
                try:
                    tls.wrap_socket(sock, server_hostname=address.ip).close()
                except (ssl.SSLError, ssl.CertificateError) as error:
                    return f"the TLS handshake failed: {error}"
            return "the peer accepted the connection but did not answer the association request"
    except OSError as error:
        return f"cannot connect: {error.strerror or error}"


def describe_failure(assoc: Association, address: Address, timeout: float, *, connected: bool,
                     received: list[Any], elapsed: float, tls: ssl.SSLContext | None = None) -> str:
    """A sentence saying why an association to ``address`` was not established.

    ``received`` holds the PDUs the peer sent. A rejection is read from
    there: when the peer closes the connection right after rejecting,
    pynetdicom may report an abort although the rejection arrived.
    """
    from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ

    for pdu in received:
        if isinstance(pdu, A_ASSOCIATE_RJ):
            return (f"{address} rejected the association ({pdu.result_str}, "
                    f"source: {pdu.source_str}, reason: {pdu.reason_str})")
    if not connected:
        return f"{address}: {_connect_error(address, timeout, tls)}"
    if any(isinstance(pdu, A_ASSOCIATE_AC) for pdu in received) and not assoc.accepted_contexts:
        return f"{address} accepted none of the proposed presentation contexts"
    if any(isinstance(pdu, A_ABORT_RQ) for pdu in received):
        return f"{address} aborted the association"
    if elapsed < timeout:
        return f"{address} closed the connection without answering the association request"
    return f"{address} did not answer the association request within {timeout:g} s"


def associate(ae: AE, address: Address, contexts: list[PresentationContext], *,
              timeout: float, tls: ssl.SSLContext | None = None,
              ext_neg: list[Any] | None = None,
              handlers: list[Any] | None = None) -> Association:
    """Open an association to ``address`` proposing ``contexts``; raise AssociationError on failure.

    The error message says whether the peer was unreachable, refused the
    association (with its reason), accepted no presentation context or
    never answered.
    """
    connected: list[bool] = []
    received: list[Any] = []

    def _opened(event: evt.Event) -> None:
        connected.append(True)
        on_connection_open(event)

    def _received(event: evt.Event) -> None:
        if len(received) < 4:  # only the negotiation's PDUs matter here
            received.append(event.pdu)

    tls_args = (tls, address.ip) if tls is not None else None
    started = time.monotonic()
    assoc = ae.associate(
        address.ip, address.port, contexts, ae_title=address.ae_title, max_pdu=UNLIMITED_PDU,
        ext_neg=ext_neg, tls_args=tls_args,
        evt_handlers=[(evt.EVT_CONN_OPEN, _opened), (evt.EVT_PDU_RECV, _received), *(handlers or [])],
    )
    if not assoc.is_established:
        reason = describe_failure(assoc, address, timeout, connected=bool(connected), received=received,
                                  elapsed=time.monotonic() - started, tls=tls)
        logger.warning("association to %s failed: %s", address, reason)
        raise AssociationError(reason)
    logger.debug("association to %s established, %d context(s) accepted",
                 address, len(assoc.accepted_contexts))
    return assoc


def no_response_kind(assoc: Association) -> str:
    """Why a request got no response: ``"aborted"`` (A-ABORT), ``"closed"`` (connection lost) or ``"timeout"``."""
    if assoc.acse.is_aborted("a-abort"):
        return "aborted"
    if assoc.acse.is_aborted("a-p-abort"):
        return "closed"
    return "timeout"


def no_response_reason(assoc: Association, address: Address, operation: str, timeout: float) -> str:
    """A sentence saying why a request got no response (see :func:`no_response_kind`)."""
    kind = no_response_kind(assoc)
    if kind == "aborted":
        return f"{address} aborted the association instead of answering the {operation}"
    if kind == "closed":
        return f"{address} closed the connection instead of answering the {operation}"
    return f"{address} sent no {operation} response within {timeout:g} s; the association was aborted"


def end(assoc: Association) -> None:
    """Release an association that is still up; just clean up one that the peer aborted."""
    if assoc.is_established and not assoc.acse.is_aborted():
        assoc.release()
    elif assoc.is_alive() or assoc.dul.is_alive():
        assoc.kill()
