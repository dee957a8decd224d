"""A historic input declared in a TOML pipeline: ``type = "historic"`` and its own keys."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import storescu
from historic import study, write_today
from node import wait_until
from orthanc import orthanc

from dicomnode.errors import ConfigurationError
from dicomnode.net import Address
from dicomnode.server.toml_config import load_pipeline

pytestmark = pytest.mark.plugin("historic-input")

PROCESS = '''
import json
import os


def record(input_container):
    priors = input_container["history"]
    line = {"patient": input_container.patient_key, "ok": priors.retrieval.ok,
            "priors": {date: {d: len(s) for d, s in series.items()} for date, series in priors.items()}}
    with open(os.path.join(os.path.dirname(__file__), "jobs.jsonl"), "a", encoding="utf-8") as stream:
        stream.write(json.dumps(line) + "\\n")
'''


def _pipeline(folder: Path, pacs_port: int, node_port: int, history: str = "", module: str = "follow_up") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(PROCESS, encoding="utf-8")
    path = folder / "pipeline.toml"
    path.write_text(textwrap.dedent(f"""
        process = "{module}:record"

        [node]
        ae_title = "TOMLHIST"
        ip = "127.0.0.1"
        port = {node_port}
        maintenance_thread = false
        log_level = "WARNING"

        [inputs.today]
        required_values = {{ Modality = "CT" }}
        images = 4

        [inputs.history]
        type = "historic"
        address = {{ ip = "127.0.0.1", port = {pacs_port}, ae_title = "PACS" }}
        timeout = 10
        {history}
        """), encoding="utf-8")
    return path


def test_the_historic_table_sets_the_pacs_and_the_retrieval(tmp_path: Path) -> None:
    pipeline = load_pipeline(_pipeline(tmp_path, 4242, 11112, 'retrieve_mode = "get"\nmodality = "CT"',
                                       module="settings_module"))
    history = pipeline.config.inputs["history"].create()
    assert history.address == Address("127.0.0.1", 4242, "PACS")
    assert (history.retrieve_mode, history.modality, history.timeout) == ("get", "CT", 10)


def test_a_bad_historic_setting_names_the_table_and_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"\[inputs\.history\].*retrieve_mode must be 'move' or 'get', got 'ftp'"):
        load_pipeline(_pipeline(tmp_path, 4242, 11112, 'retrieve_mode = "ftp"', module="bad_mode_module"))


def test_an_address_that_is_not_a_table_says_how_to_write_it(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, 4242, 11112, module="bad_address_module")
    path.write_text(path.read_text().replace('address = { ip = "127.0.0.1", port = 4242, ae_title = "PACS" }',
                                             'address = "PACS@127.0.0.1:4242"'))
    with pytest.raises(ConfigurationError, match=r"\[inputs\.history\] address = .*must be a table \{ip = "):
        load_pipeline(path)


def test_a_toml_follow_up_node_runs_with_the_priors(tmp_path: Path) -> None:
    require_peer("orthanc")
    node_port = free_port()
    with orthanc(tmp_path / "pacs", aet="PACS", modalities={"NODE": ("TOMLHIST", "127.0.0.1", node_port)}) as pacs:
        pacs.upload_datasets(study("T1", "20240105", description="CT 2024"))
        pacs.upload_datasets(study("T2", "20240105", description="CT of another patient"))
        folder = tmp_path / "pipeline"
        node = load_pipeline(_pipeline(folder, pacs.dicom_port, node_port, module="toml_follow_up"))()
        with node:
            _, paths = write_today(tmp_path / "today", "T1")
            assert storescu(node_port, paths, called_aet="TOMLHIST").returncode == 0
            assert wait_until(lambda: (folder / "jobs.jsonl").exists())
            node.wait_for_jobs(30)
    [job] = [json.loads(line) for line in (folder / "jobs.jsonl").read_text().splitlines()]
    assert job == {"patient": "T1", "ok": True, "priors": {"20240105": {"CT 2024": 3}}}
