"""HistoricAbstractInput against a real Orthanc: today's study brings the patient's priors.

One Orthanc per module knows the node (AE ``HISTNODE``) as the modality
``NODE``; each test empties it and loads its own studies. Today's study is
sent to the node with DCMTK's storescu, as a scanner would.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, require_peer
from dcmtk import storescu
from historic import NODE_AE, TODAY, follow_up_node, shape, study, wait_for_jobs, write_today
from node import wait_until
from orthanc import OrthancServer, orthanc

from dicomnode.extension.labels import pseudonym
from dicomnode.net import Address
from dicomnode.server.logs import read_secret
from dicomnode.server.nodes import AbstractThreadedPipeline
from dicomnode_historic_input import HistoricAbstractInput

pytestmark = pytest.mark.plugin("historic-input")


@pytest.fixture(scope="module")
def node_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory, node_port: int) -> Iterator[OrthancServer]:
    require_peer("orthanc")
    with orthanc(tmp_path_factory.mktemp("pacs"), modalities={"NODE": (NODE_AE, "127.0.0.1", node_port)}) as server:
        yield server


@pytest.fixture
def pacs(orthanc_server: OrthancServer, node_port: int) -> OrthancServer:
    """The module's Orthanc, emptied, knowing the node."""
    orthanc_server.clear()
    know_node(orthanc_server, node_port)
    return orthanc_server


def know_node(pacs: OrthancServer, node_port: int) -> None:
    pacs.rest("PUT", "/modalities/NODE", {"AET": NODE_AE, "Host": "127.0.0.1", "Port": node_port})


def forget_node(pacs: OrthancServer) -> None:
    pacs.rest("DELETE", "/modalities/NODE")


def send_today(node_port: int, tmp_path: Path, patient: str) -> str:
    study_uid, paths = write_today(tmp_path / "today", patient)
    result = storescu(node_port, paths, called_aet=NODE_AE)
    assert result.returncode == 0, result.stderr
    return study_uid


def two_priors_and_a_stranger(pacs: OrthancServer) -> None:
    pacs.upload_datasets(study("P1", "20240105", description="CT 2024"))
    pacs.upload_datasets(study("P1", "20250105", slices=2, description="CT 2025"))
    pacs.upload_datasets(study("P2", "20250105", description="CT of another patient"))


def run_follow_up(pacs_address: Address, node_port: int, tmp_path: Path, patient: str = "P1",
                  history: dict[str, Any] | None = None, **settings: Any) -> tuple[Any, list[Any]]:
    node = follow_up_node(pacs_address, node_port, history=history, **settings)()
    with node:
        send_today(node_port, tmp_path, patient)
        jobs = wait_for_jobs(node, 1)
    return node, jobs


# --- the normal case ------------------------------------------------------------------------------


def test_todays_study_brings_exactly_the_two_earlier_studies_of_the_patient(
        pacs: OrthancServer, node_port: int, tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    _, jobs = run_follow_up(pacs.address, node_port, tmp_path)
    assert len(jobs) == 1
    priors = jobs[0]["history"]
    assert shape(priors) == {"20240105": {"CT 2024": 3}, "20250105": {"CT 2025": 2}}
    assert priors.retrieval.ok
    assert priors.retrieval.completed == 5


def test_the_job_runs_once_with_current_and_prior_data_apart(pacs: OrthancServer, node_port: int,
                                                             tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    node = follow_up_node(pacs.address, node_port)()
    with node:
        today_uid = send_today(node_port, tmp_path, "P1")
        jobs = wait_for_jobs(node, 1)
        time.sleep(0.5)  # a second job would have started by now
        assert len(node.jobs) == 1
    job = jobs[0]
    assert {str(ds.StudyInstanceUID) for ds in job["today"]} == {today_uid}
    assert all(str(ds.StudyDate) < TODAY for ds in job.datasets["history"])
    assert job.calling_aet == "STORESCU"  # the priors' sender (the PACS) does not become the job's


def test_the_other_patient_is_left_alone(pacs: OrthancServer, node_port: int, tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    node, jobs = run_follow_up(pacs.address, node_port, tmp_path)
    assert [job.patient_key for job in jobs] == ["P1"]
    assert {str(ds.PatientID) for job in jobs for name in job for ds in job.datasets[name]} == {"P1"}
    assert "P2" not in node.tree


def test_retrieved_priors_stored_in_the_data_directory_are_removed_with_the_job(
        pacs: OrthancServer, node_port: int, tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    _node, jobs = run_follow_up(pacs.address, node_port, tmp_path, data_directory=tmp_path / "data")
    assert len(jobs[0].paths["history"]) == 5
    assert not any(path.exists() for path in jobs[0].paths["history"])


def test_a_restarted_node_restores_today_and_the_priors_and_retrieves_again(
        pacs: OrthancServer, node_port: int, tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    data = tmp_path / "data"
    first = follow_up_node(pacs.address, node_port, data_directory=data, today_images=5)()
    with first:  # five images expected, four sent: the priors arrive, the job waits
        send_today(node_port, tmp_path, "P1")
        assert wait_until(lambda: first.tree["P1"].inputs["history"].validate())
        assert first.tree["P1"].inputs["history"].images == 5
    second = follow_up_node(pacs.address, node_port, data_directory=data, today_images=4)()
    with second:  # the stored images come back in arrival order: today's first image starts the patient
        jobs = wait_for_jobs(second, 1)
    assert jobs[0]["today"] and all(str(ds.StudyDate) == TODAY for ds in jobs[0]["today"])
    assert shape(jobs[0]["history"]) == {"20240105": {"CT 2024": 3}, "20250105": {"CT 2025": 2}}
    assert jobs[0]["history"].retrieval.ok


def test_a_quarantined_job_retried_gets_today_and_the_priors_apart(pacs: OrthancServer, node_port: int,
                                                                   tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    node = follow_up_node(pacs.address, node_port, data_directory=tmp_path / "data")()
    succeed = type(node).process

    def explode_once(self: Any, input_container: Any) -> Any:
        if not getattr(self, "exploded", False):
            self.exploded = True
            raise RuntimeError("model exploded")
        return succeed(self, input_container)

    type(node).process = explode_once  # type: ignore[method-assign]
    with node:
        today_uid = send_today(node_port, tmp_path, "P1")
        assert wait_until(lambda: node.jobs_failed == 1)
    pacs.clear()  # the retry replays the quarantined images; it asks the PACS for nothing
    [entry] = node.quarantine.list()
    assert node.quarantine.retry(entry.id, node)
    [job] = node.jobs
    assert {str(ds.StudyInstanceUID) for ds in job["today"]} == {today_uid}
    assert shape(job["history"]) == {"20240105": {"CT 2024": 3}, "20250105": {"CT 2025": 2}}


def test_a_pipeline_that_acknowledges_before_storing_still_gets_every_prior(
        pacs: OrthancServer, node_port: int, tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    _, jobs = run_follow_up(pacs.address, node_port, tmp_path, base=AbstractThreadedPipeline)
    assert shape(jobs[0]["history"]) == {"20240105": {"CT 2024": 3}, "20250105": {"CT 2025": 2}}


def test_with_a_modality_only_the_series_of_that_modality_are_retrieved(
        pacs: OrthancServer, node_port: int, tmp_path: Path) -> None:
    ct = study("P1", "20250105", description="CT 2025")
    mr = study("P1", "20250105", modality="MR", description="MR 2025", series_number=2,
               study_uid=str(ct[0].StudyInstanceUID))
    pacs.upload_datasets(ct + mr)
    _, jobs = run_follow_up(pacs.address, node_port, tmp_path, history={"modality": "CT"})
    assert shape(jobs[0]["history"]) == {"20250105": {"CT 2025": 3}}
    assert [target.split()[0] for target in jobs[0]["history"].retrieval.targets] == ["SERIES"]


def test_a_prior_study_larger_than_one_association_arrives_whole(pacs: OrthancServer, node_port: int,
                                                                 tmp_path: Path) -> None:
    first = study("P1", "20250105", slices=80, description="series 1")
    uid = str(first[0].StudyInstanceUID)
    big = first + [ds for number in (2, 3) for ds in study(
        "P1", "20250105", slices=80, description=f"series {number}", study_uid=uid, series_number=number)]
    pacs.upload_datasets(big)
    # series by series: three C-MOVEs, each with its own sub-association from the PACS
    _, jobs = run_follow_up(pacs.address, node_port, tmp_path, history={"modality": "CT"})
    assert shape(jobs[0]["history"]) == {"20250105": {"series 1": 80, "series 2": 80, "series 3": 80}}
    assert len(jobs[0]["history"].retrieval.targets) == 3
    assert jobs[0]["history"].retrieval.completed == 240


def test_two_patients_arriving_at_once_each_get_their_own_priors(pacs: OrthancServer, node_port: int,
                                                                 tmp_path: Path) -> None:
    for patient in ("P1", "P3"):
        pacs.upload_datasets(study(patient, "20240105", description=f"{patient} 2024"))
        pacs.upload_datasets(study(patient, "20250105", description=f"{patient} 2025"))
    node = follow_up_node(pacs.address, node_port)()
    with node:
        senders = [threading.Thread(target=send_today, args=(node_port, tmp_path, patient))
                   for patient in ("P1", "P3")]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        jobs = wait_for_jobs(node, 2)
    assert sorted(job.patient_key for job in jobs) == ["P1", "P3"]
    for job in jobs:
        patient = job.patient_key
        assert shape(job["history"]) == {"20240105": {f"{patient} 2024": 3}, "20250105": {f"{patient} 2025": 3}}


@pytest.mark.parametrize("limit", [1, 2])
def test_retrievals_from_one_pacs_take_turns(pacs: OrthancServer, node_port: int, tmp_path: Path,
                                             limit: int) -> None:
    patients = ("P1", "P3", "P4")
    for patient in patients:
        pacs.upload_datasets(study(patient, "20240105", description=f"{patient} 2024"))
    walking: list[str] = []
    most = [0]
    lock = threading.Lock()

    def slow_decision(self: HistoricAbstractInput, trigger: Any, response: Any, level: Any) -> Any:
        with lock:
            walking.append(str(trigger.PatientID))
            most[0] = max(most[0], len(walking))
        time.sleep(0.5)  # long enough for every patient's retrieval to have started
        with lock:
            walking.remove(str(trigger.PatientID))
        return HistoricAbstractInput.check_query_dataset(self, trigger, response, level)

    node = follow_up_node(pacs.address, node_port, history={"max_concurrent_retrievals": limit,
                                                             "check_query_dataset": slow_decision})()
    with node:
        senders = [threading.Thread(target=send_today, args=(node_port, tmp_path / patient, patient))
                   for patient in patients]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        jobs = wait_for_jobs(node, 3)
    assert most[0] == limit
    assert {job.patient_key: shape(job["history"]) for job in jobs} == {
        patient: {"20240105": {f"{patient} 2024": 3}} for patient in patients}


def test_c_get_brings_the_priors_without_registering_the_node_at_the_pacs(
        pacs: OrthancServer, node_port: int, tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    forget_node(pacs)
    _, jobs = run_follow_up(pacs.address, node_port, tmp_path, history={"retrieve_mode": "get"},
                            data_directory=tmp_path / "data")
    priors = jobs[0]["history"]
    assert shape(priors) == {"20240105": {"CT 2024": 3}, "20250105": {"CT 2025": 2}}
    assert priors.retrieval.ok
    assert len(jobs[0].paths["history"]) == 5  # through the node's receive path: stored like any image


# --- failures -------------------------------------------------------------------------------------


def test_a_pacs_that_is_down_is_a_logged_error_and_the_job_runs_without_history(
        node_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nobody = Address("127.0.0.1", free_port(), "PACS")
    with caplog.at_level(logging.ERROR, logger="dicomnode.historic"):
        _, jobs = run_follow_up(nobody, node_port, tmp_path)
    priors = jobs[0]["history"]
    assert dict(priors) == {}
    assert priors.retrieval.finished and not priors.retrieval.ok
    assert "cannot connect" in str(priors.retrieval.error)
    assert any("PACS@127.0.0.1" in record.getMessage() and "cannot connect" in record.getMessage()
               for record in caplog.records)


def test_with_pseudonyms_the_retrieval_lines_name_the_patient_by_its_pseudonym(node_port: int,
                                                                            tmp_path: Path) -> None:
    nobody = Address("127.0.0.1", free_port(), "PACS")
    log, data = tmp_path / "node.log", tmp_path / "data"
    run_follow_up(nobody, node_port, tmp_path, patient="SECRET9", log_output=log, log_level="INFO",
                  data_directory=data, log_patient_keys="pseudonym")
    secret = read_secret(data, create=False)
    assert secret is not None
    text = log.read_text(encoding="utf-8")
    assert "SECRET9" not in text
    label = pseudonym("SECRET9", secret)
    assert f"[patient {label}] priors from PACS@127.0.0.1" in text, text


def test_with_retry_a_pacs_that_stays_down_is_asked_max_attempts_times(node_port: int, tmp_path: Path) -> None:
    nobody = Address("127.0.0.1", free_port(), "PACS")
    _, jobs = run_follow_up(nobody, node_port, tmp_path,
                            history={"on_failure": "retry", "retry_interval": 0.2, "max_attempts": 3})
    assert jobs[0]["history"].retrieval.attempts == 3
    assert not jobs[0]["history"].retrieval.ok


def test_a_pacs_that_never_answers_ends_in_the_timeout(node_port: int, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = Address("127.0.0.1", silent.getsockname()[1], "MUTE")
        started = time.monotonic()
        _, jobs = run_follow_up(mute, node_port, tmp_path, history={"timeout": 1.0})
    assert time.monotonic() - started < 15
    assert "did not answer" in str(jobs[0]["history"].retrieval.error)


def test_a_pacs_refusing_the_move_destination_is_recorded(pacs: OrthancServer, node_port: int,
                                                          tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    forget_node(pacs)
    _, jobs = run_follow_up(pacs.address, node_port, tmp_path)
    priors = jobs[0]["history"]
    assert dict(priors) == {}
    assert "ended the C-MOVE with status 0xC000" in str(priors.retrieval.error)  # Orthanc's answer
    assert f"must know the AE title {NODE_AE} as a C-MOVE destination" in str(priors.retrieval.error)


def test_with_retry_the_priors_arrive_once_the_pacs_knows_the_node(pacs: OrthancServer, node_port: int,
                                                                   tmp_path: Path) -> None:
    two_priors_and_a_stranger(pacs)
    forget_node(pacs)
    node = follow_up_node(pacs.address, node_port,
                          history={"on_failure": "retry", "retry_interval": 1.0, "max_attempts": 5})()
    with node:
        send_today(node_port, tmp_path, "P1")
        time.sleep(0.3)  # the first attempt is refused meanwhile
        assert not node.jobs
        know_node(pacs, node_port)
        jobs = wait_for_jobs(node, 1)
    priors = jobs[0]["history"]
    assert shape(priors) == {"20240105": {"CT 2024": 3}, "20250105": {"CT 2025": 2}}
    assert priors.retrieval.ok and priors.retrieval.attempts >= 2
