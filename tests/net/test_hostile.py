"""The hostile-input suite: peers that try to exhaust, block or stall a node run with ``dicomnode run``.

Each test attacks a node in its own process, then checks the three things
that matter in service: the node's memory grew by less than 50 MB (psutil,
sampled every 10 ms), a legitimate sender (DCMTK ``echoscu``/``storescu``
with ``TCP_NODELAY=1``) is served, and SIGTERM ends the process quickly.
Only loopback addresses; every process and socket is closed by the test.
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

import pytest
from conftest import require_peer
from hostile import (
    ASSOCIATE_RQ_1GIB,
    P_DATA_4GIB,
    NodeProcess,
    PeakRss,
    connect,
    echoscu,
    node_process,
    read_reply,
    storescu_files,
    twenty_slices,
)
from node import read_jobs, wait_until
from pynetdicom import AE

pytestmark = pytest.mark.timeout(60)

MB = 1_000_000
#: the growth of the node's RSS an attack may cause at most
MEMORY_BUDGET = 50 * MB
#: how long SIGTERM may take to end the node
EXIT_BUDGET = 5.0
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _served(node: NodeProcess, folder: Path, patient: str = "LEGIT", within: float = 2.0) -> None:
    """A legitimate C-ECHO and a 20-slice C-STORE are answered, each within ``within`` seconds."""
    started = time.monotonic()
    echo = echoscu(node.port)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    assert time.monotonic() - started < within
    files = twenty_slices(folder / patient, patient)
    started = time.monotonic()
    store = storescu_files(node.port, files)
    assert store.returncode == 0 and "E:" not in store.stderr, store.stdout + store.stderr
    assert time.monotonic() - started < within
    assert wait_until(lambda: patient in [job["patient"] for job in read_jobs(node.record)], timeout=10)


def _warm(node: NodeProcess, folder: Path) -> int:
    """Serve one legitimate sender first (imports, caches, arenas), then return the node's RSS."""
    _served(node, folder, "WARMUP", within=10.0)
    time.sleep(0.2)
    return node.rss()


def _associate(port: int) -> tuple[object, socket.socket]:
    """An established association (pynetdicom) and its raw socket, for writing bytes of our own."""
    ae = AE(ae_title="ATTACKER")
    ae.add_requested_context(CT_IMAGE_STORAGE)
    assoc = ae.associate("127.0.0.1", port, ae_title="TESTNODE")
    assert assoc.is_established
    sock = assoc.dul.socket.socket
    assert sock is not None
    return assoc, sock


def test_announced_lengths_allocate_nothing(tmp_path: Path) -> None:
    # 18 bytes: two association request headers announcing 1 GiB, one P-DATA header announcing 4 GiB
    require_peer("dcmtk")
    with node_process(tmp_path) as node:
        before = _warm(node, tmp_path)
        with PeakRss(node) as memory:
            first, second = connect(node.port, ASSOCIATE_RQ_1GIB), connect(node.port, ASSOCIATE_RQ_1GIB)
            assoc, raw = _associate(node.port)
            raw.sendall(P_DATA_4GIB)
            replies = [read_reply(sock) for sock in (first, second)]
            time.sleep(0.3)
        for sock in (first, second):
            sock.close()
        assoc.kill()  # type: ignore[attr-defined]
        assert memory.peak - before < MEMORY_BUDGET, f"RSS grew by {(memory.peak - before) / MB:.0f} MB"
        assert all(reply.startswith(b"\x07\x00\x00\x00\x00\x04") for reply in replies), replies  # A-ABORT
        assert not assoc.is_established  # type: ignore[attr-defined]
        _served(node, tmp_path)
        assert node.terminate() < EXIT_BUDGET
    assert "more than the" in node.output()


def test_random_bytes_cost_no_memory_and_no_service(tmp_path: Path) -> None:
    require_peer("dcmtk")
    noise = random.Random(20261126)
    with node_process(tmp_path) as node:
        before = _warm(node, tmp_path)
        with PeakRss(node) as memory:
            peers = []
            for _ in range(8):  # 4 KiB in all: 8 connections of 512 random bytes
                sock = connect(node.port)
                try:
                    sock.sendall(noise.randbytes(512))
                except OSError:  # the node may abort before all of it went
                    pass
                peers.append(sock)
            for sock in peers:
                read_reply(sock, timeout=2)
                sock.close()
        assert memory.peak - before < MEMORY_BUDGET, f"RSS grew by {(memory.peak - before) / MB:.0f} MB"
        _served(node, tmp_path)
        assert node.terminate() < EXIT_BUDGET


def test_64_stalled_connections_do_not_lock_a_scanner_out(tmp_path: Path) -> None:
    require_peer("dcmtk")
    with node_process(tmp_path) as node:
        before = _warm(node, tmp_path)
        with PeakRss(node) as memory:
            # each sends the header of an association request and then nothing; half send nothing at all
            stalled = [connect(node.port, bytes.fromhex("010000000100") if n % 2 else b"") for n in range(64)]
            time.sleep(0.3)
            _served(node, tmp_path)
        try:
            assert memory.peak - before < MEMORY_BUDGET
            assert node.terminate() < EXIT_BUDGET
        finally:
            for sock in stalled:
                sock.close()


def test_a_connection_that_never_finishes_its_request_is_closed(tmp_path: Path) -> None:
    require_peer("dcmtk")
    with node_process(tmp_path, connection_timeout=1.0) as node:
        before = _warm(node, tmp_path)
        with PeakRss(node) as memory:
            sock = connect(node.port, bytes.fromhex("0100000001000001"))
            started = time.monotonic()
            assert read_reply(sock, timeout=5) == b""  # closed, without a word
            assert 0.8 < time.monotonic() - started < 3.0
            sock.close()
        assert memory.peak - before < MEMORY_BUDGET
        _served(node, tmp_path)
        assert node.terminate() < EXIT_BUDGET


def test_a_c_store_cut_in_the_middle_of_a_pdu_is_aborted_after_pdu_timeout(tmp_path: Path) -> None:
    require_peer("dcmtk")
    with node_process(tmp_path, pdu_timeout=1.5) as node:
        before = _warm(node, tmp_path)
        with PeakRss(node) as memory:
            assoc, raw = _associate(node.port)
            raw.sendall(bytes.fromhex("0400000010000000") + b"\x00" * 100)  # 4096 bytes announced, ~100 sent
            started = time.monotonic()
            # the client's own pynetdicom thread reads the node's A-ABORT: the association is aborted
            assert wait_until(lambda: assoc.is_aborted, timeout=6, interval=0.02)  # type: ignore[attr-defined]
            assert 1.2 < time.monotonic() - started < 4.0
            assoc.kill()  # type: ignore[attr-defined]
        assert memory.peak - before < MEMORY_BUDGET
        _served(node, tmp_path)
        assert node.terminate() < EXIT_BUDGET
    assert "did not arrive within pdu_timeout" in node.output()


def test_silent_associations_are_aborted_after_idle_timeout(tmp_path: Path) -> None:
    require_peer("dcmtk")
    with node_process(tmp_path, maximum_associations=4, idle_timeout=2.0) as node:
        before = _warm(node, tmp_path)
        with PeakRss(node) as memory:
            silent = [_associate(node.port)[0] for _ in range(4)]
            refused = echoscu(node.port)
            assert refused.returncode != 0  # all slots taken: A-ASSOCIATE-RJ, local limit exceeded
            assert wait_until(lambda: not any(a.is_established for a in silent), timeout=6)  # type: ignore[attr-defined]
            # the node frees a slot once its abort is through (pynetdicom waits 0.1 s after sending it)
            assert wait_until(lambda: echoscu(node.port).returncode == 0, timeout=2, interval=0.1)
        assert memory.peak - before < MEMORY_BUDGET
        _served(node, tmp_path)
        assert node.terminate() < EXIT_BUDGET
    assert "maximum_associations (4) are open" in node.output()


def test_sigterm_ends_a_node_with_8_stalled_peers_and_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    require_peer("dcmtk")
    data = tmp_path / "data"
    with node_process(tmp_path, data_directory=str(data)) as node:
        files = twenty_slices(tmp_path / "KEPT", "KEPT")[:12]  # 12 of the 20 the job needs
        store = storescu_files(node.port, files)
        assert store.returncode == 0, store.stdout + store.stderr
        before = node.rss()
        with PeakRss(node) as memory:
            peers: list[object] = []
            raw_peers = [connect(node.port, bytes.fromhex("010000000100")) for _ in range(4)]  # stalled requests
            for _ in range(4):  # stalled in the middle of a C-STORE's PDU
                assoc, raw = _associate(node.port)
                raw.sendall(bytes.fromhex("0400000010000000") + b"\x00" * 64)
                peers.append(assoc)
            time.sleep(0.3)
            elapsed = node.terminate()
        for sock in raw_peers:
            sock.close()
        for assoc in peers:
            assoc.kill()  # type: ignore[attr-defined]
    assert elapsed < EXIT_BUDGET, f"SIGTERM took {elapsed:.1f} s"
    assert memory.peak - before < MEMORY_BUDGET
    assert node.process.returncode == 0, node.output()
    assert len(list((data / "incoming").glob("*/*.dcm"))) == 12
    # served before the attack, and the acknowledged instances are there for the next start


def _deflate_bomb(inflated: int) -> tuple[bytes, str]:
    """A CT slice whose Pixel Data is ``inflated`` zero bytes, encoded and deflated; and its SOPInstanceUID.

    Compressed piece by piece: the test process never holds the inflated bytes either.
    """
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from dicomnode.dicom.synthetic import synthetic_series

    header = synthetic_series(patient_id="BOMB", slices=1, rows=16, columns=16)[0]
    del header.PixelData
    stream = DicomBytesIO()
    stream.is_implicit_VR, stream.is_little_endian = False, True
    write_dataset(stream, header)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    pieces = [packer.compress(stream.getvalue()),
              packer.compress(bytes.fromhex("E07F1000") + b"OB\x00\x00" + inflated.to_bytes(4, "little"))]
    zeros = bytes(1024 * 1024)
    for _ in range(inflated // len(zeros)):
        pieces.append(packer.compress(zeros))
    pieces.append(packer.flush())
    return b"".join(pieces), str(header.SOPInstanceUID)


def test_a_deflate_bomb_is_refused_without_inflating_it(tmp_path: Path) -> None:
    # 256 MiB of zeros deflated to a few hundred KB, sent on a Deflated Explicit VR Little Endian context
    from dicomnode.net.adapter import parked_reactor
    from dicomnode.net.pdata import direct_socket, send_c_store

    bomb, uid = _deflate_bomb(256 * 1024 * 1024)
    with node_process(tmp_path) as node:  # maximum_inflated_size as it comes: 32 MiB
        before = _warm(node, tmp_path)
        ae = AE(ae_title="ATTACKER")
        ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1.99")
        assoc = ae.associate("127.0.0.1", node.port, ae_title="TESTNODE")
        assert assoc.is_established
        try:
            with PeakRss(node) as memory, parked_reactor(assoc):
                context = assoc.accepted_contexts[0]
                response = send_c_store(assoc, direct_socket(assoc), context.context_id, CT_IMAGE_STORAGE, uid,
                                        bomb, 1)
                time.sleep(0.3)
        finally:
            assoc.release()
        assert response is not None and 0xA700 <= response.Status <= 0xA7FF, response  # refused: out of resources
        assert memory.peak - before < 64 * 1024 * 1024, f"RSS grew by {(memory.peak - before) / MB:.0f} MB"
        _served(node, tmp_path)
