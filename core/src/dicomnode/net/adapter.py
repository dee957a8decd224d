"""Every place dicomnode reaches into pynetdicom's internals, and the start-up check that they are there.

pynetdicom 3.0 is used through its public API except here. Each patch is
written up as a proposal for pynetdicom in ``docs/pynetdicom-patches.md``
(what, why, the measured gain), so that each can go once pynetdicom does
the same. Two kinds:

The edge (always on; it only needs what a subclass or a wrapper needs):

- :func:`accept` makes the association of a connection the node's own
  selector loop accepted and read the A-ASSOCIATE-RQ of, the way
  pynetdicom's ``RequestHandler`` does, with a :class:`GuardedSocket` whose
  reads are bounded (:class:`~dicomnode.net.pdu.PduReader`), a copy of the
  presentation contexts that costs no deep copy of every UID, the idle
  timeout, and a call once its thread ends, whatever ended it;
- :func:`limit_dataset_size` throws away the bytes of a dataset beyond the
  limit as they arrive (for the messages pynetdicom reads).

Speed (on when :func:`check` finds what it expects, else pynetdicom's own
behaviour, with one warning):

- :func:`take_c_stores`: an accepted association's DUL thread reads each
  PDU once the association is established and answers C-STORE requests
  itself (:mod:`dicomnode.net.receiving`), handing everything else to
  pynetdicom as it arrived;
- :func:`wake_on_data` / :func:`wake_on_message`: the DUL and association
  threads wait for data or a complete message instead of sleeping 1 ms
  and looking again (a stand-in for the ``time`` module in
  ``pynetdicom.dul`` and ``pynetdicom.association``);
- :func:`intercept_messages`: DIMSE messages written by the caller
  (C-STORE requests and responses, :mod:`dicomnode.net.pdata`);
- :func:`read_pdus`: an association we requested reads each PDU in as few
  calls as it arrives in, bounded like the edge's;
- :func:`parked_reactor`: an association we requested keeps its reactor
  parked while we exchange requests and responses;
- :func:`add_supported_contexts`: a node's supported contexts are built
  with each transfer syntax validated once, not once per context;
- :func:`remember_uids`: pynetdicom's ``set_uid`` makes and validates a
  UID it has already accepted once from a memo (an association request's
  ~500 UIDs are the same in every association of a sender).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pydicom.uid import UID as _UID
from pynetdicom import _config as _pynetdicom_config
from pynetdicom.transport import AssociationSocket

from dicomnode.net.pdu import ABORT_INVALID_PARAMETER, HEADER, PduReader, PduRefused, a_abort

if TYPE_CHECKING:
    from pynetdicom import AE
    from pynetdicom.association import Association
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.presentation import PresentationContext

    from dicomnode.net.limits import Limits
    from dicomnode.net.receiving import CStoreLane, StoreRequest

__all__ = [
    "LONGEST_WAIT",
    "GuardedSocket",
    "accept",
    "add_supported_contexts",
    "check",
    "discarded_size",
    "fast",
    "intercept_messages",
    "limit_dataset_size",
    "message_in_progress",
    "next_message",
    "parked_reactor",
    "read_pdus",
    "reader_of",
    "remember_uids",
    "send_abort",
    "socket_of",
    "stop_network_thread",
    "take_c_stores",
    "transport_lost",
    "wake_on_data",
    "wake_on_message",
]

logger = logging.getLogger("dicomnode.net")

#: the longest a woken thread waits without news. Data, requests to send and complete
#: messages wake it at once; only timers, a request to stop and the peer's release or
#: abort are noticed up to this much later.
LONGEST_WAIT = 0.005

#: the association reactor's own sleep, by literal, in pynetdicom 3.0
_REACTOR_SLEEP = 0.001


# --- the start-up check ---------------------------------------------------------------------------


def _code_names(function: Any) -> set[str]:
    return set(function.__code__.co_names)


def _problems() -> list[str]:
    """What the speed patches expect of pynetdicom and do not find (empty: all there)."""
    import pynetdicom.association as association
    import pynetdicom.dimse as dimse
    import pynetdicom.dul as dul
    from pynetdicom import AE
    from pynetdicom.presentation import PresentationContext

    problems = []
    for module in (dul, association):
        if getattr(module, "time", None) not in (time, _clock):
            problems.append(f"{module.__name__} does not use the time module by that name")
    if not {"time", "sleep", "_run_loop_delay"} <= _code_names(dul.DULServiceProvider.run_reactor):
        problems.append("DULServiceProvider.run_reactor does not sleep with time.sleep(self._run_loop_delay)")
    reactor = association.Association._run_reactor
    if not ({"time", "sleep"} <= _code_names(reactor) and _REACTOR_SLEEP in reactor.__code__.co_consts):
        problems.append(f"Association._run_reactor does not poll with time.sleep({_REACTOR_SLEEP})")
    if not {"get_msg", "_reactor_checkpoint", "_is_paused"} <= _code_names(reactor):
        problems.append("Association._run_reactor does not wait on _reactor_checkpoint and dimse.get_msg")
    if "send_msg" not in _code_names(association.Association._c_store_scp):
        problems.append("Association._c_store_scp does not answer with dimse.send_msg")
    if not {"_is_transport_event", "_idle_timer", "restart"} <= _code_names(dul.DULServiceProvider.run_reactor):
        problems.append("DULServiceProvider.run_reactor does not read through self._is_transport_event() and "
                        "restart its _idle_timer")
    if not {"_read_pdu_data", "ready"} <= _code_names(dul.DULServiceProvider._is_transport_event):
        problems.append("DULServiceProvider._is_transport_event does not read with _read_pdu_data when the "
                        "socket is ready")
    probe = association.Association(AE(), "acceptor")
    expected: list[tuple[object, str, type | tuple[type, ...]]] = [
        (probe.dul.state_machine, "current_state", str),
        (probe.requestor, "maximum_length", int),
        (probe, "_reactor_checkpoint", threading.Event),
        (probe, "_is_paused", bool),
        (probe.dul, "_run_loop_delay", float),
        (probe.dul, "event_queue", object),
        (probe.dimse, "msg_queue", object),
    ]
    for owner, name, kind in expected:
        if not isinstance(getattr(owner, name, None), kind):
            problems.append(f"{type(owner).__name__}.{name} is missing or not a {kind}")
    for owner, name in ((probe.dul, "send_pdu"), (probe.dimse, "send_msg"), (probe.dimse, "get_msg"),
                        (probe.dul, "_is_transport_event")):
        if not callable(getattr(owner, name, None)):
            problems.append(f"{type(owner).__name__}.{name} is missing")
    if not hasattr(getattr(probe.dimse, "msg_queue", None), "not_empty"):
        problems.append("DIMSEServiceProvider.msg_queue is not a queue.Queue")
    if not isinstance(getattr(dimse, "DIMSEMessage", None), type):
        problems.append("pynetdicom.dimse.DIMSEMessage is missing")
    if not isinstance(getattr(PresentationContext(), "_transfer_syntax", None), list):
        problems.append("PresentationContext._transfer_syntax is not a list")
    if not isinstance(getattr(AE(), "_supported_contexts", None), dict):
        problems.append("AE._supported_contexts is not a dict")
    problems += _uid_problems()
    return problems


_checked: list[str] | None = None
_check_lock = threading.Lock()


def check() -> tuple[str, ...]:
    """What the speed patches miss in this pynetdicom; empty when every patch applies.

    Run once per process (the node calls it at start). When something is
    missing, one warning names it and every speed patch stays off:
    pynetdicom's own behaviour, slower but the same on the wire. The edge's
    limits do not depend on it.
    """
    global _checked
    with _check_lock:
        if _checked is None:
            try:
                _checked = _problems()
            except Exception as error:  # anything unexpected in there is a mismatch too
                _checked = [f"the check itself failed: {type(error).__name__}: {error}"]
            if _checked:
                import pynetdicom

                logger.warning("pynetdicom %s is not what dicomnode's speed patches expect (%s); they stay "
                               "off: pynetdicom's own, slower behaviour", pynetdicom.__version__,
                               "; ".join(_checked))
        return tuple(_checked)


def fast() -> bool:
    """True when the speed patches apply (:func:`check` found nothing missing)."""
    return not check()


# --- waiting instead of polling ---------------------------------------------------------------------


class _Waker:
    """Wakes one DUL thread when its socket is readable or a primitive is queued for it to send."""

    def __init__(self, dul: DULServiceProvider, sock: socket.socket, reader: PduReader | None) -> None:
        self.sock = sock
        self.reader_of_pdus = reader
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
        if self.reader_of_pdus is not None and self.reader_of_pdus.buffered:
            return  # bytes already read wait to be served
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
    """The stand-in for :mod:`time` in ``pynetdicom.dul`` and ``pynetdicom.association``.

    Its ``sleep`` is the real one for every thread but those registered.
    ``dul_waits`` and ``reactor_waits`` count the waits it turned sleeps
    into (the contract test reads them).
    """

    def __init__(self) -> None:
        self.duls: weakref.WeakKeyDictionary[threading.Thread, _Waker] = weakref.WeakKeyDictionary()
        self.reactors: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
        self.dul_waits = 0
        self.reactor_waits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        thread = threading.current_thread()
        waker = self.duls.get(thread)
        if waker is not None:
            self.dul_waits += 1
            waker.wait(min(seconds, LONGEST_WAIT))
        elif seconds == _REACTOR_SLEEP and thread in self.reactors:
            self.reactor_waits += 1
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


def wake_on_message(assoc: Association) -> bool:
    """Let an accepted association serve each DIMSE message as soon as it is complete; say whether it will.

    Call it before the association's thread starts.
    """
    if not fast():
        return False
    _install()
    _clock.reactors.add(assoc)
    return True


def wake_on_data(assoc: Association) -> bool:
    """Let the association's DUL thread wait for data or work instead of polling; say whether it will.

    Its sleep when idle (``_run_loop_delay``) becomes a wait of up to
    :data:`LONGEST_WAIT` that ends as soon as the peer sends something
    or the association queues something to send. Call it for an accepted
    association before its thread starts, or for one we requested once it
    is established (and not while it sends).
    """
    if not fast():
        return False
    dul = assoc.dul
    wrapper = dul.socket
    sock = wrapper.socket if wrapper is not None else None
    if sock is None:
        logger.debug("association without a socket: its DUL keeps polling")
        return False
    _install()
    if dul not in _clock.duls:
        reader = wrapper.reader if isinstance(wrapper, GuardedSocket) else None
        _clock.duls[dul] = _Waker(dul, sock, reader)
    dul._run_loop_delay = LONGEST_WAIT
    return True


# --- bounded reading --------------------------------------------------------------------------------


class GuardedSocket(AssociationSocket):
    """pynetdicom's socket wrapper for an accepted connection, with reads bounded by a :class:`PduReader`.

    ``prefix`` holds what the edge already read (the A-ASSOCIATE-RQ);
    :attr:`ready` says True while it waits, which ``select`` cannot see.
    """

    def __init__(self, assoc: Association, sock: socket.socket, limits: Limits, prefix: bytes) -> None:
        super().__init__(assoc, client_socket=sock)
        self.reader = PduReader(lambda: self.socket, limits.longest_pdu, limits.pdu_timeout, prefix=prefix)
        #: the C-STORE lane reading this connection's P-DATA-TF PDUs, once :func:`take_c_stores` set it up
        self.lane: CStoreLane | None = None

    @property
    def ready(self) -> bool:
        """True when there is data to read: bytes already read, or what the socket has."""
        return self.reader.buffered or bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        """The next ``nr_bytes`` of the connection, within the limits (see :class:`PduReader`)."""
        try:
            return self.reader.recv(nr_bytes)  # type: ignore[return-value]  # pynetdicom extends a bytearray
        except PduRefused as refused:
            requestor = self.assoc.requestor
            logger.warning("aborting the association from %s@%s:%s: %s", requestor.ae_title,
                           requestor.address, requestor.port, refused)
            return _refuse(self.socket, refused)


def _refuse(sock: socket.socket | None, refused: PduRefused) -> bytearray:
    """Tell the peer (A-ABORT), shut the connection down, and give pynetdicom the short read it takes
    for a closed connection (Evt17), which it handles without logging a traceback."""
    send_abort(sock, refused.reason)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    return bytearray()


def send_abort(sock: socket.socket | None, reason: int) -> None:
    """Write an A-ABORT on ``sock``, giving up after a second: the peer may not read."""
    if sock is None:
        return
    try:
        sock.settimeout(1.0)
        sock.sendall(a_abort(reason))
    except (OSError, ValueError):
        pass


def read_pdus(assoc: Association, timeout: float | None) -> None:
    """Make an association we requested read each PDU bounded, in as few calls as it arrives in.

    pynetdicom reads a PDU 4096 bytes per ``recv``: a 512 KiB slice is 128
    system calls. Here each call takes whatever has arrived, into a buffer
    that grows with the bytes received; each PDU must arrive within
    ``timeout`` seconds of its first byte. What we announce (no maximum
    PDU length) bounds nothing else.
    """
    wrapper = assoc.dul.socket
    if wrapper is None or not fast():
        return
    reader = PduReader(lambda: wrapper.socket, lambda _pdu_type: 0xFFFFFFFF, timeout)

    def recv(nr_bytes: int) -> bytes | bytearray:
        try:
            return reader.recv(nr_bytes)
        except PduRefused as refused:
            logger.warning("aborting the association to %s: %s", assoc.acceptor.address, refused)
            return _refuse(wrapper.socket, refused)

    wrapper.recv = recv  # type: ignore[method-assign,assignment]


# --- the contexts a node supports -------------------------------------------------------------------


def add_supported_contexts(ae: AE, abstract_syntaxes: Sequence[str], transfer_syntaxes: Sequence[str]) -> None:
    """``ae.add_supported_context(uid, transfer_syntaxes)`` for each of ``abstract_syntaxes``, in less time.

    pynetdicom turns every transfer syntax of every context into a
    ``UID`` and validates it again: with every storage SOP class in every
    transfer syntax that is ~7,700 validations, ~0.1 s of a node's start.
    Here each context is added through pynetdicom with the first transfer
    syntax only, and then given its own copy of the list pynetdicom made,
    and validated, for the first context: the same contexts (the contract
    test compares them), each UID validated once. Without the speed
    patches (:func:`fast`), pynetdicom's own loop.
    """
    syntaxes = list(transfer_syntaxes)
    if not fast() or not abstract_syntaxes or not syntaxes:
        for uid in abstract_syntaxes:
            ae.add_supported_context(uid, syntaxes)
        return
    from pydicom.uid import UID

    first = UID(abstract_syntaxes[0])
    ae.add_supported_context(first, syntaxes)
    validated = ae._supported_contexts[first].transfer_syntax
    for uid in abstract_syntaxes[1:]:
        key = UID(uid)
        ae.add_supported_context(key, syntaxes[:1])
        # an abstract syntax given twice ends with every transfer syntax once, as with pynetdicom
        ae._supported_contexts[key]._transfer_syntax = list(validated)


# --- the UIDs of association requests -------------------------------------------------------------

#: the modules of pynetdicom that make the UIDs of associations with ``set_uid``: not its DIMSE
#: primitives, whose SOP instance UIDs are new with every instance and would only fill the memo
_SET_UID_MODULES = ("pynetdicom.pdu_items", "pynetdicom.pdu_primitives", "pynetdicom.presentation",
                    "pynetdicom.ae")
#: the most UIDs remembered: what a hostile peer's made-up UIDs can cost in memory (~0.2 MB)
UID_MEMO_SIZE = 2048


class _UidMemo:
    """pynetdicom's ``set_uid``, answering for a UID it already accepted from a memo.

    pynetdicom makes a ``UID`` of every UID in an association request and
    validates it three times (pydicom's check in ``UID()``, pynetdicom's
    validator, ``is_valid``), and the same again as the request becomes a
    primitive and the primitive presentation contexts: about 8 of the ~30 ms
    of CPU a storescu association cost, for the same ~500 UIDs in every
    association of a sender. No library keeps validated UIDs, so this does:
    only a value ``set_uid`` itself returned that is conformant
    (``is_valid``, so every check passes in silence whatever the flags) is
    remembered, and that same immutable ``UID`` is returned for it again,
    when validation is asked for. Anything else (empty, non-conformant,
    invalid, a UID with a private transfer syntax encoding,
    ``validate=False``) goes to pynetdicom's ``set_uid`` every time, with
    its warnings and errors. The memo is emptied when pynetdicom's UI
    validator is replaced, and stops growing at :data:`UID_MEMO_SIZE`.
    """

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.known: dict[str | bytes, Any] = {}
        self.validator: object = None
        self.hits = 0

    def __call__(self, value: Any, name: str, allow_empty: bool = True, allow_none: bool = True,
                 validate: bool = True) -> Any:
        kind = type(value)
        if validate and (kind is str or kind is bytes or (kind is _UID and not hasattr(value, "_PRIVATE_TS_ENCODING"))):
            validator = _pynetdicom_config.VALIDATORS.get("UI")
            if validator is not self.validator:
                self.known.clear()
                self.validator = validator
            known = self.known.get(value)
            if known is not None:
                self.hits += 1
                return known
            uid = self.original(value, name, allow_empty, allow_none, validate)
            if uid and uid.is_valid and not hasattr(uid, "_PRIVATE_TS_ENCODING") and len(self.known) < UID_MEMO_SIZE:
                self.known[value if kind is not _UID else str(value)] = uid
            return uid
        return self.original(value, name, allow_empty, allow_none, validate)


_uid_memo: _UidMemo | None = None


def _uid_problems() -> list[str]:
    import importlib

    from pynetdicom import utils

    original = _uid_memo.original if _uid_memo is not None else utils.set_uid
    problems = []
    for name in _SET_UID_MODULES:
        found = getattr(importlib.import_module(name), "set_uid", None)
        if found is not original and found is not _uid_memo:
            problems.append(f"{name} does not use pynetdicom.utils.set_uid")
    return problems


def remember_uids() -> bool:
    """Let pynetdicom take each UID it already accepted once from a memo (:class:`_UidMemo`); say whether it will.

    In every module of pynetdicom that calls ``set_uid``; once per process.
    """
    global _uid_memo
    if not fast():
        return False
    import importlib

    with _install_lock:
        if _uid_memo is None:
            from pynetdicom import utils

            _uid_memo = _UidMemo(utils.set_uid)
            for name in _SET_UID_MODULES:
                setattr(importlib.import_module(name), "set_uid", _uid_memo)  # noqa: B010 - the module's global
    return True


# --- accepting an association -----------------------------------------------------------------------


def copy_contexts(contexts: Sequence[PresentationContext]) -> list[PresentationContext]:
    """Independent copies of the server's presentation contexts, one per association.

    pynetdicom deep-copies them for every association it accepts: with every
    storage SOP class and every transfer syntax that is thousands of UID
    objects, ~0.1 s of CPU per association. UIDs are immutable strings, so a
    copy of each context with its own transfer syntax list is as independent.
    """
    copies = []
    for context in contexts:
        copy = object.__new__(type(context))
        copy.__dict__.update(context.__dict__)
        copy._transfer_syntax = list(context._transfer_syntax)
        copies.append(copy)
    return copies


def accept(ae: AE, sock: socket.socket, address: tuple[str, int], *, prefix: bytes,
           contexts: Sequence[PresentationContext], limits: Limits, handlers: Sequence[tuple[Any, Any]],
           ended: Callable[[Association], None]) -> Association:
    """The association of an accepted connection whose A-ASSOCIATE-RQ (``prefix``) the edge read.

    What pynetdicom's ``RequestHandler`` does for a connection its own
    server accepted, with a :class:`GuardedSocket`; ``handlers`` are
    ``(event, handler)`` pairs bound to it. ``ended(assoc)`` runs on the
    association's thread when it ends, however it ends (release, abort,
    closed connection, timeout, an exception in either of its threads).
    Start it with ``assoc.start()``.
    """
    from pynetdicom._globals import MODE_ACCEPTOR
    from pynetdicom.association import Association
    from pynetdicom.transport import AddressInformation

    assoc = Association(ae, MODE_ACCEPTOR)
    # pynetdicom tells its acceptor threads by this name (AE.active_associations)
    assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
    wrapper = GuardedSocket(assoc, sock, limits, prefix)
    assoc.set_socket(wrapper)
    assoc.acceptor.maximum_length = limits.maximum_pdu_size
    assoc.acceptor.ae_title = ae.ae_title
    assoc.acceptor.address_info = AddressInformation.from_tuple(sock.getsockname()[:2])
    assoc.acceptor.implementation_class_uid = ae.implementation_class_uid
    assoc.acceptor.implementation_version_name = ae.implementation_version_name
    assoc.acceptor.supported_contexts = copy_contexts(contexts)
    assoc.requestor.address_info = AddressInformation.from_tuple(address[:2])
    for event, handler in handlers:
        assoc.bind(event, handler)
    assoc.network_timeout = limits.idle_timeout
    # the ARTIM timer: how long a closing association waits for the peer to let go
    assoc.acse_timeout = limits.connection_timeout
    # a DUL thread left behind must never keep the process from exiting
    assoc.dul.daemon = True
    run = assoc.run

    def run_then_end() -> None:
        try:
            run()
        finally:
            ended(assoc)

    assoc.run = run_then_end  # type: ignore[method-assign]
    return assoc


class _Discarded(BytesIO):
    """Stands in for the bytes of a dataset over the limit: counts what arrives, keeps none."""

    def __init__(self, received: int) -> None:
        super().__init__()
        self.received = received

    def write(self, data: Any) -> int:
        length = len(data)
        self.received += length
        return length


def discarded_size(encoded: BytesIO | None) -> int | None:
    """The bytes a dataset had when it was thrown away for its size; None when it was kept."""
    return encoded.received if isinstance(encoded, _Discarded) else None


def limit_dataset_size(assoc: Association, limit: int) -> None:
    """Throw away the bytes of a dataset as they arrive once it is larger than ``limit``.

    The message still completes (its command set is kept), so the C-STORE
    can be answered with a failure status instead of ending the association.
    """
    dimse = assoc.dimse
    receive = dimse.receive_primitive

    def drop_if_over(extra: int) -> None:
        message = dimse.message
        data = getattr(message, "data_set", None)
        if isinstance(data, BytesIO) and not isinstance(data, _Discarded) and data.tell() + extra > limit:
            message.data_set = _Discarded(data.tell())  # type: ignore[union-attr]

    def receive_primitive(primitive: Any) -> None:
        incoming = sum(len(data) - 1 for _, data in primitive.presentation_data_value_list
                       if data and not data[0] & 1)
        drop_if_over(incoming)
        receive(primitive)
        drop_if_over(0)

    dimse.receive_primitive = receive_primitive  # type: ignore[method-assign]


def take_c_stores(assoc: Association, deliver: Callable[[StoreRequest], int | tuple[int, str]],
                  limit: int) -> CStoreLane | None:
    """Let an accepted association's DUL thread answer its C-STORE requests itself; return the lane that will.

    Once the association is established (pynetdicom's state Sta6), each PDU
    the DUL thread would read is read here instead, through the same
    bounded reader, and a P-DATA-TF goes to a
    :class:`~dicomnode.net.receiving.CStoreLane`: ``deliver(request)`` is
    called on the DUL thread for each complete C-STORE request (a dataset
    over ``limit`` bytes is counted, not kept) and its status written
    back from there, between the DUL's own reads and writes, so TLS
    connections take this path too. Whatever the lane does not take (other
    messages, other PDUs) is put back in front of the reader, and the DUL
    reads it as it always does. The idle timer restarts with each PDU, as
    before; ``EVT_PDU_RECV`` and ``EVT_DIMSE_RECV`` are not fired for the
    C-STOREs taken. None when the speed patches are off (:func:`check`) or
    the association was not made by :func:`accept`; call it before the
    association's thread starts.
    """
    from dicomnode.net.receiving import CStoreLane, LaneError

    wrapper = assoc.dul.socket
    if not fast() or not isinstance(wrapper, GuardedSocket):
        return None
    dul = assoc.dul
    machine = dul.state_machine
    reader = wrapper.reader
    read_as_pynetdicom = dul._is_transport_event

    def write(data: bytes) -> None:
        sock = wrapper.socket
        if sock is None:
            raise OSError("the connection is closed")
        sock.sendall(data)

    lane = CStoreLane({}, deliver, write, limit=limit, peer_maximum_pdu=0)
    ready = [False]

    def is_transport_event() -> bool:
        if machine.current_state != "Sta6" or reader.buffered:
            return bool(read_as_pynetdicom())
        if not wrapper.ready:
            # nothing to read: pynetdicom's own reader would look again, and read a PDU that arrived
            # in between itself, a dataset fragment the lane would then miss
            return False
        if not ready[0]:  # established: the accepted contexts and the peer's maximum PDU are known now
            lane.contexts = {int(context.context_id or 0): (str(context.abstract_syntax),
                                                            str(context.transfer_syntax[0]))
                             for context in assoc.accepted_contexts}
            lane.peer_maximum_pdu = int(assoc.requestor.maximum_length or 0)
            ready[0] = True
        header: bytes | bytearray = wrapper.recv(6)
        if len(header) == 6:
            pdu_type, _, length = HEADER.unpack(header)
            body = wrapper.recv(length)
            if pdu_type == 0x04 and len(body) == length:
                try:
                    handed = lane.feed(body)
                except LaneError as error:
                    requestor = assoc.requestor
                    logger.warning("aborting the association from %s@%s:%s: %s", requestor.ae_title,
                                   requestor.address, requestor.port, error)
                    _refuse(wrapper.socket, PduRefused(str(error), ABORT_INVALID_PARAMETER))
                    return bool(read_as_pynetdicom())  # reads the closed connection
                except OSError as error:  # writing the response failed: the connection is gone
                    logger.debug("writing a C-STORE response failed: %s", error)
                    transport_lost(assoc)
                    return True
                if handed is None:
                    return True
                reader.unread(handed)
                return bool(read_as_pynetdicom())
            header = bytes(header) + bytes(body)
        # not a P-DATA-TF, or cut short by a closed connection: pynetdicom reads it as it came
        reader.unread(bytes(header))
        return bool(read_as_pynetdicom())

    dul._is_transport_event = is_transport_event  # type: ignore[method-assign]
    wrapper.lane = lane
    return lane


def reader_of(assoc: Association) -> PduReader | None:
    """The bounded reader of an association :func:`accept` made, else None."""
    wrapper = assoc.dul.socket
    return wrapper.reader if isinstance(wrapper, GuardedSocket) else None


def message_in_progress(assoc: Association) -> bool:
    """True while part of a DIMSE message has arrived and the rest has not."""
    wrapper = assoc.dul.socket
    lane = wrapper.lane if isinstance(wrapper, GuardedSocket) else None
    return getattr(assoc.dimse, "message", None) is not None or (lane is not None and lane.busy)


def stop_network_thread(assoc: Association) -> None:
    """Tell the association's DUL thread to stop (it may outlive an association thread that failed)."""
    assoc.dul.kill_dul()


# --- what the senders need ----------------------------------------------------------------------


def socket_of(assoc: Association) -> socket.socket | None:
    """The association's connected socket, or None."""
    wrapper = assoc.dul.socket
    return wrapper.socket if wrapper is not None else None


def transport_lost(assoc: Association) -> None:
    """Tell the association its connection failed (Evt17), as pynetdicom does when its own send fails."""
    assoc.dul.event_queue.put("Evt17")


def next_message(assoc: Association) -> Any:
    """The next DIMSE message received on the association (waiting up to its DIMSE timeout), or None."""
    _, message = assoc.dimse.get_msg(block=True)
    return message


def intercept_messages(assoc: Association, write: Callable[[Any, int], bool]) -> bool:
    """Give ``write(primitive, context_id)`` the first go at every DIMSE message the association sends.

    ``write`` returns True when it wrote the message itself, False to leave
    it to pynetdicom. Returns whether the interception is in place (the
    speed patches apply). Call it before the association's thread starts.
    """
    if not fast():
        return False
    dimse = assoc.dimse
    queue_message = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        if not write(primitive, context_id):
            queue_message(primitive, context_id)

    dimse.send_msg = send_msg  # type: ignore[method-assign]
    return True


class _ParkedCheckpoint(threading.Event):
    """Stands in for an association's reactor checkpoint while we hold the reactor parked.

    pynetdicom's ``send_*`` methods ``set()`` the checkpoint after each
    response, which would wake the reactor between two requests: that call
    is ignored here. :meth:`unpark` really sets it.
    """

    def set(self) -> None:
        return

    def unpark(self) -> None:
        super().set()


def _wait_until_parked(assoc: Association, limit: float = 5.0) -> None:
    # The reactor flags itself paused just before it blocks; two sightings a
    # few milliseconds apart mean it did not slip through a wait() that
    # started before the checkpoint was swapped.
    deadline = time.monotonic() + limit
    sightings = 0
    while sightings < 2 and time.monotonic() < deadline:
        sightings = sightings + 1 if assoc._is_paused else 0
        time.sleep(0.002)


@contextmanager
def parked_reactor(assoc: Association) -> Iterator[Association]:
    """Keep pynetdicom's association reactor parked while we exchange requests and responses.

    Each pynetdicom ``send_*`` call pauses the reactor thread with a
    handshake that can lose a race: the reactor then takes the peer's
    response off the queue itself, logs "Received unexpected C-STORE service
    message", and the request waits for its timeout (pynetdicom issues #435
    and #875). Parking the reactor once, for the whole exchange, removes
    that window; aborts still end a waiting request at once because the
    state machine queues an empty message for them. Without the speed
    patches the exchange runs as pynetdicom runs it.
    """
    if not fast():
        yield assoc
        return
    original = assoc._reactor_checkpoint
    parked = _ParkedCheckpoint()
    assoc._reactor_checkpoint = parked
    original.clear()
    _wait_until_parked(assoc)
    try:
        yield assoc
    finally:
        assoc._reactor_checkpoint = original
        original.set()
        parked.unpark()
