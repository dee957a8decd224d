"""How an input container crosses to a worker: through Dask's own serialization, as the executor sends it."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from distributed.protocol.serialize import deserialize, serialize
from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.extension.containers import InputContainer
from dicomnode.server.ingest import decode_received
from dicomnode_dask.travel import travelling

pytestmark = pytest.mark.plugin("dask")


def _across(container: InputContainer, **options: bool) -> InputContainer:
    header, frames = serialize(travelling(container, **options))
    arrived: InputContainer = deserialize(header, frames)
    return arrived


def _series(patient: str = "TRAVEL") -> list[Dataset]:
    series = synthetic_series(patient_id=patient, slices=3, rows=16, columns=16)
    for dataset in series:
        dataset.PatientName = "Müller^Jürgen"
        dataset.SpecificCharacterSet = "ISO_IR 100"
    return series


def test_datasets_arrive_equal_with_their_pixel_data_sent_beside_the_pickle() -> None:
    series = _series()
    header, frames = serialize(travelling(InputContainer({"count": 3}, {"CT": series}, patient_key="TRAVEL")))
    assert len(frames) >= 1 + len(series)  # one frame per dataset's pixel data, not copied into the pickle
    arrived: InputContainer = deserialize(header, frames)
    assert arrived.patient_key == "TRAVEL" and arrived["count"] == 3
    for sent, received in zip(series, arrived.datasets["CT"], strict=True):
        assert type(received) is Dataset
        assert received == sent
        assert received.PixelData == sent.PixelData and isinstance(received.PixelData, bytes)
        assert str(received.PatientName) == "Müller^Jürgen"


def test_without_pixel_data_the_headers_arrive_alone() -> None:
    series = _series()
    arrived = _across(InputContainer({}, {"CT": series}), pixel_data=False)
    for sent, received in zip(series, arrived.datasets["CT"], strict=True):
        assert "PixelData" not in received
        assert received.SOPInstanceUID == sent.SOPInstanceUID and received.ImagePositionPatient == \
            sent.ImagePositionPatient


def test_datasets_a_ground_value_holds_arrive_whole_and_as_the_same_objects() -> None:
    series = _series()
    arrived = _across(InputContainer({"CT": series}, {"CT": series}), pixel_data=False)
    assert arrived["CT"][0] is arrived.datasets["CT"][0]
    assert arrived.datasets["CT"][0].PixelData == series[0].PixelData


def test_a_received_dataset_brings_the_pixel_data_it_has_not_read_yet() -> None:
    buffer = BytesIO()
    original = _series()[0]
    dcmwrite(buffer, original, enforce_file_format=True)
    raw = buffer.getvalue()
    meta_length = int.from_bytes(raw[140:144], "little")
    received = decode_received(BytesIO(raw[144 + meta_length:]), str(original.file_meta.TransferSyntaxUID),
                               header_only=False)
    arrived = _across(InputContainer({}, {"CT": [received]}))
    assert arrived.datasets["CT"][0].PixelData == original.PixelData


def test_an_unread_lazy_dataset_travels_with_its_header(tmp_path: Path) -> None:
    [path] = write_series(_series()[:1], tmp_path)
    expected = dcmread(path, stop_before_pixels=True)
    lazy = LazyDataset(path)
    assert not lazy.is_loaded
    arrived = _across(InputContainer({}, {"CT": [lazy]}))
    path.unlink()  # a worker on another machine has no such file
    [dataset] = arrived.datasets["CT"]
    assert dataset.SOPInstanceUID == expected.SOPInstanceUID
    assert str(dataset.PatientName) == "Müller^Jürgen"


def test_elements_the_slices_share_arrive_once_yet_each_dataset_changes_alone() -> None:
    series = _series()
    arrived = _across(InputContainer({}, {"CT": series}), pixel_data=False).datasets["CT"]
    arrived[0].PatientName = "Changed^Here"
    arrived[0].SeriesDescription = "only the first"
    assert str(arrived[1].PatientName) == "Müller^Jürgen"
    assert arrived[1].get("SeriesDescription") == series[1].get("SeriesDescription")
    assert [str(d.SOPInstanceUID) for d in arrived] == [str(d.SOPInstanceUID) for d in series]


@pytest.mark.plugin("numpy", "dask")
def test_a_ground_numpy_volume_travels_as_an_array_beside_the_pickle() -> None:
    import numpy as np

    from dicomnode_numpy import NumpyGrinder

    series = synthetic_series(patient_id="VOLUME", slices=4, rows=32, columns=32)
    volume = NumpyGrinder()(series)
    header, frames = serialize(travelling(InputContainer({"CT": volume}, {"CT": series}), pixel_data=False))
    assert max(memoryview(frame).nbytes for frame in frames) >= volume.array.nbytes  # not inside the pickle
    arrived: InputContainer = deserialize(header, frames)
    np.testing.assert_array_equal(arrived["CT"].array, volume.array)
    np.testing.assert_array_equal(arrived["CT"].origin, volume.origin)
    assert arrived["CT"].source_uids == volume.source_uids
