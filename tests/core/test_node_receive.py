"""The node's receive path: how accepted associations poll, and how received instances are held."""

from __future__ import annotations

import socket
import threading
import time
from io import BytesIO
from types import SimpleNamespace
from typing import Any

import pytest
from node import RecordingNode
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.net.transport import read_in_large_pieces
from dicomnode.net.waking import LONGEST_WAIT, _clock, wake_on_data
from dicomnode.server.ingest import decode_received

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _encoded(implicit: bool) -> tuple[BytesIO, bytes]:
    """One 256x256 16-bit slice (128 KiB of pixels, above the deferral size), encoded as received."""
    dataset = synthetic_series(patient_id="P1", slices=1, rows=256, columns=256)[0]
    stream = DicomBytesIO()
    stream.is_implicit_VR = implicit
    stream.is_little_endian = True
    write_dataset(stream, dataset)
    return BytesIO(stream.getvalue()), bytes(dataset.PixelData)


def test_an_accepted_association_waits_for_data_and_messages_instead_of_polling() -> None:
    import pynetdicom.association
    import pynetdicom.dul

    with RecordingNode() as node:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(CT_IMAGE_STORAGE)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="TESTNODE")
        try:
            assert assoc.is_established
            server = node._server
            assert server is not None
            accepted = server.active_associations[0]
            assert accepted in _clock.reactors
            assert accepted.dul in _clock.duls
            assert accepted.dul._run_loop_delay == LONGEST_WAIT
            assert pynetdicom.association.time is _clock  # type: ignore[attr-defined]
            assert pynetdicom.dul.time is _clock  # type: ignore[attr-defined]
            statuses = [assoc.send_c_store(dataset) for dataset in synthetic_series(slices=3, rows=16, columns=16)]
            assert [int(status.Status) for status in statuses] == [0, 0, 0]
        finally:
            assoc.release()
        assert assoc not in _clock.reactors and assoc.dul not in _clock.duls  # a plain pynetdicom requestor
        assert assoc.is_released


def test_a_woken_dul_thread_is_woken_by_what_it_is_given_to_send() -> None:
    # an idle DUL waits up to LONGEST_WAIT; a queued primitive (here, a
    # C-ECHO request) must end that wait, or each response would take that long
    with RecordingNode() as node:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", node.port, ae_title="TESTNODE")
        try:
            wake_on_data(assoc)
            waker = _clock.duls[assoc.dul]
            woken = []
            real_wake = waker.wake
            waker.wake = lambda: (woken.append(True), real_wake())[1]  # type: ignore[method-assign]
            assert int(assoc.send_c_echo().Status) == 0
            assert woken
        finally:
            assoc.release()


def test_other_threads_sleep_as_they_asked_through_the_stand_in_clock() -> None:
    started = time.monotonic()
    _clock.sleep(0.001)
    _clock.sleep(0.02)
    assert time.monotonic() - started >= 0.021
    assert _clock.monotonic() >= started  # everything else is the time module's


def test_a_received_instance_keeps_its_buffer_until_the_pixel_data_is_read() -> None:
    encoded, _ = _encoded(implicit=False)
    dataset = decode_received(encoded, ExplicitVRLittleEndian, header_only=False)
    assert dataset.PatientID == "P1"
    assert dataset.buffer is encoded


def test_reading_the_pixel_data_releases_the_received_buffer() -> None:
    encoded, pixels = _encoded(implicit=True)
    dataset = decode_received(encoded, ImplicitVRLittleEndian, header_only=False)
    assert dataset.PixelData == pixels
    assert dataset.buffer is None
    assert dataset.PixelData == pixels
    assert dataset.PatientID == "P1"


def _reader(sock: socket.socket) -> Any:
    """What read_in_large_pieces needs of an association: ``assoc.dul.socket.socket``."""
    wrapper = SimpleNamespace(socket=sock)
    read_in_large_pieces(SimpleNamespace(dul=SimpleNamespace(socket=wrapper)))  # type: ignore[arg-type]
    return wrapper


def test_a_pdu_arriving_in_pieces_is_read_whole() -> None:
    ours, theirs = socket.socketpair()
    payload = bytes(range(256)) * 1000

    def trickle() -> None:
        for start in range(0, len(payload), 70_000):
            theirs.sendall(payload[start:start + 70_000])
            time.sleep(0.01)

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        assert bytes(_reader(ours).recv(len(payload))) == payload
    finally:
        sender.join()
        ours.close()
        theirs.close()


def test_a_connection_closed_mid_pdu_gives_what_arrived() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(b"x" * 5000)
    theirs.close()
    assert bytes(_reader(ours).recv(10_000)) == b"x" * 5000
    ours.close()


def test_a_peer_that_stops_sending_raises_the_sockets_timeout() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(0.2)
    theirs.sendall(b"y" * 10)
    with pytest.raises(TimeoutError):
        _reader(ours).recv(100)
    ours.close()
    theirs.close()
