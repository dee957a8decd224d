"""Helpers of the hostile-input suite: a node in a subprocess, raw peers, its memory, legitimate senders.

The node runs with ``dicomnode run`` on a pipeline file written next to the
test (a :class:`node.RecordingNode` with the settings under test), so its
memory is its own process's and SIGTERM reaches it as it would in service.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from conftest import free_port
from dcmtk import DCMTK, dcmtk_env, stop_process, wait_for_port
from node import RECORD, write_patient

SUPPORT = Path(__file__).parent

#: an A-ASSOCIATE-RQ header announcing 1 GiB, and a P-DATA-TF header announcing almost 4 GiB
ASSOCIATE_RQ_1GIB = bytes.fromhex("010040000000")
P_DATA_4GIB = bytes.fromhex("0400FFFFFFF0")


class NodeProcess:
    """A RecordingNode served by ``dicomnode run`` in its own process."""

    def __init__(self, folder: Path, settings: dict[str, object], expected: int = 20) -> None:
        self.port = free_port()
        self.folder = folder
        lines = [
            "import sys",
            f"sys.path.insert(0, {str(SUPPORT)!r})",
            "import node",
            f"node.CT.expected = {expected}",
            "class EdgeNode(node.RecordingNode):",
            "    log_level = 'INFO'",
            *(f"    {name} = {value!r}" for name, value in settings.items()),
        ]
        pipeline = folder / "edge_node.py"
        pipeline.write_text("\n".join(lines) + "\n")
        self.log = folder / "node.log"
        self.record = folder / "jobs.jsonl"
        command = [str(Path(sys.executable).parent / "dicomnode"), "run", f"{pipeline}:EdgeNode",
                   "--port", str(self.port)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, env={**os.environ, RECORD: str(self.record)},
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)
        self.psutil = psutil.Process(self.process.pid)

    def rss(self) -> int:
        return int(self.psutil.memory_info().rss)

    def terminate(self, timeout: float = 30.0) -> float:
        """SIGTERM; the seconds until the process exited."""
        started = time.monotonic()
        os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        stop_process(self.process)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def node_process(folder: Path, **settings: object) -> Iterator[NodeProcess]:
    """Start a node process; stop it (by PID) however the test ends."""
    node = NodeProcess(folder, settings)
    try:
        yield node
    finally:
        node.stop()


class PeakRss:
    """Samples a process's RSS every 10 ms on a thread; :attr:`peak` is the highest seen."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.peak = node.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, self.node.rss())
            except psutil.Error:
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def connect(port: int, data: bytes = b"") -> socket.socket:
    """A raw TCP connection to the node that sends ``data`` and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        sock.sendall(data)
    return sock


def association_request(called: str, calling: str) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification in implicit VR little endian."""

    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(body)) + body

    context = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1") + item(0x40, b"1.2.840.10008.1.2"))
    user = item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"2.25.1"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
            + item(0x10, b"1.2.840.10008.3.1.1.1") + context + user)
    return struct.pack(">BBI", 1, 0, len(body)) + body


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """The next whole PDU the node sends: its type and its body."""

    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            piece = sock.recv(count - len(data))
            if not piece:
                raise ConnectionError("the node closed the connection")
            data += piece
        return data

    kind, _, length = struct.unpack(">BBI", exactly(6))
    return kind, exactly(length)


def read_reply(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the node sent before closing (or within ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            piece = sock.recv(4096)
            if not piece:
                return data
            data += piece
    except (TimeoutError, ConnectionResetError):
        return data


def echoscu(port: int, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """DCMTK echoscu against the node (TCP_NODELAY=1)."""
    return subprocess.run([str(DCMTK / "echoscu"), "-aet", "SCANNER", "-aec", "TESTNODE", "-to", "5",
                           "127.0.0.1", str(port)], env=dcmtk_env(), capture_output=True, text=True,
                          timeout=timeout)


def storescu_files(port: int, files: list[Path], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """DCMTK storescu of ``files`` to the node (TCP_NODELAY=1)."""
    return subprocess.run([str(DCMTK / "storescu"), "-aet", "SCANNER", "-aec", "TESTNODE", "-to", "5",
                           "127.0.0.1", str(port), *map(str, files)], env=dcmtk_env(), capture_output=True,
                          text=True, timeout=timeout)


def twenty_slices(folder: Path, patient: str = "LEGIT") -> list[Path]:
    """A 20-slice CT of one patient, 16x16 pixels: what the node's test pipeline completes a job with."""
    return write_patient(folder, patient, slices=20)
