"""C-STORE requests written straight to the socket: the same bytes pynetdicom writes, all of them delivered."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from io import BytesIO
from typing import Any

import pytest
from conftest import free_port
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.net import Address, send_datasets
from dicomnode.net.adapter import parked_reactor
from dicomnode.net.pdata import (
    UNLIMITED_FRAGMENT,
    _plain_response,
    c_store_command,
    c_store_response_command,
    direct_socket,
    pdu_buffers,
    send_c_store,
    write_buffers,
)
from dicomnode.net.transport import application_entity, associate, end


def _message(payload: bytes) -> C_STORE_RQ:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = generate_uid()
    primitive.Priority = 2
    primitive.DataSet = BytesIO(payload)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return message


def _pynetdicom_bytes(message: C_STORE_RQ, context_id: int, max_pdu: int) -> bytes:
    out = bytearray()
    for primitive in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out += pdu.encode()
    return bytes(out)


def _our_bytes(message: C_STORE_RQ, context_id: int, max_pdu: int) -> bytes:
    command = encode(message.command_set, True, True)
    assert command is not None
    assert message.data_set is not None
    buffers = [*pdu_buffers(command, context_id, max_pdu, command=True),
               *pdu_buffers(message.data_set.getvalue(), context_id, max_pdu, command=False)]
    return b"".join(bytes(buffer) for buffer in buffers)


@pytest.mark.parametrize(("max_pdu", "size"), [
    (16384, 1), (16384, 16378), (16384, 16379), (16384, 100_000),  # one fragment exactly, one byte more
    (4096, 4090), (4096, 100_000), (7, 1), (7, 300), (0, 1), (0, 100_000),
])
def test_the_pdus_written_are_byte_for_byte_the_ones_pynetdicom_writes(max_pdu: int, size: int) -> None:
    message = _message(bytes(range(256)) * (size // 256) + b"\x01" * (size % 256))
    assert _our_bytes(message, 3, max_pdu) == _pynetdicom_bytes(message, 3, max_pdu)


def test_without_a_peer_maximum_the_dataset_is_cut_into_large_fragments() -> None:
    payload = b"\x05" * (UNLIMITED_FRAGMENT * 2 + 10)
    pieces = [buffer for buffer in pdu_buffers(payload, 1, 0, command=False) if len(buffer) != 12]
    assert [len(piece) for piece in pieces] == [UNLIMITED_FRAGMENT, UNLIMITED_FRAGMENT, 10]
    headers = [bytes(buffer) for buffer in pdu_buffers(payload, 1, 0, command=False) if len(buffer) == 12]
    assert [header[-1] for header in headers] == [0x00, 0x00, 0x02]  # more, more, last


def test_a_maximum_pdu_too_small_for_any_data_is_refused() -> None:
    with pytest.raises(ValueError, match="maximum PDU length of 6 bytes"):
        list(pdu_buffers(b"abc", 1, 6, command=True))


def test_every_buffer_arrives_in_order_when_the_socket_takes_a_little_at_a_time() -> None:
    writer, reader = socket.socketpair()
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    buffers: list[bytes | memoryview] = [bytes([index % 251]) * (1000 + index * 37) for index in range(1500)]
    received = bytearray()

    def read() -> None:
        while chunk := reader.recv(3000):
            received.extend(chunk)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        write_buffers(writer, buffers)
    finally:
        writer.close()
        thread.join(timeout=30)
        reader.close()
    assert bytes(received) == b"".join(bytes(buffer) for buffer in buffers)


def test_a_closed_peer_raises_instead_of_hanging() -> None:
    writer, reader = socket.socketpair()
    reader.close()
    with pytest.raises(OSError):
        write_buffers(writer, [b"x" * 100_000] * 20)
    writer.close()


def _capturing_scp(max_pdu: int) -> tuple[Any, Address, list[bytes], list[int]]:
    """A pynetdicom SCP that keeps the encoded datasets it receives and the largest PDU it read."""
    stored: list[bytes] = []
    pdu_sizes: list[int] = []

    def on_store(event: evt.Event) -> int:
        stored.append(event.request.DataSet.getvalue())
        return 0x0000

    def on_pdu(event: evt.Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            pdu_sizes.append(len(event.pdu.encode()) - 6)

    ae = AE(ae_title="CAPTURE")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.maximum_pdu_size = max_pdu
    port = free_port()
    handlers: list[tuple[Any, Callable[..., Any]]] = [(evt.EVT_C_STORE, on_store), (evt.EVT_PDU_RECV, on_pdu)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    return server, Address("127.0.0.1", port, "CAPTURE"), stored, pdu_sizes


def _pixels(encoded: bytes) -> bytes:
    return bytes(dcmread(BytesIO(encoded), force=True).PixelData)


def test_the_command_set_is_byte_for_byte_the_one_pynetdicom_encodes() -> None:
    message = _message(b"\x00" * 10)
    pynetdicoms = encode(message.command_set, True, True)
    ours = c_store_command(str(message.command_set.AffectedSOPClassUID),
                           str(message.command_set.AffectedSOPInstanceUID), 7)
    assert ours == pynetdicoms


def test_a_c_store_written_by_us_is_stored_within_the_peers_maximum_pdu() -> None:
    server, address, stored, pdu_sizes = _capturing_scp(max_pdu=2048)
    series = synthetic_series(slices=3, rows=64, columns=64)
    try:
        ae = application_entity("SENDER", timeout=10)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = associate(ae, address, ae.requested_contexts, timeout=10)
        try:
            with parked_reactor(assoc):
                sock = direct_socket(assoc)
                assert sock is not None
                context_id = assoc.accepted_contexts[0].context_id
                assert context_id is not None
                responses = [send_c_store(assoc, sock, context_id, CTImageStorage, str(ds.SOPInstanceUID),
                                          encode(ds, False, True), message_id)
                             for message_id, ds in enumerate(series, start=1)]
        finally:
            end(assoc)
    finally:
        server.shutdown()
    assert [(r.MessageIDBeingRespondedTo, r.Status) for r in responses if r is not None] == [(1, 0), (2, 0), (3, 0)]
    assert max(pdu_sizes) == 2048
    assert [_pixels(data) for data in stored] == [bytes(dataset.PixelData) for dataset in series]


def test_send_datasets_delivers_identical_instances_through_the_direct_path() -> None:
    server, address, stored, _ = _capturing_scp(max_pdu=16384)
    series = synthetic_series(slices=4, rows=128, columns=128)
    try:
        result = send_datasets(address, series, timeout=10)
    finally:
        server.shutdown()
    assert result.ok
    assert sorted(_pixels(data) for data in stored) == sorted(bytes(ds.PixelData) for ds in series)


def _scp(on_store: Callable[[evt.Event], Any]) -> tuple[Any, Address]:
    ae = AE(ae_title="TESTSCP")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    return server, Address("127.0.0.1", port, "TESTSCP")


def test_the_peers_error_comment_is_part_of_the_failure_reason() -> None:
    def out_of_space(event: evt.Event) -> Dataset:
        status = Dataset()
        status.Status = 0xA700
        status.ErrorComment = "disk full on /archive"
        return status

    server, address = _scp(out_of_space)
    try:
        result = send_datasets(address, synthetic_series(slices=2, rows=16, columns=16), timeout=10)
    finally:
        server.shutdown()
    assert [failure.status for failure in result.failed] == [0xA700, 0xA700]
    assert all("disk full on /archive" in failure.reason for failure in result.failed)


def test_no_encoding_thread_outlives_a_send_the_peer_broke_off() -> None:
    def abort_on_the_third(event: evt.Event) -> int:
        if event.request.MessageID == 3:
            event.assoc.abort()
        return 0x0000

    server, address = _scp(abort_on_the_third)
    try:
        result = send_datasets(address, synthetic_series(slices=12, rows=16, columns=16), timeout=10)
    finally:
        server.shutdown()
    assert not result.ok
    assert len(result.accepted) >= 2
    assert not [thread for thread in threading.enumerate() if thread.name == "dicomnode-encode"]


def _pynetdicom_response(primitive: C_STORE) -> bytes:
    from pynetdicom.dimse_messages import C_STORE_RSP

    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize(("status", "comment"), [
    (0x0000, None), (0xB000, None), (0xA700, "the data directory is full"), (0xC002, "odd"),
])
def test_a_c_store_response_is_encoded_byte_for_byte_as_pynetdicom_encodes_it(status: int,
                                                                              comment: str | None) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 12
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = generate_uid()
    primitive.Status = status
    primitive.ErrorComment = comment
    ours = c_store_response_command(CTImageStorage, str(primitive.AffectedSOPInstanceUID), 12, status, comment)
    assert ours == _pynetdicom_response(primitive)


def test_responses_we_cannot_encode_exactly_are_left_to_pynetdicom() -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 3
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = generate_uid()
    primitive.Status = 0xC004
    primitive.ErrorComment = "no input accepts patient Øster"
    assert _plain_response(primitive) is None
    primitive.ErrorComment = "no input accepts it"
    assert _plain_response(primitive) is not None
    primitive.OffendingElement = [0x00100020]
    assert _plain_response(primitive) is None
