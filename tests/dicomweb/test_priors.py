"""DicomWebPriors against a real Orthanc with its DICOMweb plugin: priors by QIDO-RS and WADO-RS.

Today's study is sent to the node with DCMTK's storescu, as a scanner would;
the priors come from Orthanc over DICOMweb only (Orthanc does not know the
node as a DICOM modality).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, require_peer
from dcmtk import storescu
from historic import NODE_AE, follow_up_node, shape, study, wait_for_jobs, write_today
from orthanc import OrthancServer, orthanc

from dicomnode.errors import ConfigurationError
from dicomnode.net import Address, QueryLevel
from dicomnode.plugins import get_registry
from dicomnode.server.toml_config import parse_pipeline
from dicomnode_dicomweb import DicomWebPriors, DicomWebSource, WebConnection

pytestmark = pytest.mark.plugin("dicomweb")

UNUSED = Address("127.0.0.1", 9, "UNUSED")  # the DIMSE address the DICOMweb input never uses


@pytest.fixture(scope="module")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    require_peer("orthanc")
    require_peer("orthanc-dicomweb")
    with orthanc(tmp_path_factory.mktemp("pacs"), dicomweb=True) as server:
        yield server


@pytest.fixture
def pacs(orthanc_server: OrthancServer) -> OrthancServer:
    orthanc_server.clear()
    return orthanc_server


def run_follow_up(tmp_path: Path, history: dict[str, Any], patient: str = "P1") -> list[Any]:
    require_peer("dcmtk")
    port = free_port()
    node = follow_up_node(UNUSED, port, history={"timeout": 10.0, **history}, history_base=DicomWebPriors,
                          data_directory=tmp_path / "data")()
    with node:
        _, paths = write_today(tmp_path / "today", patient)
        result = storescu(port, paths, called_aet=NODE_AE)
        assert result.returncode == 0, result.stderr
        return wait_for_jobs(node, 1)


def test_priors_are_found_by_qido_rs_and_retrieved_by_wado_rs(pacs: OrthancServer, tmp_path: Path) -> None:
    pacs.upload_datasets(study("P1", "20240105", description="CT 2024"))
    pacs.upload_datasets(study("P1", "20250105", slices=2, description="CT 2025"))
    pacs.upload_datasets(study("P2", "20250105", description="CT of another patient"))
    [job] = run_follow_up(tmp_path, {"url": pacs.dicomweb_url})
    priors = job["history"]
    assert shape(priors) == {"20240105": {"CT 2024": 3}, "20250105": {"CT 2025": 2}}
    assert priors.retrieval.ok and priors.retrieval.completed == 5
    assert len(job.paths["history"]) == 5  # through the node's ingest: stored like any image


def test_with_a_modality_only_its_series_are_retrieved_series_by_series(pacs: OrthancServer, tmp_path: Path) -> None:
    study_uid = "1.2.826.0.1.3680043.8.498.4242"
    pacs.upload_datasets(study("P1", "20240105", description="CT 2024", study_uid=study_uid))
    pacs.upload_datasets(study("P1", "20240105", description="MR 2024", modality="MR", study_uid=study_uid,
                               series_number=2))
    [job] = run_follow_up(tmp_path, {"url": pacs.dicomweb_url, "modality": "CT"})
    assert shape(job["history"]) == {"20240105": {"CT 2024": 3}}
    assert job["history"].retrieval.targets[0].startswith("SERIES ")


def test_check_query_dataset_decides_at_image_level_too(pacs: OrthancServer, tmp_path: Path) -> None:
    pacs.upload_datasets(study("P1", "20240105", slices=3, description="CT 2024"))

    def first_image_only(self: Any, trigger: Any, response: Any, level: QueryLevel) -> Any:
        from dicomnode_historic_input import Action

        if level is QueryLevel.IMAGE:
            return Action.MOVE if int(response.get("InstanceNumber", 0)) == 1 else Action.SKIP
        return Action.FIND

    [job] = run_follow_up(tmp_path, {"url": pacs.dicomweb_url, "check_query_dataset": first_image_only})
    assert shape(job["history"]) == {"20240105": {"CT 2024": 1}}


def test_a_server_that_is_down_is_a_logged_error_and_the_job_runs_without_history(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="dicomnode.historic"):
        [job] = run_follow_up(tmp_path, {"url": f"http://127.0.0.1:{free_port()}/dicom-web"})
    priors = job["history"]
    assert dict(priors) == {} and priors.retrieval.finished and not priors.retrieval.ok
    assert str(priors.retrieval.error).startswith("QIDO-RS: cannot reach http://127.0.0.1")
    assert any("QIDO-RS: cannot reach" in record.getMessage() for record in caplog.records)


def test_with_retry_a_server_that_stays_down_is_asked_max_attempts_times(tmp_path: Path) -> None:
    [job] = run_follow_up(tmp_path, {"url": f"http://127.0.0.1:{free_port()}", "on_failure": "retry",
                                     "retry_interval": 0.2, "max_attempts": 3})
    assert job["history"].retrieval.attempts == 3


def test_a_server_that_never_answers_ends_in_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        [job] = run_follow_up(tmp_path, {"url": f"http://127.0.0.1:{silent.getsockname()[1]}", "timeout": 1.0})
    assert time.monotonic() - started < 15
    assert "ReadTimeout" in str(job["history"].retrieval.error)


def test_a_refusing_server_is_a_failure_with_its_http_status(tmp_path: Path) -> None:
    require_peer("orthanc")
    require_peer("orthanc-dicomweb")
    with orthanc(tmp_path / "locked", dicomweb=True, credentials=("alice", "wonder")) as pacs:
        source = DicomWebSource(WebConnection(pacs.dicomweb_url))
        with pytest.raises(ConnectionError, match="answered HTTP 401"):
            source.search(study("P1", "20240105")[0], QueryLevel.STUDY)
        allowed = DicomWebSource(WebConnection(pacs.dicomweb_url, username="alice", password="wonder"))
        assert list(allowed.search(study("P1", "20240105")[0], QueryLevel.STUDY)) == []


def test_the_input_is_registered_for_toml_with_its_connection_settings(tmp_path: Path) -> None:
    assert get_registry().input("historic-dicomweb") is DicomWebPriors
    document = {
        "process": "node:record_job",
        "inputs": {"history": {"type": "historic-dicomweb", "url": "https://pacs.example.org/dicom-web",
                               "token": {"env": "PACS_TOKEN"}, "modality": "CT"}},
    }
    config = parse_pipeline(document, Path(__file__).parent.parent / "support").config
    history = config.inputs["history"].create()
    assert isinstance(history, DicomWebPriors) and history.url == "https://pacs.example.org/dicom-web"
    with pytest.raises(ConfigurationError, match="must be an http:// or https:// URL"):
        parse_pipeline({**document, "inputs": {"history": {"type": "historic-dicomweb", "url": "pacs"}}},
                       Path(__file__).parent.parent / "support").config.inputs["history"].create()


def test_a_subclass_with_a_wrong_setting_is_refused_when_defined() -> None:
    with pytest.raises(ConfigurationError, match="Broken: DICOMweb username must be text"):
        type("Broken", (DicomWebPriors,), {"url": "https://pacs.example.org", "username": 42, "password": "x"})
