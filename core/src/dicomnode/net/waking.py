"""pynetdicom's two polling loops, made to wait for work instead.

Each pynetdicom association runs two threads that poll:

- the DUL thread (``DULServiceProvider.run_reactor``) sleeps
  ``_run_loop_delay`` (1 ms) whenever it finds nothing to read or send,
  then looks at its socket again;
- an accepted association's reactor (``Association._run_reactor``) sleeps a
  literal 1 ms before each look for a complete DIMSE message.

So every C-STORE request, and every response, waited up to a millisecond
twice, and an idle association cost CPU all the time it stayed open. This
module puts one stand-in for the :mod:`time` module into
``pynetdicom.dul`` and ``pynetdicom.association``. Its ``sleep`` is the real
one for every thread but those registered here:

- a DUL thread handed to :func:`wake_on_data` waits in ``select`` until
  its socket has data, or it is given something to send (a wake-up byte on a
  socket pair of its own), for at most :data:`LONGEST_WAIT`;
- an association handed to :func:`wake_on_message` waits on its DIMSE
  message queue until a message is queued, for at most
  :data:`LONGEST_WAIT` (a release or an abort by the peer is seen within
  that time).

Nothing else changes: a thread that is not woken sleeps no longer than the
longest wait, so a missed wake-up costs time, never correctness. An idle
open association then costs about 400 wake-ups a second instead of 2,000
(``benchmarks/idle_polling.py``).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.dul import DULServiceProvider

__all__ = ["LONGEST_WAIT", "wake_on_data", "wake_on_message"]

logger = logging.getLogger("dicomnode.dimse")

#: the longest a woken thread waits without news. Data, requests to send
#: and complete messages wake it at once; only timers, a request to stop
#: and the peer's release or abort are noticed up to this much later.
LONGEST_WAIT = 0.005

#: the association reactor's own sleep, by literal, in pynetdicom 3
_REACTOR_SLEEP = 0.001


class _Waker:
    """Wakes one DUL thread when its socket is readable or a primitive is queued for it to send."""

    def __init__(self, dul: DULServiceProvider, sock: socket.socket) -> None:
        self.sock = sock
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        weakref.finalize(dul, _close, self.reader, self.writer)
        queue_primitive = dul.send_pdu

        def send_pdu(primitive: Any) -> None:
            queue_primitive(primitive)
            self.wake()

        dul.send_pdu = send_pdu  # type: ignore[method-assign]

    def wake(self) -> None:
        try:
            self.writer.send(b"\x00")
        except OSError:  # the pair is full (a wake-up is pending anyway) or closed
            pass

    def wait(self, longest: float) -> None:
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return  # decrypted data waits in the TLS layer, where select cannot see it
        try:
            readable, _, _ = select.select([self.sock, self.reader], [], [], longest)
        except (OSError, ValueError):  # the socket was closed: the DUL finds that out itself
            time.sleep(longest)
            return
        if self.reader in readable:
            try:
                self.reader.recv(4096)
            except OSError:
                pass


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        sock.close()


class _Clock:
    """The stand-in for :mod:`time` in ``pynetdicom.dul`` and ``pynetdicom.association``."""

    def __init__(self) -> None:
        self.duls: weakref.WeakKeyDictionary[threading.Thread, _Waker] = weakref.WeakKeyDictionary()
        self.reactors: weakref.WeakSet[threading.Thread] = weakref.WeakSet()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        thread = threading.current_thread()
        waker = self.duls.get(thread)
        if waker is not None:
            waker.wait(min(seconds, LONGEST_WAIT))
        elif seconds == _REACTOR_SLEEP and thread in self.reactors:
            messages = thread.dimse.msg_queue  # type: ignore[attr-defined]  # an Association thread
            with messages.not_empty:
                if not messages.queue:
                    messages.not_empty.wait(LONGEST_WAIT)
        else:
            time.sleep(seconds)


_clock = _Clock()
_install_lock = threading.Lock()


def _install() -> None:
    import pynetdicom.association
    import pynetdicom.dul

    with _install_lock:
        for module in (pynetdicom.dul, pynetdicom.association):
            if getattr(module, "time", None) is not _clock:
                setattr(module, "time", _clock)  # noqa: B010 - the module's global, by name


def wake_on_message(assoc: Association) -> None:
    """Let an accepted association serve each DIMSE message as soon as it is complete.

    Call it before the association's thread starts (the node does, in its
    ``EVT_CONN_OPEN`` handler).
    """
    _install()
    _clock.reactors.add(assoc)


def wake_on_data(assoc: Association) -> None:
    """Let the association's DUL thread wait for data or work instead of polling.

    Its sleep when idle (``_run_loop_delay``) becomes a wait of up to
    :data:`LONGEST_WAIT` that ends as soon as the peer sends something
    or the association queues something to send. Call it for an accepted
    association before its thread starts, or for one we requested once it
    is established (and not while it sends).
    """
    dul = assoc.dul
    wrapper = dul.socket
    sock = wrapper.socket if wrapper is not None else None
    if sock is None:
        logger.debug("association without a socket: its DUL keeps polling")
        return
    _install()
    if dul not in _clock.duls:
        _clock.duls[dul] = _Waker(dul, sock)
    dul._run_loop_delay = LONGEST_WAIT
