"""C-STOREs answered on the PDU-reading thread: the same answers pynetdicom gives, everything else still its own.

The lane (:mod:`dicomnode.net.receiving`) is fed P-DATA-TF bodies here
directly, then the node is sent to by pynetdicom and DCMTK, once through
the lane and once with the lane turned off, and every response must be
the same.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from conftest import require_peer
from dcmtk import storescu
from node import RECORD, RecordingNode, wait_until
from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.net import adapter
from dicomnode.net.pdata import c_store_command, pdu_buffers
from dicomnode.net.receiving import MAXIMUM_COMMAND, CStoreLane, LaneError, StoreRequest

pytestmark = pytest.mark.timeout(60)

CT = str(CTImageStorage)
SYNTAX = str(ExplicitVRLittleEndian)


# --- the lane on its own ---------------------------------------------------------------------------


def _bodies(payload: bytes, context_id: int, max_pdu: int, *, command: bool) -> list[bytes]:
    """The bodies (without the 6-byte PDU header) of the P-DATA-TF PDUs carrying ``payload``."""
    pdus: list[bytes] = []
    for buffer in pdu_buffers(payload, context_id, max_pdu, command=command):
        if len(buffer) == 12 and bytes(buffer[:1]) == b"\x04":
            pdus.append(bytes(buffer))
        else:
            pdus[-1] += bytes(buffer)
    return [pdu[6:] for pdu in pdus]


def _item(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


class Lane:
    def __init__(self, status: int | tuple[int, str] = 0, limit: int = 1 << 20) -> None:
        self.requests: list[tuple[StoreRequest, bytes | None]] = []
        self.written: list[bytes] = []
        self.status = status
        self.lane = CStoreLane({1: (CT, SYNTAX), 3: ("1.2.840.10008.1.1", SYNTAX)}, self._deliver,
                               self.written.append, limit=limit, peer_maximum_pdu=16384)

    def _deliver(self, request: StoreRequest) -> int | tuple[int, str]:
        self.requests.append((request, None if request.dataset is None else request.dataset.getvalue()))
        return self.status

    def response(self, index: int = -1) -> Dataset:
        data = self.written[index]
        assert data[:1] == b"\x04" and data[11] == 0x03  # one P-DATA-TF, one last command fragment
        return read_dataset(BytesIO(data[12:]), True, True)


def test_a_c_store_in_fragments_over_several_pdus_is_delivered_whole_and_answered() -> None:
    lane = Lane()
    command = c_store_command(CT, "1.2.3.4", message_id=7)
    dataset = bytes(range(256)) * 200
    bodies = [_item(1, 0x01, command[:20]), _item(1, 0x03, command[20:])]
    bodies += _bodies(dataset, 1, 4096, command=False)
    for body in bodies:
        assert lane.lane.feed(body) is None
        assert lane.lane.busy is (lane.written == [])
    (request, received), = lane.requests
    assert (request.message_id, request.sop_class, request.sop_instance, request.transfer_syntax) == (
        7, CT, "1.2.3.4", SYNTAX)
    assert received == dataset
    response = lane.response()
    assert (response.CommandField, response.MessageIDBeingRespondedTo, response.Status) == (0x8001, 7, 0)
    assert (response.AffectedSOPClassUID, response.AffectedSOPInstanceUID) == (CT, "1.2.3.4")


def test_a_dataset_over_the_limit_is_counted_not_kept_and_a_failure_comment_is_cut_to_64_characters() -> None:
    lane = Lane(status=(0xA700, "x" * 100), limit=1000)
    lane.lane.feed(_item(1, 0x03, c_store_command(CT, "1.2.3.4", message_id=1)))
    for body in _bodies(b"\x00" * 5000, 1, 2048, command=False):
        lane.lane.feed(body)
    (request, received), = lane.requests
    assert received is None and request.size == 5000
    response = lane.response()
    assert response.Status == 0xA700 and response.ErrorComment == "x" * 64


def test_what_is_not_a_plain_c_store_goes_back_to_pynetdicom_as_it_came() -> None:
    lane = Lane()
    echo = struct.pack("<HHI", 0, 0x0002, 18) + b"1.2.840.10008.1.1\x00"
    echo += struct.pack("<HHIH", 0, 0x0100, 2, 0x0030) + struct.pack("<HHIH", 0, 0x0110, 2, 1)
    echo += struct.pack("<HHIH", 0, 0x0800, 2, 0x0101)
    body = _item(3, 0x03, echo)
    handed = lane.lane.feed(body)
    assert handed == b"\x04\x00" + struct.pack(">I", len(body)) + body
    # a C-STORE whose SOP class is not its context's, with its dataset: all of it is pynetdicom's
    command = _item(3, 0x03, c_store_command(CT, "1.2.3.4", message_id=2))
    data = _item(3, 0x02, b"\x00" * 10)
    assert lane.lane.feed(command) == b"\x04\x00" + struct.pack(">I", len(command)) + command
    assert lane.lane.feed(data) == b"\x04\x00" + struct.pack(">I", len(data)) + data
    # so is a command with an element a C-STORE-RQ does not carry, and one on an unknown context
    odd = _item(1, 0x03, c_store_command(CT, "1.2.3.4", message_id=3) + struct.pack("<HHIH", 0, 0x0900, 2, 0))
    assert lane.lane.feed(odd) is not None
    assert lane.lane.feed(_item(1, 0x02, b"\x00\x00")) is not None
    assert lane.lane.feed(_item(9, 0x03, c_store_command(CT, "1.2.3.4", message_id=4))) is not None
    assert lane.lane.feed(_item(9, 0x02, b"\x00\x00")) is not None
    assert lane.requests == [] and lane.written == [] and lane.lane.handed_over == 7
    # malformed items while nothing is under way: pynetdicom reads them and says why
    assert lane.lane.feed(b"\x00\x00\x00\x09\x01") is not None
    assert lane.lane.feed(b"") == b"\x04\x00\x00\x00\x00\x00"


def test_a_protocol_break_inside_a_c_store_the_lane_holds_is_an_error() -> None:
    lane = Lane()
    lane.lane.feed(_item(1, 0x03, c_store_command(CT, "1.2.3.4", message_id=1)))
    lane.lane.feed(_item(1, 0x00, b"\x00" * 8))
    with pytest.raises(LaneError, match="command fragment"):
        lane.lane.feed(_item(1, 0x03, c_store_command(CT, "1.2.3.5", message_id=2)))
    for body in (_item(3, 0x02, b"\x00\x00"), b"\x00\x00\x00\x09\x01", b""):
        broken = Lane()
        broken.lane.feed(_item(1, 0x03, c_store_command(CT, "1.2.3.4", message_id=1)))
        with pytest.raises(LaneError):
            broken.lane.feed(body)


def test_command_fragments_without_end_are_an_error_not_a_growing_buffer() -> None:
    lane = Lane()
    fragment = _item(1, 0x01, b"\x00" * 16000)  # a command fragment that is never the last
    with pytest.raises(LaneError, match=f"command set longer than {MAXIMUM_COMMAND} bytes"):
        for _ in range(MAXIMUM_COMMAND // 16000 + 2):
            lane.lane.feed(fragment)
    assert lane.requests == [] and lane.written == []


# --- the node: the lane's answers are pynetdicom's ---------------------------------------------------


@contextmanager
def _node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, lane: bool
          ) -> Iterator[tuple[RecordingNode, list[CStoreLane]]]:
    """The node, its C-STOREs answered by the lane (each lane it made listed) or by pynetdicom."""
    monkeypatch.setenv(RECORD, str(tmp_path / "jobs.jsonl"))
    lanes: list[CStoreLane] = []
    real = adapter.take_c_stores

    def spy(*args: Any, **options: Any) -> CStoreLane | None:
        made = real(*args, **options)
        assert made is not None, "the speed patches are off: the lane was not tried"
        lanes.append(made)
        return made

    with monkeypatch.context() as patch:
        patch.setattr(adapter, "take_c_stores", spy if lane else lambda *args, **options: None)
        # refusals answered with a failure status (the default discards them with success)
        with RecordingNode(data_directory=tmp_path / f"data-{lane}", rejection_policy="failure") as running:
            yield running, lanes


def _answers(port: int, paths: list[Path]) -> list[tuple[int, str]]:
    """Send each file and a C-ECHO after each on one association; every answer."""
    client = AE(ae_title="CLIENT")
    client.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    client.add_requested_context(Verification)
    assoc = client.associate("127.0.0.1", port, ae_title="TESTNODE")
    assert assoc.is_established
    answers = []
    try:
        for path in paths:
            status = assoc.send_c_store(path)
            answers.append((int(status.Status), str(status.get("ErrorComment", ""))))
            answers.append((int(assoc.send_c_echo().Status), ""))
    finally:
        assoc.release()
    return answers


def test_pynetdicom_gets_the_same_answers_from_the_lane_as_from_pynetdicom(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = synthetic_series(slices=3, rows=16, columns=16, patient_id="LANE1")
    images[2].Modality = "MR"  # no input accepts it
    paths = write_series(images, tmp_path / "out")
    cut = paths[1].read_bytes()
    paths[1].write_bytes(cut[:-100])  # the pixel data is cut short
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)  # files sent as they are
    answered: dict[bool, list[tuple[int, str]]] = {}
    for lane in (True, False):
        with _node(tmp_path, monkeypatch, lane=lane) as (running, lanes):
            answered[lane] = _answers(running.port, paths)
        if lane:  # the three C-STOREs were the lane's, the C-ECHOs pynetdicom's
            assert [(made.answered, made.handed_over) for made in lanes] == [(3, 3)]
    statuses = [answer[0] for answer in answered[True]]
    assert statuses == [0x0000, 0, 0xC001, 0, 0xC004, 0]
    assert "announces" in answered[True][2][1]
    assert "no input accepts it" in answered[True][4][1]
    assert answered[True] == answered[False]


def test_storescu_gets_success_for_whole_instances_through_the_lane(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_peer("dcmtk")
    folder = tmp_path / "series"
    write_series(synthetic_series(slices=4, rows=16, columns=16, patient_id="LANE2"), folder)
    with _node(tmp_path, monkeypatch, lane=True) as (running, lanes):
        done = storescu(running.port, [folder], called_aet="TESTNODE", extra=["-v"], timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).count("Received Store Response (Success)") == 4
    assert [made.answered for made in lanes] == [4]


def test_a_peer_breaking_the_protocol_inside_a_c_store_is_aborted_and_nothing_is_delivered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _node(tmp_path, monkeypatch, lane=True) as (running, lanes):
        client = AE(ae_title="CLIENT")
        client.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = client.associate("127.0.0.1", running.port, ae_title="TESTNODE")
        assert assoc.is_established
        context_id = assoc.accepted_contexts[0].context_id
        command = c_store_command(CT, "1.2.3.4", message_id=1)
        pdus = [_item(context_id, 0x03, command), _item(context_id, 0x00, b"\x00" * 64),
                _item(context_id, 0x03, command)]  # a second command inside the first one's dataset
        sock = assoc.dul.socket.socket
        assert sock is not None
        sock.sendall(b"".join(b"\x04\x00" + struct.pack(">I", len(pdu)) + pdu for pdu in pdus))
        assert wait_until(lambda: assoc.is_aborted, timeout=5)
        assert [(made.answered, made.busy) for made in lanes] == [(0, True)]


def test_once_established_only_the_lane_reads_the_connection_so_no_fragment_goes_astray(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pynetdicom's own reader looks at the socket again: called while nothing was buffered for it, it
    # would read a P-DATA-TF that arrived in between itself, and the lane would miss a dataset fragment
    import pynetdicom.dul

    real = pynetdicom.dul.DULServiceProvider._is_transport_event
    astray: list[str] = []

    def watched(self: pynetdicom.dul.DULServiceProvider) -> bool:
        wrapper = self.socket
        if (self.state_machine.current_state == "Sta6" and isinstance(wrapper, adapter.GuardedSocket)
                and wrapper.lane is not None and not wrapper.reader.buffered):
            astray.append(self.state_machine.current_state)
        return real(self)

    assert adapter.check() == ()  # checked before the reader is watched: the check reads its code
    monkeypatch.setattr(pynetdicom.dul.DULServiceProvider, "_is_transport_event", watched)
    images = synthetic_series(slices=6, rows=128, columns=128, patient_id="LANE3")
    with _node(tmp_path, monkeypatch, lane=True) as (running, lanes):
        client = AE(ae_title="CLIENT")
        client.maximum_pdu_size = 4096
        client.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = client.associate("127.0.0.1", running.port, ae_title="TESTNODE", max_pdu=4096)
        assert assoc.is_established
        try:
            statuses = [int(assoc.send_c_store(image).Status) for image in images]
        finally:
            assoc.release()
    assert statuses == [0] * 6
    assert [made.answered for made in lanes] == [6]
    assert astray == []
