"""Encoded datasets: every element must fit in the bytes present; inflating stops at its limit."""

from __future__ import annotations

import zlib

import pytest
from pydicom import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from dicomnode.dicom.encoded import InflateLimitError, find_damage, inflate


def _encode(dataset: Dataset, *, implicit: bool) -> bytes:
    out = DicomBytesIO()
    out.is_implicit_VR = implicit
    out.is_little_endian = True
    write_dataset(out, dataset)
    return out.getvalue()


def _nested() -> Dataset:
    inner = Dataset()
    inner.CodeValue = "T-D0050"
    inner.CodingSchemeDesignator = "SRT"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.ConceptCodeSequence = Sequence([inner])
    dataset = Dataset()
    dataset.PatientID = "PAT1"
    dataset.ReferencedImageSequence = Sequence([item, Dataset()])
    dataset.BitsAllocated = 8
    dataset.PixelData = bytes(range(256)) * 4
    return dataset


@pytest.mark.parametrize("implicit", [True, False])
def test_a_whole_dataset_with_nested_sequences_has_no_damage(implicit: bool) -> None:
    assert find_damage(_encode(_nested(), implicit=implicit), implicit=implicit) is None


@pytest.mark.parametrize("implicit", [True, False])
def test_every_cut_inside_an_element_is_found(implicit: bool) -> None:
    encoded = _encode(_nested(), implicit=implicit)
    # the top level's element boundaries: a dataset cut exactly there is structurally whole
    elements = list(_nested())
    boundaries = {len(_encode(Dataset({e.tag: e for e in elements[:count]}), implicit=implicit))
                  for count in range(1, len(elements))}
    for cut in range(1, len(encoded)):
        damage = find_damage(encoded[:cut], implicit=implicit)
        if cut in boundaries:
            assert damage is None, cut
        else:
            assert damage is not None, f"a cut at byte {cut} of {len(encoded)} went unnoticed"


def test_a_pixel_data_element_announcing_a_gibibyte_names_the_element() -> None:
    dataset = Dataset()
    dataset.PatientID = "PAT1"
    dataset.BitsAllocated = 8
    dataset.PixelData = b"\x00" * 100
    encoded = bytearray(_encode(dataset, implicit=False))
    # explicit VR OB: tag (4), VR (2), reserved (2), then the 4-byte length
    index = encoded.index(b"\xe0\x7f\x10\x00OB")
    encoded[index + 8:index + 12] = (1 << 30).to_bytes(4, "little")
    damage = find_damage(bytes(encoded), implicit=False)
    assert damage is not None
    assert damage.tag == 0x7FE00010
    assert damage.short.startswith("announces 1073741824 bytes, 100 present")
    assert "PixelData (7FE0,0010)" in str(damage)


def test_encapsulated_fragments_are_checked_to_their_delimiter() -> None:
    dataset = Dataset()
    dataset.PatientID = "PAT1"
    dataset.file_meta = Dataset()
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.BitsAllocated = 8
    dataset.PixelData = encapsulate([b"\xff\xd8" + b"\x01" * 300 + b"\xff\xd9", b"\xff\xd8\xff\xd9"])
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    encoded = _encode(dataset, implicit=False)
    assert find_damage(encoded, implicit=False) is None
    assert find_damage(encoded[:-8], implicit=False) is not None  # the delimiter is missing
    assert find_damage(encoded[:-20], implicit=False) is not None  # a fragment is cut


def test_a_value_representation_that_is_not_two_letters_is_damage() -> None:
    encoded = bytearray(_encode(_nested(), implicit=False))
    encoded[4:6] = b"\x01\x02"
    damage = find_damage(bytes(encoded), implicit=False)
    assert damage is not None and "value representation" in damage.problem


def test_inflate_returns_what_was_deflated() -> None:
    raw = _encode(_nested(), implicit=False)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert inflate(packer.compress(raw) + packer.flush(), len(raw)) == raw
    assert str(ExplicitVRLittleEndian)  # the syntax a deflated dataset inflates to


def test_a_deflate_bomb_stops_at_the_limit() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = packer.compress(b"\x00" * (64 << 20)) + packer.flush()
    assert len(bomb) < 100_000
    with pytest.raises(InflateLimitError, match="more than 4194304 bytes"):
        inflate(bomb, 4 << 20)


def test_bytes_that_are_not_deflated_raise_a_zlib_error() -> None:
    with pytest.raises(zlib.error):
        inflate(b"\xff" * 64, 1 << 20)
