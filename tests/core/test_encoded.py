"""Encoded datasets: every element must fit in the bytes present; inflating stops at its limit."""

from __future__ import annotations

import zlib

import pytest
from pydicom import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from dicomnode.dicom.encoded import (
    DatasetDamageError,
    InflateLimitError,
    find_damage,
    inflate,
    read_elements,
)


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


# --- read_elements: find_damage's checks and pydicom's reader in one walk --------------------------


def _pydicom_reads(encoded: bytes, *, implicit: bool, defer_size: int | None = None) -> Dataset:
    return read_dataset(DicomBytesIO(encoded), implicit, True, defer_size=defer_size)


@pytest.mark.parametrize("implicit", [True, False])
def test_read_elements_gives_the_raw_elements_pydicoms_reader_gives(implicit: bool) -> None:
    dataset = _nested()
    dataset.PatientName = "Doe^Jane"
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    dataset.SliceThickness = "2.5"
    dataset.Rows = 2
    encoded = _encode(dataset, implicit=implicit)
    elements = read_elements(encoded, implicit=implicit)
    assert elements is not None
    expected = _pydicom_reads(encoded, implicit=implicit)
    assert list(elements) == list(expected.keys())
    for tag, element in elements.items():
        theirs = expected.get_item(tag)
        assert (element.VR, element.length, element.value, element.value_tell) == (
            theirs.VR, theirs.length, theirs.value, theirs.value_tell), tag
    # converted when used, as pydicom converts its own
    ours = Dataset(elements)
    ours.set_original_encoding(implicit, True, "iso8859")
    for tag in elements:
        assert ours[tag].value == expected[tag].value, tag


def test_read_elements_defers_long_values_and_stops_returning_at_a_tag() -> None:
    encoded = _encode(_nested(), implicit=False)
    elements = read_elements(encoded, implicit=False, defer_size=100)
    assert elements is not None and elements[0x7FE00010].value is None  # 1024 bytes: left in the buffer
    assert elements[0x00100020].value == b"PAT1"
    header = read_elements(encoded, implicit=False, keep_before=0x7FE00010)
    assert header is not None and 0x7FE00010 not in header and 0x00280100 in header


@pytest.mark.parametrize("implicit", [True, False])
def test_read_elements_refuses_every_cut_find_damage_refuses_with_the_same_words(implicit: bool) -> None:
    encoded = _encode(_nested(), implicit=implicit)
    for cut in range(1, len(encoded)):
        damage = find_damage(encoded[:cut], implicit=implicit)
        if damage is None:
            assert read_elements(encoded[:cut], implicit=implicit) is not None, cut
            continue
        with pytest.raises(DatasetDamageError) as raised:
            read_elements(encoded[:cut], implicit=implicit)
        assert raised.value.damage == damage, cut


def test_read_elements_checks_encapsulated_fragments_and_bad_value_representations() -> None:
    dataset = Dataset()
    dataset.PatientID = "PAT1"
    dataset.BitsAllocated = 8
    dataset.PixelData = encapsulate([b"\xff\xd8" + b"\x01" * 300 + b"\xff\xd9"])
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    encoded = _encode(dataset, implicit=False)
    elements = read_elements(encoded, implicit=False)
    assert elements is not None and elements[0x7FE00010].value == _pydicom_reads(
        encoded, implicit=False).get_item(0x7FE00010).value
    with pytest.raises(DatasetDamageError):
        read_elements(encoded[:-8], implicit=False)
    broken = bytearray(_encode(_nested(), implicit=False))
    broken[4:6] = b"\x01\x02"
    with pytest.raises(DatasetDamageError, match="value representation"):
        read_elements(bytes(broken), implicit=False)
