"""DicomOutput delivers every instance exactly once in effect, retries, and keeps what it cannot deliver."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp
from pydicom import dcmread
from recording_scp import recording_scp

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.errors import ConfigurationError, DimseError
from dicomnode.extension.outputs import OutputContext
from dicomnode.net import Address
from dicomnode.server.outbox import Outbox
from dicomnode.testing import output_context

pytestmark = pytest.mark.plugin("dicom-output")

try:
    from dicomnode_dicom_output import DicomOutput
except ImportError:  # a session without the plugin deselects every test here (pytestmark)
    pass


def _context(tmp_path: Path) -> OutputContext:
    return output_context(tmp_path, pipeline_name="test", ae_title="PIPELINE", patient_key="P1",
                          output_name="dicom")


def _uids(datasets: list) -> set[str]:  # type: ignore[type-arg]
    return {str(ds.SOPInstanceUID) for ds in datasets}


def _received_uids(directory: Path) -> list[str]:
    return [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in directory.iterdir()]


@pytest.fixture
def series() -> list:  # type: ignore[type-arg]
    return synthetic_series(slices=6, rows=16, columns=16)


@pytest.fixture
def storescp_peer(tmp_path: Path) -> Iterator[tuple[Address, Path]]:
    require_peer("dcmtk")
    port = free_port()
    received = tmp_path / "storescp"
    with storescp(received, port, ae_title="STORESCP"):
        yield Address("127.0.0.1", port, "STORESCP"), received


def test_sends_every_dataset_to_storescp(storescp_peer: tuple[Address, Path], series: list) -> None:  # type: ignore[type-arg]
    address, received = storescp_peer
    output = DicomOutput([(address, series)], "DICOMNODE")

    assert output.send() is True

    assert sorted(_received_uids(received)) == sorted(_uids(series))
    (report,) = output.report
    assert report.ok and report.attempts == 1
    assert set(report.accepted) == _uids(series)


def test_sends_files_given_as_paths(storescp_peer: tuple[Address, Path], series: list, tmp_path: Path) -> None:  # type: ignore[type-arg]
    address, received = storescp_peer
    paths = write_series(series, tmp_path / "files")

    assert DicomOutput([(address, paths)]).send() is True

    assert sorted(_received_uids(received)) == sorted(_uids(series))


def test_two_destinations_in_one_output_each_receive_their_datasets(
    storescp_peer: tuple[Address, Path], tmp_path: Path,
) -> None:
    address, received = storescp_peer
    first = synthetic_series(slices=3, rows=8, columns=8)
    second = synthetic_series(slices=4, rows=8, columns=8)
    port = free_port()
    with recording_scp(port) as peer:
        output = DicomOutput([(address, first), (Address("127.0.0.1", port, "RECORDER"), second)])
        assert output.send() is True

    assert sorted(_received_uids(received)) == sorted(_uids(first))
    assert set(peer.accepted()) == _uids(second)
    assert [r.address.port for r in output.report] == [address.port, port]


def test_a_destination_down_at_first_receives_the_series_once_when_it_comes_up(
    tmp_path: Path, series: list, caplog: pytest.LogCaptureFixture,  # type: ignore[type-arg]
) -> None:
    require_peer("dcmtk")
    port = free_port()
    address = Address("127.0.0.1", port, "STORESCP")
    output = DicomOutput([(address, series)], attempts=6, first_delay=0.3, max_delay=1.0, timeout=5)
    outcome: list[bool] = []
    caplog.set_level(logging.WARNING, logger="dicomnode.output.dicom")

    sender = threading.Thread(target=lambda: outcome.append(output.send()))
    sender.start()
    time.sleep(1.0)  # the first attempts find nobody listening
    with storescp(tmp_path / "late", port, ae_title="STORESCP"):
        sender.join(timeout=30)
        received = _received_uids(tmp_path / "late")

    assert outcome == [True]
    assert sorted(received) == sorted(_uids(series))  # every instance, each once
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries and all(str(address) in line for line in retries)
    assert "Connection refused" in retries[0]
    assert output.report[0].attempts == len(retries) + 1


def test_a_retry_sends_only_the_instances_the_peer_did_not_accept(series: list) -> None:  # type: ignore[type-arg]
    refuse_once = _uids(series[::2])
    port = free_port()
    rule = lambda uid, seen: 0xA700 if uid in refuse_once and seen == 1 else 0x0000  # noqa: E731

    with recording_scp(port, status=rule) as peer:
        output = DicomOutput([(Address("127.0.0.1", port, "RECORDER"), series)], first_delay=0.05)
        assert output.send() is True

    sent = peer.sent()
    assert all(sent[uid] == 2 for uid in refuse_once)
    assert all(sent[uid] == 1 for uid in _uids(series) - refuse_once)
    assert all(count == 1 for count in peer.accepted().values())
    assert output.report[0].attempts == 2


def test_after_the_last_attempt_the_refused_instances_go_to_the_outbox_with_destination_and_status(
    tmp_path: Path, series: list, caplog: pytest.LogCaptureFixture,  # type: ignore[type-arg]
) -> None:
    always_refused = _uids(series[:2])
    port = free_port()
    address = Address("127.0.0.1", port, "RECORDER")
    rule = lambda uid, seen: 0xA700 if uid in always_refused else 0x0000  # noqa: E731
    output = DicomOutput([(address, series)], attempts=3, first_delay=0.01)
    output.bind(_context(tmp_path))

    with recording_scp(port, status=rule) as peer:
        assert output.send() is True  # what was refused waits in the outbox

    assert all(peer.sent()[uid] == 3 for uid in always_refused)
    assert all(peer.sent()[uid] == 1 for uid in _uids(series) - always_refused)
    (entry,) = Outbox(tmp_path / "outbox").entries()
    assert entry.output_name == "dicom"
    assert {str(ds.SOPInstanceUID) for ds in entry.datasets()} == always_refused
    assert str(address) in entry.reason and "0xA700" in entry.reason
    report = output.report[0]
    assert report.outbox_entry == entry.id
    assert {f.sop_instance_uid for f in report.failed} == always_refused
    assert {f.status for f in report.failed} == {0xA700}
    assert set(report.accepted) == _uids(series) - always_refused
    assert any("giving up" in r.getMessage() and str(address) in r.getMessage() for r in caplog.records)


def test_datasets_built_without_file_meta_are_kept_in_the_outbox_unchanged(tmp_path: Path) -> None:
    built = synthetic_series(slices=2, rows=8, columns=8)
    for ds in built:
        del ds.file_meta
    output = DicomOutput([(Address("127.0.0.1", free_port(), "NOBODY"), built)], attempts=1)
    output.bind(_context(tmp_path))

    assert output.send() is True

    (entry,) = Outbox(tmp_path / "outbox").entries()
    assert {str(ds.SOPInstanceUID) for ds in entry.datasets()} == _uids(built)
    assert not any(hasattr(ds, "file_meta") for ds in built)


def test_a_peer_that_is_down_puts_the_whole_series_in_the_outbox(tmp_path: Path, series: list) -> None:  # type: ignore[type-arg]
    address = Address("127.0.0.1", free_port(), "NOBODY")
    output = DicomOutput([(address, series)], attempts=2, first_delay=0.01)
    output.bind(_context(tmp_path))

    assert output.send() is True

    (entry,) = Outbox(tmp_path / "outbox").entries()
    assert len(entry.files) == len(series)
    assert (entry.patient_key, entry.job_id) == ("P1", "test-job")
    assert "NOBODY@127.0.0.1" in entry.reason and "Connection refused" in entry.reason
    assert entry.settings["destination"] == {"ip": "127.0.0.1", "port": address.port, "ae_title": "NOBODY"}


def test_an_outbox_entry_is_delivered_by_the_outbox_once_the_peer_is_up(tmp_path: Path, series: list) -> None:  # type: ignore[type-arg]
    from dicomnode.plugins import get_registry

    port = free_port()
    output = DicomOutput([(Address("127.0.0.1", port, "RECORDER"), series)], attempts=1)
    output.bind(_context(tmp_path))
    assert output.send() is True
    outbox = Outbox(tmp_path / "outbox")
    (entry,) = outbox.entries()

    with recording_scp(port) as peer:
        assert outbox.retry(entry, get_registry()) is True

    assert outbox.entries() == []
    assert peer.accepted() == {uid: 1 for uid in _uids(series)}


def test_an_outbox_retry_never_resends_what_the_peer_accepted(tmp_path: Path, series: list) -> None:  # type: ignore[type-arg]
    from dicomnode.plugins import get_registry

    port = free_port()
    output = DicomOutput([(Address("127.0.0.1", port, "RECORDER"), series)], attempts=1)
    output.bind(_context(tmp_path))
    output.send()
    outbox = Outbox(tmp_path / "outbox")
    (entry,) = outbox.entries()
    stubborn = _uids(series[:2])

    with recording_scp(port, status=lambda uid, seen: 0xA700 if uid in stubborn else 0x0000) as peer:
        assert outbox.retry(entry, get_registry()) is False
        (remainder,) = outbox.entries()  # the same entry, holding only what is still undelivered
        assert remainder.id == entry.id and remainder.attempts == 1
        assert {str(ds.SOPInstanceUID) for ds in remainder.datasets()} == stubborn
        with pytest.raises(DimseError, match="0xA700"):
            DicomOutput.retry_outbox_entry(remainder)

    sent = peer.sent()
    assert all(sent[uid] == 1 for uid in _uids(series) - stubborn)
    assert all(sent[uid] == 2 for uid in stubborn)


def test_an_outbox_retry_that_fails_names_the_destination(tmp_path: Path, series: list) -> None:  # type: ignore[type-arg]
    address = Address("127.0.0.1", free_port(), "NOBODY")
    output = DicomOutput([(address, series)], attempts=1)
    output.bind(_context(tmp_path))
    output.send()
    (entry,) = Outbox(tmp_path / "outbox").entries()

    with pytest.raises(DimseError, match=r"6 instance\(s\) not delivered to NOBODY@127\.0\.0\.1"):
        DicomOutput.retry_outbox_entry(entry)


def test_a_peer_that_never_answers_times_out_and_is_retried(series: list) -> None:  # type: ignore[type-arg]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections in the kernel, never speaks DICOM
    try:
        address = Address("127.0.0.1", silent.getsockname()[1], "SILENT")
        output = DicomOutput([(address, series)], attempts=2, first_delay=0.01, timeout=1)
        started = time.monotonic()
        assert output.send() is False
        elapsed = time.monotonic() - started
    finally:
        silent.close()

    assert output.report[0].attempts == 2
    assert str(address) in (output.report[0].error or "")
    assert elapsed < 15


def test_a_dataset_without_sop_instance_uid_is_reported_and_the_rest_delivered(
    storescp_peer: tuple[Address, Path], series: list,  # type: ignore[type-arg]
) -> None:
    address, received = storescp_peer
    broken = synthetic_series(slices=1, rows=8, columns=8)[0]
    del broken.SOPInstanceUID
    output = DicomOutput([(address, [broken, *series])])

    assert output.send() is False

    assert sorted(_received_uids(received)) == sorted(_uids(series))
    (failure,) = output.report[0].failed
    assert "SOPInstanceUID" in failure.reason


def test_without_an_outbox_the_failure_is_logged_as_kept_only_with_the_job(
    series: list, caplog: pytest.LogCaptureFixture,  # type: ignore[type-arg]
) -> None:
    output = DicomOutput([(Address("127.0.0.1", free_port(), "NOBODY"), series)], attempts=1)

    assert output.send() is False

    assert any("there is no outbox" in r.getMessage() for r in caplog.records)
    assert output.report[0].outbox_entry is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ae_title": "A" * 17}, "ae_title must be 1 to 16"),
        ({"attempts": 0}, "attempts must be a whole number of at least 1, got 0"),
        ({"first_delay": -1}, "first_delay must be a number of seconds >= 0"),
        ({"first_delay": 10, "max_delay": 1}, "max_delay .* must not be smaller than first_delay"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0, got 0"),
        ({"tls_ca": "/nonexistent/ca.pem"}, "tls_ca: no such file '/nonexistent/ca.pem'"),
    ],
)
def test_bad_settings_name_the_setting_and_what_is_allowed(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigurationError, match=message):
        DicomOutput([(Address("127.0.0.1", 11112, "PACS"), [])], **kwargs)


def test_a_destination_must_be_an_address_and_datasets() -> None:
    with pytest.raises(ConfigurationError, match="destination 1: expected a dicomnode Address"):
        DicomOutput([(("127.0.0.1", 11112), [])])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="destination 1 must be an \\(Address, datasets\\) pair"):
        DicomOutput([Address("127.0.0.1", 11112, "PACS")])  # type: ignore[list-item]


def test_to_sender_without_a_known_sender_is_an_error_that_says_why(series: list) -> None:  # type: ignore[type-arg]
    output = DicomOutput([], to_sender=True)

    with pytest.raises(ConfigurationError, match="known_endpoints"):
        output.send()


def test_to_sender_also_delivers_every_dataset_to_the_address_the_images_came_from(
    storescp_peer: tuple[Address, Path], tmp_path: Path,
) -> None:
    import attrs

    address, received = storescp_peer
    result = synthetic_series(slices=3, rows=8, columns=8)
    port = free_port()
    with recording_scp(port) as sender_peer:
        sender = Address("127.0.0.1", port, "RECORDER")
        output = DicomOutput([(address, result)], to_sender=True)
        output.bind(attrs.evolve(_context(tmp_path), responding_address=sender))
        assert output.send() is True

    assert sorted(_received_uids(received)) == sorted(_uids(result))
    assert sender_peer.accepted() == {uid: 1 for uid in _uids(result)}


def test_without_an_ae_title_it_calls_with_the_pipelines_ae_title(tmp_path: Path, series: list) -> None:  # type: ignore[type-arg]
    port = free_port()
    with recording_scp(port) as peer:
        alone = DicomOutput([(Address("127.0.0.1", port, "RECORDER"), series[:1])])
        assert alone.send() is True
        bound = DicomOutput([(Address("127.0.0.1", port, "RECORDER"), series[1:2])])
        bound.bind(_context(tmp_path))
        assert bound.send() is True
        chosen = DicomOutput([(Address("127.0.0.1", port, "RECORDER"), series[2:3])], "CHOSEN")
        chosen.bind(_context(tmp_path))
        assert chosen.send() is True

    assert peer.calling_aets == ["DICOMNODE", "PIPELINE", "CHOSEN"]


def test_a_lazy_dataset_is_sent_from_its_file_without_being_loaded(
    storescp_peer: tuple[Address, Path], series: list, tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    from dicomnode.dicom.lazy import LazyDataset

    address, received = storescp_peer
    lazy = [LazyDataset(path) for path in write_series(series, tmp_path / "stored")]

    assert DicomOutput([(address, lazy)]).send() is True

    assert sorted(_received_uids(received)) == sorted(_uids(series))
    assert not any(ds.is_loaded for ds in lazy)
