"""The node's receive path: how accepted associations poll, and how received instances are held."""

from __future__ import annotations

import time
from io import BytesIO

from node import RecordingNode
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.dicom.transport import ACCEPTED_POLL_DELAY, _clock
from dicomnode.server.receive import decode_received

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _encoded(implicit: bool) -> tuple[BytesIO, bytes]:
    """One 256x256 16-bit slice (128 KiB of pixels, above the deferral size), encoded as received."""
    dataset = synthetic_series(patient_id="P1", slices=1, rows=256, columns=256)[0]
    stream = DicomBytesIO()
    stream.is_implicit_VR = implicit
    stream.is_little_endian = True
    write_dataset(stream, dataset)
    return BytesIO(stream.getvalue()), bytes(dataset.PixelData)


def test_an_accepted_association_polls_more_often_than_every_millisecond() -> None:
    with RecordingNode() as node:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(CT_IMAGE_STORAGE)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="TESTNODE")
        try:
            assert assoc.is_established
            server = node._server
            assert server is not None
            accepted = server.active_associations
            assert len(accepted) == 1
            assert accepted[0].dul._run_loop_delay == ACCEPTED_POLL_DELAY < 0.001
        finally:
            assoc.release()


def test_an_accepted_association_serves_messages_as_they_arrive_not_on_a_poll() -> None:
    import pynetdicom.association

    with RecordingNode() as node:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(CT_IMAGE_STORAGE)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="TESTNODE")
        try:
            assert assoc.is_established
            server = node._server
            assert server is not None
            accepted = server.active_associations[0]
            assert accepted in _clock.waking
            assert pynetdicom.association.time is _clock  # type: ignore[attr-defined]
            assert int(assoc.send_c_store(synthetic_series(slices=1, rows=16, columns=16)[0]).Status) == 0
        finally:
            assoc.release()
        assert assoc not in _clock.waking  # our own requesting side keeps pynetdicom's poll


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
