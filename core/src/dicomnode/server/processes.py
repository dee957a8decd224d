"""Receiving processes: associations served on more cores, into one data directory and one patient tree.

With ``receiving_processes = N`` (N > 0) the node starts N receiving
processes beside its own. The edge in the node's process still accepts every
connection, reads its association request and applies every limit
(:class:`~dicomnode.net.server.DicomServer`). The node serves one
association itself, as without processes (a single sender gets its answers
without a round trip between processes); while it does, each admitted
connection is handed, as a file descriptor over a private socket pair, to
the receiving process with the fewest associations. That process runs the
association as the node would (pynetdicom, the C-STORE lane, the same
limits) and, for each C-STORE, does the part that costs: it takes the PDUs
apart, checks the dataset is whole
(:func:`~dicomnode.server.ingest.examine`), parses its header and writes
the received bytes to a temporary file of the data directory
(:meth:`~dicomnode.server.storage.InstanceStore.write_aside`). Then it
sends the node's process one small message: the header's elements, the
patient key, the file's paths. The node's process makes every decision
there, under the patient's lock, as for its own associations
(:meth:`~dicomnode.server.ingest.Ingest.adopt`: filter, routing, late
images, rejection policy; a kept instance's file is moved into place, any
other removed), and its answer is the C-STORE status the receiving process
sends back. So success
still means the instance is whole and in the data directory, and the
patients, jobs, records, metrics and history live in one process.

What stays in the node's process: TLS connections (the session lives
where it was negotiated), and every connection while no receiving process is
ready (at start, or after one died). A receiving process that dies ends its
associations (their peers see the connection drop, nothing they were not
answered success for is kept); the node logs it and hands new associations
to the others.

Each process is a Python interpreter running :func:`main`, with two
inherited socket pairs (no listening socket, no file in the file system): a
control pair (connections in, "stop") and a channel (readiness and log
records out; its log records are written by the node's own logging,
prefixed with the process's number). Each handed association comes with a
socket pair of its own, on which the process asks about each of its
instances and the node's process answers, on a thread of the node's per
association as when it receives itself: the association's thread waits on
its own socket for its answer, and one association's decision never waits
behind another's.

Why not :mod:`multiprocessing`'s pools: a spawned child re-imports the
user's main module (a node script without a ``__main__`` guard would start
a second node), and a forked child inherits the node's threads' locks.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.dataelem import RawDataElement

from dicomnode.dicom.encoded import tag_of
from dicomnode.errors import StorageError
from dicomnode.extension.handles import IngestResult, Source
from dicomnode.net.sink import Peer, ReceivedInstance
from dicomnode.server.ingest import STATUS_OUT_OF_RESOURCES, examine
from dicomnode.server.storage import InstanceStore

if TYPE_CHECKING:
    from dicomnode.net.server import DicomServer
    from dicomnode.server.config import PipelineConfig
    from dicomnode.server.receive import Receiver

__all__ = ["ReceivingProcesses", "pack_header", "unpack_header"]

logger = logging.getLogger("dicomnode.receive")

#: what a C-STORE is answered when the node's process cannot answer (it is gone or closing)
_CLOSING = (STATUS_OUT_OF_RESOURCES, "the node is closing")
#: seconds a receiving process gets to exit after its associations were closed
_EXIT_GRACE = 3.0
#: a receiving process's program: signals ignored before anything is imported
_ENTRY = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
          "from dicomnode.server.processes import main; main()")


# --- the header's elements, as plain values ---------------------------------------------------------


def pack_header(dataset: Dataset) -> tuple[Any, ...]:
    """A parsed header as plain tuples that pickle fast: (implicit, little, encoding, elements).

    Raw elements travel as their fields with the tag as a plain int (a
    pydicom tag or named tuple pickles by reference to its class, slowly);
    an element pydicom already converted travels as it is.
    """
    implicit, little = dataset.original_encoding
    elements = [(int(tag), tuple(element)[1:] if type(element) is RawDataElement else element)
                for tag, element in dataset._dict.items()]
    return implicit, little, dataset.original_character_set, elements


def unpack_header(packed: tuple[Any, ...]) -> Dataset:
    """The dataset :func:`pack_header` packed, its values still unconverted."""
    implicit, little, encoding, elements = packed
    values = {}
    make = tuple.__new__  # the named tuple's own __new__ is a Python function: one call per element saved
    for number, fields in elements:
        tag = tag_of(number)
        values[tag] = make(RawDataElement, (tag, *fields)) if type(fields) is tuple else fields
    dataset = Dataset(values)
    dataset.set_original_encoding(implicit, little, encoding)
    return dataset


# --- the node's side ---------------------------------------------------------------------------------


class _Process:
    """One receiving process as the node's process sees it."""

    def __init__(self, number: int, process: subprocess.Popen[bytes], control: Connection,
                 channel: Connection) -> None:
        self.number = number
        self.process = process
        self.control = control
        self.channel = channel
        self.ready = False
        self.alive = True
        #: the associations it serves, by peer ID
        self.open: dict[int, Peer] = {}
        self.lock = threading.Lock()
        self.reader: threading.Thread | None = None


def settings_of(config: PipelineConfig) -> dict[str, Any]:
    """What a receiving process needs of the node's settings (plain values: they are pickled)."""
    assert config.data_directory is not None
    return {
        "ae_title": config.ae_title, "sop_classes": tuple(config.supported_contexts),
        "require_called_aet": config.require_called_aet, "require_calling_aet": tuple(config.require_calling_aet),
        "limits": config.limits(), "data_directory": str(config.data_directory), "fsync": config.fsync,
        "maximum_inflated_size": config.maximum_inflated_size,
        "patient_identifier_tag": int(config.patient_identifier_tag), "log_level": config.log_level,
        "pseudonyms": config.log_patient_keys == "pseudonym",
    }


class ReceivingProcesses:
    """The node's receiving processes: the :class:`~dicomnode.net.sink.Handoff` of its DICOM server.

    ``count`` processes run with ``settings`` (:func:`settings_of`); the
    instances they examined go to ``receiver`` (the node's
    :class:`~dicomnode.server.receive.Receiver`).
    """

    def __init__(self, count: int, settings: dict[str, Any], receiver: Receiver) -> None:
        self.count = count
        self.settings = settings
        self.receiver = receiver
        self.server: DicomServer | None = None
        self._processes: list[_Process] = []
        self._closing = False
        self._ready = threading.Condition()
        #: the node's thread of each handed association (close waits for them)
        self._threads: set[threading.Thread] = set()

    # --- life cycle ---

    def start(self, server: DicomServer) -> None:
        """Start the processes; they take connections once each says it is ready (:meth:`wait_ready`)."""
        self.server = server
        for number in range(1, self.count + 1):
            self._processes.append(self._spawn(number))

    def _spawn(self, number: int) -> _Process:
        control_here, control_there = socket.socketpair()
        channel_here, channel_there = socket.socketpair()
        # the child imports dicomnode from where this process did (a test's or a checkout's sources too)
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
        try:
            # a session of its own: a terminal's Ctrl-C to the node's process group does not reach it, and
            # the first thing it does is ignore SIGINT and SIGTERM (a service manager may signal every
            # process): the node's process decides when it ends, after its associations were closed
            process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(control_there.fileno()), str(channel_there.fileno())],
                pass_fds=(control_there.fileno(), channel_there.fileno()), stdin=subprocess.DEVNULL,
                env=environment, start_new_session=True)
        finally:
            control_there.close()
            channel_there.close()
        entry = _Process(number, process, Connection(control_here.detach()), Connection(channel_here.detach()))
        entry.channel.send(dict(self.settings, number=number))
        entry.reader = threading.Thread(target=self._read, args=(entry,), name=f"dicomnode-receiving-{number}",
                                        daemon=True)
        entry.reader.start()
        return entry

    def wait_ready(self, timeout: float) -> int:
        """Wait until every process is ready or ``timeout`` passed; return how many are ready."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while True:
                ready = sum(1 for entry in self._processes if entry.ready)
                left = deadline - time.monotonic()
                if ready == len(self._processes) or left <= 0 or not any(e.alive for e in self._processes):
                    return ready
                self._ready.wait(left)

    @property
    def ready(self) -> int:
        """Processes taking connections now."""
        return sum(1 for entry in self._processes if entry.ready and entry.alive)

    def take(self, sock: socket.socket, address: tuple[str, int], prefix: bytes, peer: Peer) -> bool:
        """Hand a connection to the ready process with the fewest associations; False when none is ready."""
        if self._closing:
            return False
        ready = [entry for entry in self._processes if entry.ready and entry.alive]
        if not ready:
            return False
        entry = min(ready, key=lambda candidate: len(candidate.open))
        here, there = socket.socketpair()
        with entry.lock:
            entry.open[peer.id] = peer
            try:
                entry.control.send(("association", peer, prefix))
                with socket.socket(fileno=os.dup(entry.control.fileno())) as control:
                    socket.send_fds(control, [b"A"], [sock.fileno(), there.fileno()])
            except OSError as error:
                entry.open.pop(peer.id, None)
                here.close()
                logger.warning("receiving process %d cannot take a connection: %s", entry.number, error)
                return False
            finally:
                there.close()
        thread = threading.Thread(target=self._association, args=(entry, peer, Connection(here.detach())),
                                  name=f"dicomnode-receiving-{entry.number}-{peer.id}", daemon=True)
        with self._ready:
            self._threads.add(thread)
        thread.start()
        return True

    def close(self, timeout: float) -> None:
        """Tell every process to close (each gives its associations ``timeout`` s), wait, then end the rest."""
        self._closing = True
        for entry in self._processes:
            with entry.lock:
                try:
                    entry.control.send(("stop",))
                except OSError:
                    pass
        # a process closes as the node's edge does: close_receive_timeout, then 2 s for its threads
        deadline = time.monotonic() + timeout + 2.0 + _EXIT_GRACE
        for entry in self._processes:
            if entry.reader is not None:
                entry.reader.join(max(0.0, deadline - time.monotonic()))
        for entry in self._processes:
            try:
                entry.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("receiving process %d (pid %d) did not exit: killing it", entry.number,
                               entry.process.pid)
                entry.process.kill()
                entry.process.wait()
            if entry.reader is not None:
                entry.reader.join(1.0)
            entry.control.close()
            entry.channel.close()
        # the processes are gone, so every association's pair is closed: their ends are being handled
        with self._ready:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(1.0, deadline - time.monotonic()))

    # --- the messages of one process ---

    def _read(self, entry: _Process) -> None:
        """What one process says of itself: ready, its log records, goodbye; its end."""
        try:
            while True:
                try:
                    message = entry.channel.recv()
                except (EOFError, OSError):
                    break
                kind = message[0]
                if kind == "log":
                    _, name, level, text = message
                    logging.getLogger(name).log(level, "[receiving process %d] %s", entry.number, text)
                elif kind == "ready":
                    with self._ready:
                        entry.ready = True
                        self._ready.notify_all()
                elif kind == "bye":
                    break
        except Exception:  # never silently
            logger.exception("the node failed reading receiving process %d", entry.number)
        finally:
            with self._ready:
                entry.alive = False
                self._ready.notify_all()
            if not self._closing:
                code = entry.process.poll()
                left = "the other processes" if self.ready else "the node's own process"
                logger.error("receiving process %d (pid %d) stopped%s; new associations go to %s", entry.number,
                             entry.process.pid, f" with exit code {code}" if code is not None else "", left)

    def _association(self, entry: _Process, peer: Peer, link: Connection) -> None:
        """One handed association's messages, in order: instances to decide, refusals, its end, its close."""
        receiver = self.receiver
        ended = closed = False
        try:
            while True:
                try:
                    message = link.recv()
                except (EOFError, OSError):
                    break
                kind = message[0]
                if kind == "instance":
                    _, header, patient_key, sop_uid, path, size = message
                    answer = self._decide(peer, header, patient_key, sop_uid, path, size)
                    try:
                        link.send(("status", *answer))
                    except OSError:
                        break
                elif kind == "examined":  # refused by the checks in the process: for the records
                    _, fields, size = message
                    receiver.on_examined_refusal(peer, IngestResult(*fields), size)
                elif kind == "refused":
                    _, sop_uid, size, status, comment = message
                    receiver.on_refused(peer, sop_uid, size, status, comment)
                elif kind == "end":
                    ended = True
                    receiver.on_association_end(peer)
                elif kind == "closed":
                    closed = True
                    break
        except Exception:  # never silently: the peer would wait for its answer for ever
            logger.exception("the node failed on the association from %s in receiving process %d", peer,
                             entry.number)
        finally:
            link.close()
            if not closed and not self._closing:
                logger.error("the association from %s ended with receiving process %d (pid %d)", peer, entry.number,
                             entry.process.pid)
            try:
                if not ended:  # what it stored still counts: its patients are checked, its summary logged
                    receiver.on_association_end(peer)
            finally:
                self._closed(entry, peer.id)
                with self._ready:
                    self._threads.discard(threading.current_thread())

    def _decide(self, peer: Peer, header: tuple[Any, ...], patient_key: str, sop_uid: str,
                paths: tuple[str, str] | None, size: int) -> tuple[int, str]:
        written = (Path(paths[0]), Path(paths[1])) if paths is not None else None
        try:
            return self.receiver.on_examined(peer, unpack_header(header), patient_key, sop_uid, written, size)
        except Exception as error:  # the node's bug must not leave the peer waiting
            logger.exception("the node failed on a C-STORE from %s", peer)
            if written is not None:
                written[0].unlink(missing_ok=True)
            return 0xC000, f"the node failed: {type(error).__name__}"

    def _closed(self, entry: _Process, peer_id: int) -> None:
        with entry.lock:
            entry.open.pop(peer_id, None)
        if self.server is not None:
            self.server.remote_closed(peer_id)


# --- the receiving process's side --------------------------------------------------------------------


class _Link:
    """A message pair to the node's process: sends from any thread; :meth:`ask` waits for the answer on it."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._lock = threading.Lock()
        self._broken = False

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if self._broken:
                return
            try:
                self.connection.send(message)
            except OSError:
                self._broken = True

    def ask(self, message: tuple[Any, ...]) -> tuple[int, str]:
        """Send ("instance", *message); return the node's status for it (0xA700 when the node is gone)."""
        with self._lock:
            if self._broken:
                return _CLOSING
            try:
                self.connection.send(("instance", *message))
                answer = self.connection.recv()
            except (EOFError, OSError):
                self._broken = True
                return _CLOSING
        return int(answer[1]), str(answer[2])

    def close(self) -> None:
        with self._lock:
            self._broken = True
            self.connection.close()


class _Forward(logging.Handler):
    """Log records of the receiving process, sent to the node's process to be logged there."""

    def __init__(self, link: _Link, level: int) -> None:
        super().__init__(level)
        self.link = link

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.link.send(("log", record.name, record.levelno, text))
        except Exception:  # a log line must not fail a C-STORE
            self.handleError(record)


class _ExaminingSink:
    """The receiving process's :class:`~dicomnode.net.sink.InstanceSink`: examine, write, ask the node."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.store = InstanceStore(settings["data_directory"], settings["fsync"])
        #: each association's message pair, by peer ID
        self.links: dict[int, _Link] = {}

    def on_instance(self, instance: ReceivedInstance, peer: Peer) -> int | tuple[int, str]:
        settings = self.settings
        source = Source(peer.calling_ae_title, f"{peer.address[0]}:{peer.address[1]}", "c-store", peer.id)
        with instance.encoded.getbuffer() as view:
            size = view.nbytes
        examined = examine(instance.encoded, instance.transfer_syntax, instance.file_meta, source, lazy=True,
                           maximum_inflated_size=settings["maximum_inflated_size"],
                           patient_identifier_tag=settings["patient_identifier_tag"])
        if isinstance(examined, IngestResult):
            return self._refused(peer, examined, size)
        try:
            written = None
            if examined.patient_key:  # without one the node refuses (or discards) it: nothing to write
                try:
                    # aside: the node's process moves it into place if it keeps it; a crash leaves a
                    # temporary file the next start deletes, never an instance nobody was told was stored
                    written = self.store.write_aside(examined.patient_key, examined.sop_uid, instance.file_meta,
                                                     examined.raw)
                except StorageError as error:
                    logger.error("C-STORE %s from %s: %s", examined.sop_uid, peer.calling_ae_title or "?", error)
                    return self._refused(peer, IngestResult(STATUS_OUT_OF_RESOURCES, "cannot store the instance",
                                                            examined.patient_key, examined.sop_uid), size)
            header = pack_header(examined.dataset)
        finally:
            examined.raw.release()
        return self.links[peer.id].ask((header, examined.patient_key, examined.sop_uid,
                                        None if written is None else (str(written[0]), str(written[1])), size))

    def _refused(self, peer: Peer, result: IngestResult, size: int) -> tuple[int, str]:
        self.links[peer.id].send(("examined", (result.status, result.comment, result.patient_key,
                                               result.sop_instance_uid), size))
        return result.status, result.comment

    def on_refused(self, peer: Peer, sop_instance_uid: str, size: int, status: int, comment: str) -> None:
        self.links[peer.id].send(("refused", sop_instance_uid, size, status, comment))

    def on_association_end(self, peer: Peer) -> None:
        self.links[peer.id].send(("end",))

    def closed(self, peer: Peer) -> None:
        """The association is over (the server's ``on_closed``): say so on its pair, and close it."""
        link = self.links.pop(peer.id, None)
        if link is not None:
            link.send(("closed",))
            link.close()


def _serve(control: Connection, channel: Connection) -> None:
    """A receiving process: serve the connections the node hands over until it says stop or is gone."""
    from dicomnode.net.server import DicomServer

    settings = channel.recv()
    link = _Link(channel)
    root = logging.getLogger()
    root.handlers[:] = [_Forward(link, logging.getLevelName(settings["log_level"]))]
    root.setLevel(settings["log_level"])
    if settings["pseudonyms"]:  # its log lines name patients as the node's own do
        from dicomnode.extension.labels import PatientLabels, set_patient_labels
        from dicomnode.server.logs import read_secret

        set_patient_labels(PatientLabels(read_secret(Path(settings["data_directory"]))))
    sink = _ExaminingSink(settings)
    server = DicomServer(ae_title=settings["ae_title"], sink=sink, sop_classes=settings["sop_classes"],
                         require_called_aet=settings["require_called_aet"],
                         require_calling_aet=settings["require_calling_aet"], limits=settings["limits"],
                         on_closed=sink.closed)
    server.prepare()
    link.send(("ready",))
    try:
        with socket.socket(fileno=os.dup(control.fileno())) as fds:
            while True:
                try:
                    message = control.recv()
                except (EOFError, OSError):  # the node's process is gone
                    break
                if message[0] != "association":
                    break
                _, peer, prefix = message
                _, (connection, pair), _, _ = socket.recv_fds(fds, 1, 2)
                sink.links[peer.id] = _Link(Connection(pair))
                server.serve_connection(socket.socket(fileno=connection), peer.address, prefix, peer)
    finally:
        server.close()
        sink.store.close()
        link.send(("bye",))


def main(arguments: list[str] | None = None, run: Callable[[Connection, Connection], None] = _serve) -> None:
    """A receiving process, on the two descriptors the node passed (``CONTROL_FD CHANNEL_FD``; not for people)."""
    control_fd, channel_fd = (int(value) for value in (arguments or sys.argv[1:3]))
    run(Connection(control_fd), Connection(channel_fd))


if __name__ == "__main__":
    main()
