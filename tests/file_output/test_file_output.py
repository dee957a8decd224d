"""FileOutput writes every dataset under its directory, atomically, whatever the tag values say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError

pytestmark = pytest.mark.plugin("file-output")

try:
    from dicomnode_file_output import FileOutput
except ImportError:  # a session without the plugin deselects every test here (pytestmark)
    pass


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_writes_patient_study_series_instance_layout(tmp_path: Path) -> None:
    series = synthetic_series(slices=3, rows=8, columns=8, patient_id="P1")
    output = FileOutput([(tmp_path / "out", series)])

    assert output.send() is True

    expected = sorted(
        tmp_path / "out" / "P1" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        for ds in series
    )
    assert _files(tmp_path / "out") == expected
    assert sorted(output.report[0].written) == expected


def test_written_files_are_complete_dicom_files_with_the_same_content(tmp_path: Path) -> None:
    series = synthetic_series(slices=2, rows=16, columns=16)
    FileOutput([(tmp_path, series)]).send()

    for ds in series:
        path = next(tmp_path.rglob(f"{ds.SOPInstanceUID}.dcm"))
        read = dcmread(path)
        assert read.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert read.PixelData == ds.PixelData
        assert read.PatientID == ds.PatientID


def test_two_destinations_each_receive_their_own_datasets(tmp_path: Path) -> None:
    first = synthetic_series(slices=2, rows=8, columns=8, patient_id="A")
    second = synthetic_series(slices=3, rows=8, columns=8, patient_id="B")

    output = FileOutput([(tmp_path / "one", first), (str(tmp_path / "two"), second)])

    assert output.send() is True
    assert len(_files(tmp_path / "one")) == 2
    assert len(_files(tmp_path / "two")) == 3
    assert [r.directory for r in output.report] == [tmp_path / "one", tmp_path / "two"]


@pytest.mark.parametrize(
    "patient_id",
    ["../../etc", "/abs", "/etc/passwd", "CON", "nul.txt", "P" * 300, "Jörg^Ærø 患者", "..", ".", "a/../../b", "\\..\\x"],
)
def test_hostile_patient_ids_stay_inside_the_directory(tmp_path: Path, patient_id: str) -> None:
    root = tmp_path / "inside" / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that such values break the VR's rules
        series = synthetic_series(slices=1, rows=8, columns=8, patient_id=patient_id)
    series[0].SpecificCharacterSet = "ISO_IR 192"

    assert FileOutput([(root, series)]).send() is True

    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(everything) == 1
    written = everything[0].resolve()
    assert root.resolve() in written.parents
    patient_folder = written.relative_to(root.resolve()).parts[0]
    assert patient_folder not in {"", ".", "..", "CON", "nul.txt"}
    assert len(patient_folder) <= 64
    assert patient_folder.isascii()
    assert dcmread(written).SOPInstanceUID == series[0].SOPInstanceUID


def test_hostile_uids_stay_inside_the_directory(tmp_path: Path) -> None:
    ds = synthetic_series(slices=1, rows=8, columns=8)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns that these are not valid UIDs: that is the point
        ds.StudyInstanceUID = "../../../study"
        ds.SeriesInstanceUID = "/tmp/series"
        ds.SOPInstanceUID = "../instance"
        root = tmp_path / "out"

        assert FileOutput([(root, [ds])]).send() is True

    (written,) = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written.relative_to(root).parts) == 4


def test_two_patient_ids_that_sanitise_alike_get_different_folders(tmp_path: Path) -> None:
    a = synthetic_series(slices=1, rows=8, columns=8, patient_id="a/b")
    b = synthetic_series(slices=1, rows=8, columns=8, patient_id="a?b")

    FileOutput([(tmp_path, a + b)]).send()

    assert len({p.name for p in tmp_path.iterdir()}) == 2


def test_a_dataset_that_fails_to_encode_leaves_no_file_and_the_others_are_written(tmp_path: Path) -> None:
    good, bad = synthetic_series(slices=2, rows=8, columns=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on assignment; the failure comes when writing
        bad.add_new(0x00291010, "US", "not a number")
    output = FileOutput([(tmp_path, [bad, good])])

    assert output.send() is False

    assert [p.name for p in _files(tmp_path)] == [f"{good.SOPInstanceUID}.dcm"]
    (failure,) = output.report[0].failed
    assert failure.sop_instance_uid == bad.SOPInstanceUID
    assert "not an integer" in failure.reason


def test_a_failed_rewrite_keeps_the_previous_file_intact(tmp_path: Path) -> None:
    (ds,) = synthetic_series(slices=1, rows=8, columns=8)
    FileOutput([(tmp_path, [ds])]).send()
    (path,) = _files(tmp_path)
    before = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.add_new(0x00291010, "US", "not a number")

    assert FileOutput([(tmp_path, [ds])]).send() is False

    assert _files(tmp_path) == [path]
    assert path.read_bytes() == before


_CRASHING_WRITER = textwrap.dedent(
    """
    import sys
    from dicomnode.dicom.synthetic import synthetic_series
    from dicomnode_file_output import FileOutput
    series = synthetic_series(slices=8, rows=512, columns=512)
    print("ready", flush=True)
    while True:  # rewrite the series until killed, so the kill lands in the middle of some write
        FileOutput([(sys.argv[1], series)], fsync=False).send()
    """
)


def test_a_killed_writer_leaves_no_partial_dicom_file(tmp_path: Path) -> None:
    root = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", _CRASHING_WRITER, str(root)], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 30
        while len(list(root.rglob("*.dcm"))) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    finished = list(root.rglob("*.dcm"))
    assert len(finished) == 8
    for path in finished:
        ds = dcmread(path)
        assert len(ds.PixelData) == 512 * 512 * 2
    leftovers = [p for p in _files(root) if p.suffix != ".dcm"]
    assert all(p.name.startswith(".") and p.name.endswith(".partial") for p in leftovers)


def test_existing_overwrite_replaces_the_file(tmp_path: Path) -> None:
    (ds,) = synthetic_series(slices=1, rows=8, columns=8)
    FileOutput([(tmp_path, [ds])]).send()
    ds.SeriesDescription = "second run"

    output = FileOutput([(tmp_path, [ds])], existing="overwrite")

    assert output.send() is True
    (path,) = _files(tmp_path)
    assert dcmread(path).SeriesDescription == "second run"
    assert output.report[0].written == (path,)


def test_existing_keep_leaves_the_file_and_succeeds(tmp_path: Path) -> None:
    (ds,) = synthetic_series(slices=1, rows=8, columns=8, series_description="first run")
    FileOutput([(tmp_path, [ds])]).send()
    ds.SeriesDescription = "second run"

    output = FileOutput([(tmp_path, [ds])], existing="keep")

    assert output.send() is True
    (path,) = _files(tmp_path)
    assert dcmread(path).SeriesDescription == "first run"
    assert output.report[0].kept == (path,)
    assert output.report[0].written == ()


def test_existing_fail_leaves_the_file_and_reports_failure(tmp_path: Path) -> None:
    first, second = synthetic_series(slices=2, rows=8, columns=8, series_description="first run")
    FileOutput([(tmp_path, [first])]).send()
    first.SeriesDescription = "second run"

    output = FileOutput([(tmp_path, [first, second])], existing="fail")

    assert output.send() is False
    assert dcmread(next(tmp_path.rglob(f"{first.SOPInstanceUID}.dcm"))).SeriesDescription == "first run"
    assert next(tmp_path.rglob(f"{second.SOPInstanceUID}.dcm")).exists()
    (failure,) = output.report[0].failed
    assert failure.sop_instance_uid == first.SOPInstanceUID
    assert "exists" in failure.reason


def test_a_dataset_without_file_meta_is_written_as_explicit_little_endian_without_changing_it(
    tmp_path: Path,
) -> None:
    (ds,) = synthetic_series(slices=1, rows=8, columns=8)
    del ds.file_meta

    assert FileOutput([(tmp_path, [ds])]).send() is True

    (path,) = _files(tmp_path)
    read = dcmread(path)
    assert read.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert read.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert not hasattr(ds, "file_meta")


def test_a_dataset_read_as_implicit_vr_keeps_its_encoding(tmp_path: Path) -> None:
    (ds,) = synthetic_series(slices=1, rows=8, columns=8)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    source = tmp_path / "source.dcm"
    ds.save_as(source, enforce_file_format=True)

    assert FileOutput([(tmp_path / "out", [dcmread(source)])]).send() is True

    (path,) = _files(tmp_path / "out")
    assert dcmread(path).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def test_a_dataset_without_sop_instance_uid_is_reported_not_written(tmp_path: Path) -> None:
    (ds,) = synthetic_series(slices=1, rows=8, columns=8)
    del ds.SOPInstanceUID

    output = FileOutput([(tmp_path, [ds])])

    assert output.send() is False
    assert _files(tmp_path) == []
    assert "SOPInstanceUID" in output.report[0].failed[0].reason


def test_an_unknown_existing_policy_names_the_allowed_values() -> None:
    with pytest.raises(ConfigurationError, match=r"'overwrite', 'keep', 'fail'.*'replace'"):
        FileOutput([], existing="replace")  # type: ignore[arg-type]


def test_a_destination_that_is_not_a_pair_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="destination 1 must be a \\(directory, datasets\\) pair"):
        FileOutput([tmp_path])  # type: ignore[list-item]


def test_a_single_dataset_instead_of_a_list_is_refused(tmp_path: Path) -> None:
    (ds,) = synthetic_series(slices=1, rows=8, columns=8)
    with pytest.raises(ConfigurationError, match="list of datasets or files, not a single one"):
        FileOutput([(tmp_path, ds)])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="list of datasets or files, not a single one"):
        FileOutput([(tmp_path, "some/folder")])


def test_an_unwritable_directory_is_reported_as_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    (ds,) = synthetic_series(slices=1, rows=8, columns=8)

    output = FileOutput([(blocker, [ds])], attempts=1)

    assert output.send() is False  # no context, so no outbox to defer to
    assert output.report[0].failed[0].sop_instance_uid == ds.SOPInstanceUID


def test_a_stored_lazy_dataset_is_copied_byte_for_byte_without_being_loaded(tmp_path: Path) -> None:
    from dicomnode.dicom.lazy import LazyDataset
    from dicomnode.dicom.synthetic import write_series

    series = synthetic_series(slices=2, rows=8, columns=8, patient_id="LAZY")
    stored = write_series(series, tmp_path / "stored")
    lazy = [LazyDataset(path) for path in stored]

    assert FileOutput([(tmp_path / "out", lazy)]).send() is True

    for source, ds in zip(stored, lazy):
        (copied,) = (tmp_path / "out").rglob(source.name)
        assert copied.read_bytes() == source.read_bytes()
        assert copied.parent.parent.parent.name == "LAZY"
        assert not ds.is_loaded


def test_dicom_files_given_as_paths_are_copied_into_the_layout(tmp_path: Path) -> None:
    from dicomnode.dicom.synthetic import write_series

    series = synthetic_series(slices=2, rows=8, columns=8, patient_id="FILES")
    stored = write_series(series, tmp_path / "stored")

    output = FileOutput([(tmp_path / "out", [stored[0], str(stored[1])])])

    assert output.send() is True
    for source, ds in zip(stored, series):
        target = tmp_path / "out" / "FILES" / ds.StudyInstanceUID / ds.SeriesInstanceUID / source.name
        assert target.read_bytes() == source.read_bytes()


def test_a_path_that_is_not_dicom_is_reported_by_name(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")

    output = FileOutput([(tmp_path / "out", [junk])])

    assert output.send() is False
    assert str(junk) in output.report[0].failed[0].reason
    assert not (tmp_path / "out").exists() or _files(tmp_path / "out") == []


def test_a_directory_that_cannot_be_written_is_retried_then_kept_in_the_outbox(tmp_path: Path) -> None:
    from dicomnode.plugins import get_registry
    from dicomnode.server.outbox import Outbox
    from dicomnode.testing import output_context

    blocked = tmp_path / "share"
    blocked.write_text("a file where the folder should be: every write fails like an unmounted share")
    series = synthetic_series(slices=3, rows=8, columns=8, patient_id="P1")
    output = FileOutput([(blocked, series)], attempts=2, first_delay=0.01)
    output.bind(output_context(tmp_path / "data", patient_key="P1", output_name="file"))

    assert output.send() is True  # nothing written, nothing lost: deferred to the outbox

    report = output.report[0]
    assert report.attempts == 2 and not report.written and report.outbox_entry is not None
    outbox = Outbox(tmp_path / "data" / "outbox")
    (entry,) = outbox.entries()
    assert entry.id == report.outbox_entry and entry.output_name == "file" and len(entry.files) == 3
    assert outbox.retry(entry, get_registry()) is False  # still blocked

    blocked.unlink()
    assert outbox.retry(outbox.get(entry.id), get_registry()) is True

    assert sorted(path.stem for path in _files(blocked)) == sorted(str(ds.SOPInstanceUID) for ds in series)
    assert outbox.entries() == []


def test_a_failure_that_cannot_pass_is_not_deferred(tmp_path: Path) -> None:
    from dicomnode.testing import output_context

    series = synthetic_series(slices=1, rows=8, columns=8)
    FileOutput([(tmp_path / "out", series)]).send()
    output = FileOutput([(tmp_path / "out", series)], existing="fail", attempts=3, first_delay=0.01)
    output.bind(output_context(tmp_path / "data", output_name="file"))

    assert output.send() is False
    assert output.report[0].outbox_entry is None and output.report[0].attempts == 1
