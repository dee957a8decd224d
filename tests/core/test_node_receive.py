"""The node's receive path: how received instances are held."""

from __future__ import annotations

from io import BytesIO

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnode.dicom.synthetic import synthetic_series
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
