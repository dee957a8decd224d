"""A PACS sends a node a whole study: Orthanc's REST store job, and completeness asked of Orthanc."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_peer
from dcmtk import storescu
from node import wait_until
from orthanc import OrthancError, OrthancServer, orthanc
from traffic import LargestCT, Recorder, ThinCT, ct_study

from dicomnode.dicom.synthetic import write_series
from dicomnode.net import Address


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    require_peer("orthanc")
    with orthanc(tmp_path_factory.mktemp("pacs")) as server:
        yield server


@pytest.fixture(autouse=True)
def _empty(pacs: OrthancServer) -> Iterator[None]:
    pacs.clear()
    Recorder.jobs = []
    yield
    Recorder.jobs = []


def _study_in(pacs: OrthancServer, patient_id: str = "PACS1") -> tuple[dict[str, list], str]:
    study = ct_study(patient_id=patient_id)
    for series in study.values():
        pacs.upload_datasets(series)
    [orthanc_study] = pacs.rest("GET", "/studies")
    return study, orthanc_study


def _point_at(pacs: OrthancServer, node: Recorder) -> None:
    pacs.rest("PUT", "/modalities/NODE", {"AET": node.config.ae_title, "Host": "127.0.0.1", "Port": node.port})


def test_orthanc_sends_a_whole_study_with_0_failures_and_the_selected_series_is_processed_once(
        pacs: OrthancServer) -> None:
    study, orthanc_study = _study_in(pacs)
    with Recorder() as node:
        _point_at(pacs, node)
        answer = pacs.store_to_modality("NODE", [orthanc_study])
        assert answer["FailedInstancesCount"] == 0 and answer["InstancesCount"] == 18
        assert wait_until(lambda: len(Recorder.jobs) == 1) and node.wait_for_jobs(20)
        time.sleep(0.3)
    assert Recorder.jobs == [({str(study["thin"][0].SeriesInstanceUID)}, 12)]


def test_with_the_failure_policy_orthancs_store_job_fails_at_the_first_refusal(pacs: OrthancServer) -> None:
    _, orthanc_study = _study_in(pacs)
    with Recorder(input={"CT": ThinCT}, rejection_policy="failure") as node:
        _point_at(pacs, node)
        with pytest.raises(OrthancError, match="HTTP 500"):
            pacs.store_to_modality("NODE", [orthanc_study])


class AskedCT(LargestCT):
    completeness = "query"
    query_interval = 0.2


def test_completeness_asked_of_the_pacs_waits_for_every_series_it_holds(
        pacs: OrthancServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_peer("dcmtk")
    study, _ = _study_in(pacs)
    # the node receives the study from a sender of its own, in two associations; Orthanc knows it whole
    first = write_series(study["scout"] + study["thin"][:5], tmp_path / "first")
    second = write_series(study["thin"][5:] + study["thick"], tmp_path / "second")
    endpoints = {"ORTHANC": pacs.address}
    with caplog.at_level(logging.INFO, logger="dicomnode"), Recorder(
            input={"CT": AskedCT.configured(query_endpoint="ORTHANC")}, known_endpoints=endpoints,
            stable_time=0.1, maintenance_thread=True) as node:
        assert storescu(node.port, first, called_aet="TRAFFIC").returncode == 0
        assert wait_until(lambda: "at ORTHANC" in node.waiting().get("PACS1", ""), timeout=10)
        time.sleep(0.5)  # many stable times
        assert Recorder.jobs == []
        waiting = node.waiting()["PACS1"]
        assert "0 of 4 instances of series" in waiting or "5 of 12 instances of series" in waiting, waiting
        assert storescu(node.port, second, called_aet="TRAFFIC").returncode == 0
        assert wait_until(lambda: len(Recorder.jobs) == 1) and node.wait_for_jobs(20)
        assert node.pacs_counts is not None and node.pacs_counts.questions >= 2
    assert Recorder.jobs == [({str(study["thin"][0].SeriesInstanceUID)}, 12)]


def test_the_sending_pacs_is_asked_when_it_is_a_known_endpoint(pacs: OrthancServer) -> None:
    study, orthanc_study = _study_in(pacs)
    with Recorder(input={"CT": AskedCT}, known_endpoints={pacs.aet: pacs.address}, stable_time=30) as node:
        _point_at(pacs, node)
        assert pacs.store_to_modality("NODE", [orthanc_study])["FailedInstancesCount"] == 0
        # complete by the PACS's answer, long before the 30 s stable time
        assert wait_until(lambda: len(Recorder.jobs) == 1, timeout=10) and node.wait_for_jobs(20)
    assert Recorder.jobs == [({str(study["thin"][0].SeriesInstanceUID)}, 12)]


def test_a_pacs_that_does_not_know_the_study_leaves_the_stable_time_to_decide(pacs: OrthancServer) -> None:
    from dicomnode.net import send_datasets

    series = ct_study(patient_id="UNKNOWN")["thin"]
    with Recorder(input={"CT": AskedCT.configured(query_endpoint="ORTHANC")},
                  known_endpoints={"ORTHANC": pacs.address}, stable_time=0.3, maintenance_thread=True) as node:
        assert send_datasets(node.address, series[:4]).ok
        assert wait_until(lambda: "does not know study" in node.waiting().get("UNKNOWN", "ready"), timeout=10)
        assert wait_until(lambda: len(Recorder.jobs) == 1, timeout=10) and node.wait_for_jobs(20)
    assert Recorder.jobs == [({str(series[0].SeriesInstanceUID)}, 4)]


def test_an_unknown_query_endpoint_is_a_configuration_error() -> None:
    from dicomnode.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="query_endpoint 'PACS' is not a known endpoint"):
        Recorder(input={"CT": AskedCT.configured(query_endpoint="PACS")},
                 known_endpoints={"ORTHANC": Address("127.0.0.1", 4242, "ORTHANC")})


def test_images_received_before_a_restart_count_for_the_pacs_question(pacs: OrthancServer, tmp_path: Path) -> None:
    from dicomnode.net import send_datasets

    study, _ = _study_in(pacs, patient_id="RESTART")
    options = {"input": {"CT": AskedCT.configured(query_endpoint="ORTHANC")},
               "known_endpoints": {"ORTHANC": pacs.address}, "data_directory": tmp_path / "data"}
    every = [image for series in study.values() for image in series]
    with Recorder(**options) as node:
        assert send_datasets(node.address, every[:10]).ok
        assert wait_until(lambda: "at ORTHANC" in node.waiting().get("RESTART", ""), timeout=10)
    with Recorder(**options) as node:
        assert node.wait_for_restore(10)
        assert node.tree_restored == 10
        assert send_datasets(node.address, every[10:]).ok
        assert wait_until(lambda: len(Recorder.jobs) == 1, timeout=10) and node.wait_for_jobs(20)
    assert Recorder.jobs == [({str(study["thin"][0].SeriesInstanceUID)}, 12)]
