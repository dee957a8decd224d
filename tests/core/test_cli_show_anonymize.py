"""``dicomnode show`` and ``dicomnode anonymize`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence

from dicomnode.cli import main
from dicomnode.dicom.synthetic import synthetic_series, write_series

Run = Callable[..., subprocess.CompletedProcess[str]]


def dicomnode_process(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a new process."""
    return subprocess.run([sys.executable, "-m", "dicomnode", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def dicomnode(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the command line in this process (what ``dicomnode ARGS`` does, without the start-up)."""

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        status = main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(map(str, args)), status, out, err)

    return run


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    dataset = synthetic_series(slices=1, rows=512, columns=512, patient_id="SHOW1")[0]
    item = Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    dataset.SourceImageSequence = Sequence([item])
    return write_series([dataset], tmp_path / "in")[0]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    source = tmp_path / "study"
    write_series(synthetic_series(slices=3, rows=4, columns=4, patient_id="../../etc"), source / "ct")
    write_series(synthetic_series(slices=2, rows=4, columns=4, patient_id="P2", modality="MR"), source / "mr")
    return source


# -- show ----------------------------------------------------------------------------------


def test_show_prints_keywords_and_values(ct_file: Path, dicomnode: Run) -> None:
    result = dicomnode("show", ct_file)
    assert result.returncode == 0, result.stderr
    assert "(0010,0020) PatientID" in result.stdout
    assert "SHOW1" in result.stdout
    assert "Explicit VR Little Endian" in result.stdout


def test_show_summarises_pixel_data(ct_file: Path, dicomnode: Run) -> None:
    result = dicomnode("show", ct_file)
    line = next(line for line in result.stdout.splitlines() if "PixelData" in line)
    assert line.endswith("<512x512 uint16, 524288 bytes>")


def test_show_indents_sequence_items(ct_file: Path, dicomnode: Run) -> None:
    lines = dicomnode("show", ct_file).stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "SourceImageSequence" in line)
    assert lines[start].rstrip().endswith("1 item")
    indent = len(lines[start]) - len(lines[start].lstrip())
    assert lines[start + 1].strip() == "item 1"
    assert "ReferencedSOPClassUID" in lines[start + 2]
    assert len(lines[start + 2]) - len(lines[start + 2].lstrip()) > indent


def test_show_no_meta_leaves_out_the_file_meta(ct_file: Path, dicomnode: Run) -> None:
    assert "TransferSyntaxUID" not in dicomnode("show", "--no-meta", ct_file).stdout


def test_show_cuts_long_values(tmp_path: Path, dicomnode: Run) -> None:
    dataset = synthetic_series(slices=1, rows=2, columns=2)[0]
    dataset.ImageComments = "x" * 500
    path = write_series([dataset], tmp_path)[0]
    line = next(line for line in dicomnode("show", "--width", "40", path).stdout.splitlines()
                if "ImageComments" in line)
    assert line.endswith("x" * 39 + "…")


@pytest.mark.parametrize("content", [b"hello, not DICOM\n", b"", b"\0" * 200])
def test_show_of_a_non_dicom_file_is_one_line_and_exit_1(tmp_path: Path, content: bytes, dicomnode: Run) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    result = dicomnode("show", path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"dicomnode show: error: {path} is not a DICOM file: it lacks the 'DICM' marker after the 128-byte preamble"
    ]


def test_show_of_a_truncated_file_says_so(ct_file: Path, tmp_path: Path, dicomnode: Run) -> None:
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(ct_file.read_bytes()[:-1000])
    result = dicomnode("show", truncated)
    assert result.returncode == 1
    assert "is truncated" in result.stderr and "Traceback" not in result.stderr


def test_show_of_a_missing_file_is_one_line(tmp_path: Path, dicomnode: Run) -> None:
    result = dicomnode("show", tmp_path / "gone.dcm")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "gone.dcm" in result.stderr and "Traceback" not in result.stderr


def test_show_force_reads_a_bare_dataset_without_file_header(tmp_path: Path, dicomnode: Run) -> None:
    dataset = synthetic_series(slices=1, rows=2, columns=2, patient_id="BARE1")[0]
    del dataset.file_meta
    path = tmp_path / "bare.dcm"
    dataset.save_as(path, implicit_vr=False, little_endian=True)
    assert not path.read_bytes().startswith(b"\0" * 128)
    assert dicomnode("show", path).returncode == 1
    result = dicomnode("show", "--force", path)
    assert result.returncode == 0, result.stderr
    assert "BARE1" in result.stdout


def test_show_force_still_refuses_text(tmp_path: Path, dicomnode: Run) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    result = dicomnode("show", "--force", path)
    assert result.returncode == 1
    assert "is not a DICOM file" in result.stderr


def test_show_goes_on_after_a_bad_file(ct_file: Path, tmp_path: Path, dicomnode: Run) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_text("no")
    result = dicomnode("show", bad, ct_file)
    assert result.returncode == 1
    assert "SHOW1" in result.stdout and "bad.dcm" in result.stderr


# -- anonymize -----------------------------------------------------------------------------


def test_anonymize_a_folder_writes_the_tree_layout(study: Path, tmp_path: Path, dicomnode: Run) -> None:
    out = tmp_path / "out"
    result = dicomnode("anonymize", study, out)
    assert result.returncode == 0, result.stderr
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 5
    assert {path.relative_to(out).parts[0] for path in files} == {"ANON0001", "ANON0002"}
    for path in files:
        dataset = dcmread(path)
        assert dataset.PatientIdentityRemoved == "YES"
        assert path.name == f"{dataset.SOPInstanceUID}.dcm"
    assert "anonymized 5 file(s)" in result.stderr


def test_anonymize_writes_the_mapping_beside_out_readable_by_its_owner_only(study: Path, tmp_path: Path, dicomnode: Run) -> None:
    dicomnode("anonymize", study, tmp_path / "out")
    mapping = tmp_path / "out.mapping.json"
    assert json.loads(mapping.read_text())["tables"]["PatientID"] == {"../../etc": "ANON0001", "P2": "ANON0002"}
    if os.name == "posix":
        assert mapping.stat().st_mode & 0o077 == 0


def test_an_existing_mapping_is_continued(study: Path, tmp_path: Path, dicomnode: Run) -> None:
    mapping = tmp_path / "mapping.json"
    dicomnode("anonymize", study / "ct", tmp_path / "first", "--mapping", mapping)
    dicomnode("anonymize", study, tmp_path / "second", "--mapping", mapping)
    first = {dcmread(p).SOPInstanceUID for p in (tmp_path / "first").rglob("*.dcm")}
    second = {dcmread(p).SOPInstanceUID for p in (tmp_path / "second").rglob("*.dcm")}
    assert first <= second and len(second) == 5


def test_reverse_restores_the_identifiers(study: Path, tmp_path: Path, dicomnode: Run) -> None:
    mapping = tmp_path / "mapping.json"
    dicomnode("anonymize", study, tmp_path / "anon", "--mapping", mapping)
    result = dicomnode("anonymize", tmp_path / "anon", tmp_path / "back", "--mapping", mapping, "--reverse")
    assert result.returncode == 0, result.stderr
    originals = {dcmread(p).SOPInstanceUID: dcmread(p).PatientID for p in study.rglob("*.dcm")}
    restored = {dcmread(p).SOPInstanceUID: dcmread(p).PatientID for p in (tmp_path / "back").rglob("*.dcm")}
    assert restored == originals


def test_anonymize_a_single_file_to_a_file(ct_file: Path, tmp_path: Path, dicomnode: Run) -> None:
    result = dicomnode("anonymize", ct_file, tmp_path / "anon.dcm", "--keep", "PatientSex")
    assert result.returncode == 0, result.stderr
    dataset = dcmread(tmp_path / "anon.dcm")
    assert dataset.PatientID == "ANON0001" and dataset.PatientSex == "O"


def test_anonymize_skips_files_that_are_not_dicom_and_exits_1(study: Path, tmp_path: Path, dicomnode: Run) -> None:
    (study / "README.txt").write_text("scanner export")
    result = dicomnode("anonymize", study, tmp_path / "out")
    assert result.returncode == 1
    assert "README.txt is not a DICOM file" in result.stderr
    assert "5 file(s)" in result.stderr and "1 file(s) skipped" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 5


def test_anonymize_of_one_unreadable_file_is_one_line(tmp_path: Path, dicomnode: Run) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_text("no")
    result = dicomnode("anonymize", bad, tmp_path / "out.dcm")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"dicomnode anonymize: error: {bad} is not a DICOM file: it lacks the 'DICM' marker after the 128-byte preamble"
    ]
    assert not (tmp_path / "out.dcm.mapping.json").exists()


@pytest.mark.parametrize(("arguments", "message"), [
    (["{study}/missing", "{tmp}/out"], "does not exist"),
    (["{study}", "{study}/inside"], "must not be inside IN"),
    (["{study}", "{tmp}/out", "--mapping", "{tmp}/out/mapping.json"], "must not be inside OUT"),
    (["{study}", "{tmp}/out", "--keep", "Modality"], "keep got Modality"),
    (["{study}", "{tmp}/out", "--reverse"], "--reverse needs the mapping"),
])
def test_anonymize_refuses_bad_arguments_clearly(study: Path, tmp_path: Path, arguments: list[str],
                                                 message: str, dicomnode: Run) -> None:
    result = dicomnode("anonymize", *[a.format(study=study, tmp=tmp_path) for a in arguments])
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_anonymize_refuses_a_mapping_that_is_not_one(study: Path, tmp_path: Path, dicomnode: Run) -> None:
    mapping = tmp_path / "mapping.json"
    mapping.write_text('{"something": "else"}')
    result = dicomnode("anonymize", study, tmp_path / "out", "--mapping", mapping)
    assert result.returncode == 1
    assert "not an identity mapping" in result.stderr


# -- the installed command, in its own process --------------------------------------------


def test_the_real_show_command_reports_a_bad_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not DICOM")
    result = dicomnode_process("show", path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"dicomnode show: error: {path} is not a DICOM file: it lacks the 'DICM' marker after the 128-byte preamble"
    ]


def test_the_real_anonymize_command_runs_end_to_end(study: Path, tmp_path: Path) -> None:
    (study / "notes.txt").write_text("not DICOM")
    result = dicomnode_process("anonymize", study, tmp_path / "out")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 5
