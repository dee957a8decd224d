"""C-ECHO and C-STORE client helpers against real peers: DCMTK storescp and small pynetdicom SCPs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.presentation import build_context

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.errors import AssociationError, DimseError
from dicomnode.net import Address, echo, find, send_datasets
from dicomnode.net.transport import UNLIMITED_PDU, application_entity, associate

# -- peers ----------------------------------------------------------------------------------------


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[tuple[Address, Path]]:
    """A DCMTK storescp accepting every transfer syntax; yields its address and output folder."""
    require_peer("dcmtk")
    port = free_port()
    with storescp(tmp_path / "received", port):
        yield Address("127.0.0.1", port, "STORESCP"), tmp_path / "received"


@contextmanager
def pynetdicom_scp(on_store: Callable[[evt.Event], int], **events: Callable[[evt.Event], Any]
                   ) -> Iterator[Address]:
    """A pynetdicom storage SCP on a free port whose C-STORE handler is ``on_store``."""
    ae = AE(ae_title="TESTSCP")
    ae.supported_contexts = AllStoragePresentationContexts
    handlers: list[Any] = [(evt.EVT_C_STORE, on_store)]
    handlers += [(getattr(evt, name), handler) for name, handler in events.items()]
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        yield Address("127.0.0.1", port, "TESTSCP")
    finally:
        server.shutdown()


def _received(folder: Path) -> dict[str, Dataset]:
    return {ds.SOPInstanceUID: ds for ds in (dcmread(p) for p in folder.iterdir())}


def _small_series(slices: int = 5, modality: str = "CT") -> list[Dataset]:
    return synthetic_series(slices=slices, rows=32, columns=32, modality=modality)


def _rle_dataset() -> Dataset:
    """A 4x4 16-bit image in RLE Lossless: two byte planes, each one literal run."""
    dataset = _small_series(1)[0]
    pixels = bytes(range(32))
    high, low = pixels[1::2], pixels[0::2]
    header = (2).to_bytes(4, "little") + (64).to_bytes(4, "little") + (64 + 17).to_bytes(4, "little")
    frame = header + b"\x00" * 52 + bytes([15]) + high + bytes([15]) + low
    dataset.Rows = dataset.Columns = 4
    dataset.PixelData = encapsulate([frame])
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    dataset.file_meta.TransferSyntaxUID = RLELossless
    return dataset


# -- C-ECHO ----------------------------------------------------------------------------------------


def test_echo_returns_success_status_from_storescp(scp: tuple[Address, Path]) -> None:
    address, _ = scp
    assert echo(address, timeout=5) == 0x0000


def test_echo_to_a_port_nobody_listens_on_says_the_connection_was_refused() -> None:
    address = Address("127.0.0.1", free_port(), "NOBODY")
    with pytest.raises(AssociationError, match="Connection refused"):
        echo(address, timeout=5)


def test_echo_to_a_peer_refusing_associations_says_it_was_rejected(tmp_path: Path) -> None:
    require_peer("dcmtk")
    port = free_port()
    with storescp(tmp_path / "out", port, extra=["--refuse"]), \
            pytest.raises(AssociationError, match="rejected the association"):
        echo(Address("127.0.0.1", port, "STORESCP"), timeout=5)


def test_echo_to_a_silent_peer_times_out() -> None:
    with socket.socket() as listener:  # accepts TCP connections but never speaks DICOM
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = Address("127.0.0.1", listener.getsockname()[1], "SILENT")
        started = time.monotonic()
        with pytest.raises(AssociationError, match="did not answer"):
            echo(address, timeout=1)
        assert time.monotonic() - started < 10


def test_echo_validates_the_calling_ae_title() -> None:
    with pytest.raises(ValueError, match="calling AE title"):
        echo(Address("127.0.0.1", 104, "PACS"), ae_title="A" * 17)


# -- socket tuning ---------------------------------------------------------------------------------


def test_our_association_socket_has_tcp_nodelay_and_asks_for_unlimited_pdus(scp: tuple[Address, Path]) -> None:
    address, _ = scp
    ae = application_entity("DICOMNODE", 5)
    assoc = associate(ae, address, [build_context("1.2.840.10008.1.1")], timeout=5)
    try:
        sock = assoc.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert assoc.requestor.maximum_length == UNLIMITED_PDU
    finally:
        assoc.release()


# -- C-STORE to DCMTK --------------------------------------------------------------------------


def test_send_datasets_stores_every_instance_with_identical_pixels(scp: tuple[Address, Path]) -> None:
    address, folder = scp
    series = _small_series(5)
    result = send_datasets(address, series, timeout=10)
    assert result.ok, result
    assert sorted(result.accepted) == sorted(ds.SOPInstanceUID for ds in series)
    received = _received(folder)
    for original in series:
        assert received[original.SOPInstanceUID].PixelData == original.PixelData


def test_send_datasets_reads_files_and_reports_progress(scp: tuple[Address, Path], tmp_path: Path) -> None:
    address, folder = scp
    series = _small_series(4)
    paths = write_series(series, tmp_path / "files")
    calls: list[tuple[int, int]] = []
    result = send_datasets(address, paths, progress=lambda done, total: calls.append((done, total)))
    assert result.ok, result
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    received = _received(folder)
    for original in series:
        assert received[original.SOPInstanceUID] == original


def test_lazy_datasets_are_sent_from_their_files_without_loading_them(
        scp: tuple[Address, Path], tmp_path: Path) -> None:
    address, folder = scp
    lazies = [LazyDataset(path) for path in write_series(_small_series(3), tmp_path / "files")]
    result = send_datasets(address, lazies)
    assert result.ok, result
    assert not any(lazy.is_loaded for lazy in lazies)
    assert len(_received(folder)) == 3


def test_sending_files_leaves_pynetdicoms_streaming_setting_as_it_was(
        scp: tuple[Address, Path], tmp_path: Path) -> None:
    from pynetdicom import _config

    address, _ = scp
    paths = write_series(_small_series(2), tmp_path / "files")
    for before in (False, True):
        _config.STORE_SEND_CHUNKED_DATASET = before
        try:
            assert send_datasets(address, paths).ok
            assert _config.STORE_SEND_CHUNKED_DATASET is before
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False


def test_a_dataset_without_file_meta_is_sent_and_left_unchanged(scp: tuple[Address, Path]) -> None:
    address, folder = scp
    dataset = _small_series(1)[0]
    del dataset.file_meta
    result = send_datasets(address, [dataset])
    assert result.ok, result
    assert not hasattr(dataset, "file_meta") or "TransferSyntaxUID" not in dataset.file_meta
    assert dataset.SOPInstanceUID in _received(folder)


def test_a_non_dicom_file_is_reported_by_name_and_the_others_are_sent(
        scp: tuple[Address, Path], tmp_path: Path) -> None:
    address, _ = scp
    paths = write_series(_small_series(2), tmp_path / "files")
    junk = tmp_path / "files" / "notes.txt"
    junk.write_text("not an image")
    result = send_datasets(address, [*paths, junk])
    assert len(result.accepted) == 2
    [failure] = result.failed
    assert failure.path == junk and "not a DICOM file" in failure.reason and str(junk) in failure.reason
    assert not result.ok


def test_a_peer_with_a_small_maximum_pdu_gets_every_instance_intact(tmp_path: Path) -> None:
    require_peer("dcmtk")
    port = free_port()
    series = _small_series(2)
    with storescp(tmp_path / "received", port, extra=["--max-pdu", "4096"]):
        result = send_datasets(Address("127.0.0.1", port, "STORESCP"), series)
    assert result.ok, result
    received = _received(tmp_path / "received")
    assert all(received[ds.SOPInstanceUID].PixelData == ds.PixelData for ds in series)


def test_a_damaged_file_fails_alone_and_the_rest_go_on_a_new_association(
        scp: tuple[Address, Path], tmp_path: Path) -> None:
    address, folder = scp
    paths = write_series(_small_series(4), tmp_path / "files")
    damaged = paths[1]
    damaged.write_bytes(damaged.read_bytes()[:-1000])  # cut short inside the pixel data
    result = send_datasets(address, paths, timeout=10)
    assert len(result.accepted) == 3 and result.error is None and result.not_sent == ()
    [failure] = result.failed
    assert failure.path == damaged and "aborted the association" in failure.reason
    assert len(list(folder.iterdir())) == 3


def test_peer_accepting_only_implicit_vr_gets_converted_instances(tmp_path: Path) -> None:
    require_peer("dcmtk")
    port = free_port()
    series = _small_series(3)
    with storescp(tmp_path / "received", port, extra=["+xi"]):
        result = send_datasets(Address("127.0.0.1", port, "STORESCP"), series)
    assert result.ok, result
    received = _received(tmp_path / "received")
    for original in series:
        copy = received[original.SOPInstanceUID]
        assert copy.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert copy.PixelData == original.PixelData


def test_compressed_instances_are_sent_as_they_are(scp: tuple[Address, Path]) -> None:
    address, folder = scp
    dataset = _rle_dataset()
    result = send_datasets(address, [dataset])
    assert result.ok, result
    assert _received(folder)[dataset.SOPInstanceUID].file_meta.TransferSyntaxUID == RLELossless


def test_compressed_instances_refused_in_their_syntax_fail_with_a_reason(tmp_path: Path) -> None:
    require_peer("dcmtk")
    port = free_port()
    compressed, plain = _rle_dataset(), _small_series(1)[0]
    with storescp(tmp_path / "received", port, extra=["+xi"]):
        result = send_datasets(Address("127.0.0.1", port, "STORESCP"), [compressed, plain])
    assert result.accepted == (plain.SOPInstanceUID,)
    [failure] = result.failed
    assert failure.sop_instance_uid == compressed.SOPInstanceUID and failure.status is None
    assert "RLE Lossless" in failure.reason and "decompress" in failure.reason


def test_send_to_a_peer_that_is_down_returns_everything_as_not_sent() -> None:
    series = _small_series(3)
    result = send_datasets(Address("127.0.0.1", free_port(), "DOWN"), series, timeout=5)
    assert not result.ok
    assert result.accepted == () and result.failed == ()
    assert sorted(result.not_sent) == sorted(ds.SOPInstanceUID for ds in series)
    assert "Connection refused" in (result.error or "")


def test_send_to_a_peer_refusing_the_association_reports_its_reason(tmp_path: Path) -> None:
    require_peer("dcmtk")
    port = free_port()
    with storescp(tmp_path / "received", port, extra=["--refuse"]):
        result = send_datasets(Address("127.0.0.1", port, "STORESCP"), _small_series(2))
    assert "rejected the association" in (result.error or "")
    assert len(result.not_sent) == 2


# -- C-STORE to pynetdicom SCPs: statuses, contexts, broken associations ---------------------------


def test_find_raises_with_the_failure_status_the_peer_answers() -> None:
    def on_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        yield 0xA700, None

    ae = AE(ae_title="QRSCP")
    ae.add_supported_context("1.2.840.10008.5.1.4.1.2.2.1")  # Study Root Query/Retrieve - FIND
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    query = Dataset()
    query.PatientID = "X"
    try:
        with pytest.raises(DimseError, match="status 0xA700"):
            find(Address("127.0.0.1", port, "QRSCP"), query, level="STUDY", timeout=5)
    finally:
        server.shutdown()


def test_failure_and_warning_statuses_are_told_apart() -> None:
    series = _small_series(3)
    answers = {series[0].SOPInstanceUID: 0x0000, series[1].SOPInstanceUID: 0xB000,
               series[2].SOPInstanceUID: 0xA700}
    with pynetdicom_scp(lambda event: answers[event.request.AffectedSOPInstanceUID]) as address:
        result = send_datasets(address, series)
    assert result.accepted == (series[0].SOPInstanceUID, series[1].SOPInstanceUID)
    [failure] = result.failed
    assert failure.status == 0xA700 and "Out of Resources" in failure.reason
    assert result.error is None and not result.ok


def test_exactly_the_sop_classes_and_transfer_syntaxes_present_are_proposed() -> None:
    proposed: list[list[tuple[str, tuple[str, ...]]]] = []

    def on_requested(event: evt.Event) -> None:
        proposed.append(sorted((str(cx.abstract_syntax), tuple(map(str, cx.transfer_syntax)))
                               for cx in event.assoc.requestor.requested_contexts))

    implicit = _small_series(1, "MR")[0]
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    with pynetdicom_scp(lambda event: 0x0000, EVT_REQUESTED=on_requested) as address:
        result = send_datasets(address, [*_small_series(2, "CT"), implicit])
    assert result.ok, result
    assert proposed == [sorted([
        (CTImageStorage, (ExplicitVRLittleEndian,)),
        (CTImageStorage, (ImplicitVRLittleEndian,)),
        (MRImageStorage, (ImplicitVRLittleEndian,)),
        (MRImageStorage, (ExplicitVRLittleEndian,)),
    ])]


def test_more_than_128_contexts_are_spread_over_several_associations() -> None:
    associations: list[int] = []
    sop_classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts][:70]
    datasets = []
    for number, sop_class in enumerate(sop_classes):
        dataset = Dataset()
        dataset.SOPClassUID = sop_class
        dataset.SOPInstanceUID = f"1.2.3.4.{number + 1}"
        datasets.append(dataset)

    def on_requested(event: evt.Event) -> None:
        associations.append(len(event.assoc.requestor.requested_contexts))

    with pynetdicom_scp(lambda event: 0x0000, EVT_REQUESTED=on_requested) as address:
        result = send_datasets(address, datasets)
    assert result.ok, result
    assert len(result.accepted) == 70
    assert len(associations) == 2 and all(count <= 128 for count in associations)
    assert sum(associations) == 140  # each SOP class: its own syntax plus the implicit fallback


def test_a_peer_that_stops_answering_leaves_the_rest_not_sent() -> None:
    series = _small_series(3)
    release = threading.Event()

    def slow(event: evt.Event) -> int:
        if event.request.AffectedSOPInstanceUID == series[1].SOPInstanceUID:
            release.wait(5)
        return 0x0000

    with pynetdicom_scp(slow) as address:
        result = send_datasets(address, series, timeout=1)
        release.set()
    assert result.accepted == (series[0].SOPInstanceUID,)
    assert [f.sop_instance_uid for f in result.failed] == [series[1].SOPInstanceUID]
    assert result.not_sent == (series[2].SOPInstanceUID,)
    assert "no C-STORE response" in (result.error or "")
