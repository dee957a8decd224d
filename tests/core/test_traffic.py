"""Real clinical traffic into a node: many series, one log line per series, completeness, late images.

DCMTK ``storescu`` is the sender where the behaviour of a real sender
matters (it stops at the first failure status); pynetdicom through
``send_datasets`` elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_peer
from dcmtk import storescu
from node import wait_until
from pydicom import Dataset
from traffic import LargestCT, Recorder, ThinCT, ct_study

from dicomnode.dicom.synthetic import write_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.outputs import PipelineOutput
from dicomnode.net import send_datasets


@pytest.fixture(autouse=True)
def _fresh_jobs() -> Iterator[None]:
    """Each test sees only its own jobs."""
    Recorder.jobs = []
    yield
    Recorder.jobs = []


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if text in record.getMessage()]


def test_storescu_sends_a_multi_series_study_in_one_association_and_the_largest_is_processed_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_peer("dcmtk")
    study = ct_study()
    paths = [path for name, series in study.items() for path in write_series(series, tmp_path / name)]
    with caplog.at_level(logging.INFO, logger="dicomnode"), Recorder(data_directory=tmp_path / "data") as node:
        sent = storescu(node.port, paths, called_aet="TRAFFIC")
        assert sent.returncode == 0, sent.stderr
        assert wait_until(lambda: len(Recorder.jobs) == 1)
        assert node.wait_for_jobs(20)
        time.sleep(0.2)
        assert Recorder.jobs == [({str(study["thin"][0].SeriesInstanceUID)}, 12)]
        assert list((tmp_path / "data" / "incoming").rglob("*.dcm")) == []  # every series' files are gone
    dropped = _lines(caplog, "dropped: series_selection 'largest' chose")
    assert len(dropped) == 2


def test_images_no_input_wants_are_acknowledged_with_one_line_per_series(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_peer("dcmtk")
    study = ct_study()
    paths = [path for name, series in study.items() for path in write_series(series, tmp_path / name)]
    with caplog.at_level(logging.INFO, logger="dicomnode"), Recorder(input={"CT": ThinCT}) as node:
        sent = storescu(node.port, paths, called_aet="TRAFFIC")
        assert sent.returncode == 0, sent.stderr
        assert wait_until(lambda: len(Recorder.jobs) == 1) and node.wait_for_jobs(20)
    assert Recorder.jobs == [({str(study["thin"][0].SeriesInstanceUID)}, 12)]
    discarded = _lines(caplog, "discarded in this association")
    assert len(discarded) == 2, discarded
    scout_uid = study["scout"][0].SeriesInstanceUID
    [scout_line] = [line for line in discarded if scout_uid in line]
    assert scout_line.startswith("[patient TRAFFIC from STORESCU] 2 instances of series")
    assert "ThinCT requires SliceThickness" in scout_line
    assert not _lines(caplog, "C-STORE")  # nothing per instance


def test_with_the_failure_policy_storescu_stops_at_the_first_refusal(tmp_path: Path) -> None:
    require_peer("dcmtk")
    study = ct_study()
    scout, thin = write_series(study["scout"], tmp_path / "a"), write_series(study["thin"], tmp_path / "b")
    with Recorder(input={"CT": ThinCT}, rejection_policy="failure", stable_time=0.3) as node:
        sent = storescu(node.port, [*scout, *thin], called_aet="TRAFFIC")
        assert sent.returncode != 0
        time.sleep(0.5)
        assert "TRAFFIC" not in node.tree  # nothing after the refused scout arrived


# --- completeness across associations ------------------------------------------------


class AnnouncedCT(LargestCT):
    completeness = "announced"


def _announce(series: list[Dataset]) -> list[Dataset]:
    for image in series:
        image.ImagesInAcquisition = len(series)
    return series


def test_a_series_sent_in_two_associations_with_a_long_pause_is_completed_by_content(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_peer("dcmtk")
    series = _announce(ct_study()["thin"])
    first, second = write_series(series[:7], tmp_path / "a"), write_series(series[7:], tmp_path / "b")
    with caplog.at_level(logging.INFO, logger="dicomnode"), Recorder(
            input={"CT": AnnouncedCT}, stable_time=0.2, maintenance_thread=True) as node:
        assert storescu(node.port, first, called_aet="TRAFFIC").returncode == 0
        time.sleep(1.0)  # five stable times: a timer would have started the job with 7 images
        assert Recorder.jobs == []
        assert node.waiting()["TRAFFIC"].startswith(
            f"CT: 7 of 12 announced instances of series {series[0].SeriesInstanceUID} (ImagesInAcquisition)")
        assert storescu(node.port, second, called_aet="TRAFFIC").returncode == 0
        assert wait_until(lambda: len(Recorder.jobs) == 1) and node.wait_for_jobs(20)
    assert Recorder.jobs == [({str(series[0].SeriesInstanceUID)}, 12)]
    assert _lines(caplog, "[patient TRAFFIC] waiting: CT: 7 of 12 announced instances")


def test_a_sender_with_an_association_per_image_gets_one_waiting_line_not_one_per_image(
        caplog: pytest.LogCaptureFixture) -> None:
    series = _announce(ct_study()["thin"])
    with caplog.at_level(logging.INFO, logger="dicomnode"), Recorder(input={"CT": AnnouncedCT}) as node:
        for image in series[:5]:
            assert send_datasets(node.address, [image]).ok
        assert node.wait_for_jobs(20)
    assert len(_lines(caplog, "[patient TRAFFIC] waiting:")) == 1


def test_without_announced_counts_the_stable_time_decides(tmp_path: Path) -> None:
    series = ct_study()["thin"]
    with Recorder(input={"CT": AnnouncedCT}, stable_time=0.3) as node:
        assert send_datasets(node.address, series[:5]).ok
        assert wait_until(lambda: len(Recorder.jobs) == 1, timeout=10) and node.wait_for_jobs(20)
    assert Recorder.jobs == [({str(series[0].SeriesInstanceUID)}, 5)]


# --- late images ---------------------------------------------------------------------


def _late_setup(node: Recorder, series: list[Dataset]) -> None:
    assert send_datasets(node.address, series[:8]).ok
    assert wait_until(lambda: len(Recorder.jobs) == 1) and node.wait_for_jobs(20)


def test_late_images_start_a_new_job_by_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    series = ct_study()["thin"]
    with caplog.at_level(logging.INFO, logger="dicomnode"), Recorder() as node:
        _late_setup(node, series)
        assert send_datasets(node.address, series[8:]).ok
        assert wait_until(lambda: len(Recorder.jobs) == 2) and node.wait_for_jobs(20)
    assert [count for _, count in Recorder.jobs] == [8, 4]
    [line] = _lines(caplog, "late (late_images 'new_job'): a new job")
    assert "4 instances of series" in line and "their study went to job" in line


def test_late_images_can_be_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    series = ct_study()["thin"]
    with caplog.at_level(logging.INFO, logger="dicomnode"), Recorder(
            late_images="ignore", data_directory=tmp_path / "data") as node:
        _late_setup(node, series)
        assert send_datasets(node.address, series[8:]).ok
        assert node.wait_for_jobs(20)
        time.sleep(0.2)
        assert len(node.tree) == 0
    assert [count for _, count in Recorder.jobs] == [8]
    assert list((tmp_path / "data" / "incoming").rglob("*.dcm")) == []
    assert _lines(caplog, "4 instances of series")[0].endswith(
        "ignored (late_images 'ignore') in this association: their study went to "
        f"job {_job_id(caplog)} (finished 0 s ago)")


def _job_id(caplog: pytest.LogCaptureFixture) -> str:
    [line] = [r.getMessage() for r in caplog.records if " started: " in r.getMessage()][:1]
    return line.split("job ", 1)[1].split(" ", 1)[0]


@pytest.mark.parametrize("data_directory", [True, False])
def test_late_images_can_rerun_the_job_with_the_earlier_images(tmp_path: Path, data_directory: bool) -> None:
    series = ct_study()["thin"]
    options: dict[str, Any] = {"late_images": "rerun"}
    if data_directory:
        options["data_directory"] = tmp_path / "data"
    with Recorder(**options) as node:
        _late_setup(node, series)
        if data_directory:
            assert len(list((tmp_path / "data" / "retained").rglob("*.dcm"))) == 8
        assert send_datasets(node.address, series[8:] + series[:1]).ok  # one sent again: counted once
        assert wait_until(lambda: len(Recorder.jobs) == 2) and node.wait_for_jobs(20)
        if data_directory:
            assert list((tmp_path / "data" / "incoming").rglob("*.dcm")) == []
            assert len(list((tmp_path / "data" / "retained").rglob("*.dcm"))) == 12
    assert [count for _, count in Recorder.jobs] == [8, 12]


def test_a_rerun_waits_for_the_running_job(tmp_path: Path) -> None:
    class Slow(Recorder):
        def process(self, input_container: InputContainer) -> PipelineOutput:
            time.sleep(0.6 if not type(self).jobs else 0)
            return super().process(input_container)

    series = ct_study()["thin"]
    with Slow(late_images="rerun") as node:
        assert send_datasets(node.address, series[:8]).ok
        assert wait_until(lambda: node.jobs_in_flight == 1)
        assert send_datasets(node.address, series[8:]).ok
        time.sleep(0.1)
        assert "waiting for job" in node.waiting()["TRAFFIC"]
        assert wait_until(lambda: len(Recorder.jobs) == 2) and node.wait_for_jobs(20)
    assert [count for _, count in Recorder.jobs] == [8, 12]


def test_the_window_forgets_finished_jobs(tmp_path: Path) -> None:
    series = ct_study()["thin"]
    with Recorder(late_images="rerun", late_images_window=0.2, data_directory=tmp_path / "data") as node:
        _late_setup(node, series)
        time.sleep(0.3)
        assert node.late_jobs.prune() == 1
        assert list((tmp_path / "data" / "retained").rglob("*.dcm")) == []
        assert send_datasets(node.address, series[8:]).ok
        assert wait_until(lambda: len(Recorder.jobs) == 2) and node.wait_for_jobs(20)
    assert [count for _, count in Recorder.jobs] == [8, 4]
