"""``dicomnode store`` and ``dicomnode echo`` against real peers, and what a user sees on bad input."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp
from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, evt

from dicomnode.cli import main
from dicomnode.cli.store import _ProgressBar
from dicomnode.dicom.synthetic import synthetic_series, write_series


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A DCMTK storescp; yields its port and output folder."""
    require_peer("dcmtk")
    port = free_port()
    with storescp(tmp_path / "received", port):
        yield port, tmp_path / "received"


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """Five CT slices written to nested folders: three in study/a, two in study/a/b."""
    series = synthetic_series(slices=5, rows=16, columns=16)
    return write_series(series[:3], tmp_path / "study" / "a") + write_series(series[3:], tmp_path / "study" / "a" / "b")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# -- echo ------------------------------------------------------------------------------------------


def test_echo_reports_success(scp: tuple[int, Path], capsys: pytest.CaptureFixture[str]) -> None:
    port, _ = scp
    status, out, _ = _run(capsys, "echo", "127.0.0.1", str(port), "--called-aet", "STORESCP")
    assert status == 0
    assert "success (status 0x0000)" in out


def test_echo_to_nobody_says_why_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "echo", "127.0.0.1", str(free_port()))
    assert status == 1
    assert "Connection refused" in err and "Traceback" not in err


def test_echo_with_a_port_out_of_range_names_the_allowed_range(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "echo", "127.0.0.1", "70000")
    assert status == 2
    assert "PORT must be an integer from 1 to 65535, got 70000" in err


def test_echo_with_a_too_long_called_ae_title_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "echo", "127.0.0.1", "104", "--called-aet", "A-VERY-LONG-AE-TITLE")
    assert status == 2
    assert "--called-aet must be 1 to 16" in err


def test_echo_with_a_non_numeric_timeout_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["echo", "127.0.0.1", "104", "--timeout", "soon"])
    assert exit_info.value.code == 2
    assert "must be a number of seconds" in capsys.readouterr().err


# -- store -----------------------------------------------------------------------------------------


def test_store_sends_a_folder_recursively(scp: tuple[int, Path], files: list[Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    port, received = scp
    status, out, _ = _run(capsys, "store", "127.0.0.1", str(port), str(tmp_path / "study"))
    assert status == 0
    assert "sent 5 of 5 file(s)" in out and "0 failed" in out
    assert {dcmread(p).SOPInstanceUID for p in received.iterdir()} == {dcmread(p).SOPInstanceUID for p in files}


def test_store_reports_unreadable_and_missing_paths_by_name_and_sends_the_rest(
        scp: tuple[int, Path], files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, received = scp
    junk = tmp_path / "study" / "a" / "readme.txt"
    junk.write_text("not DICOM")
    missing = tmp_path / "nowhere.dcm"
    status, out, err = _run(capsys, "store", "127.0.0.1", str(port), str(tmp_path / "study"), str(missing))
    assert status == 1
    assert f"FAILED {junk}: not a DICOM file" in out
    assert f"{missing}: no such file or folder" in err
    assert "sent 5 of 6 file(s)" in out
    assert len(list(received.iterdir())) == 5
    assert "Traceback" not in out + err


def test_store_skips_a_dicomdir(scp: tuple[int, Path], files: list[Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    port, _ = scp
    (tmp_path / "study" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    status, out, _ = _run(capsys, "store", "127.0.0.1", str(port), str(tmp_path / "study"))
    assert status == 0 and "sent 5 of 5" in out


def test_store_lists_status_codes_of_refused_instances(files: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    refused = dcmread(files[0]).SOPInstanceUID
    ae = AE(ae_title="PICKY")
    ae.supported_contexts = AllStoragePresentationContexts
    titles: list[tuple[str, str]] = []

    def on_store(event: evt.Event) -> int:
        titles.append((event.assoc.requestor.ae_title, event.assoc.acceptor.ae_title))
        return 0xA700 if event.request.AffectedSOPInstanceUID == refused else 0x0000

    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        status, out, _ = _run(capsys, "store", "127.0.0.1", str(port), *map(str, files),
                              "--calling-aet", "MYNODE", "--called-aet", "PICKY")
    finally:
        server.shutdown()
    assert status == 1
    assert f"FAILED {files[0]}: status 0xA700 Failure: Refused: Out of Resources" in out
    assert "sent 4 of 5 file(s)" in out and "1 failed" in out
    assert set(titles) == {("MYNODE", "PICKY")}


def test_store_to_a_refusing_peer_exits_non_zero_with_the_reason(files: list[Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    require_peer("dcmtk")
    port = free_port()
    with storescp(tmp_path / "received", port, extra=["--refuse"]):
        status, out, err = _run(capsys, "store", "127.0.0.1", str(port), str(files[0]))
    assert status == 1
    assert "rejected the association" in err
    assert "1 not sent" in out


def test_store_of_an_empty_folder_says_there_is_nothing_to_send(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    status, _, err = _run(capsys, "store", "127.0.0.1", "104", str(tmp_path / "empty"))
    assert status == 1 and "no files to send" in err


def test_store_as_a_program_shows_no_traceback_for_a_non_dicom_file(tmp_path: Path) -> None:
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not dicom")
    process = subprocess.run([sys.executable, "-m", "dicomnode", "store", "127.0.0.1", str(free_port()),
                              str(junk)], capture_output=True, text=True, timeout=60)
    assert process.returncode == 1
    assert f"FAILED {junk}: not a DICOM file" in process.stdout
    assert "Traceback" not in process.stderr


# -- the progress bar --------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = _ProgressBar(stream, enabled=True)
        bar(1, 4)
        bar(4, 4)
        bar.close()
    assert terminal.getvalue().endswith(f"\r[{'#' * 30}] 4/4\n")
    assert "1/4" in terminal.getvalue()
    assert pipe.getvalue() == ""
