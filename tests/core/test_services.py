"""Services: servers a plugin runs alongside the node, switched on by the setting ``services``.

The example third-party plugin (installed in every session) provides the
service ``example-folder``, which ingests the DICOM files dropped into a
folder; these tests run it in a real node.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from node import CT, RecordingNode, read_jobs, wait_until, write_patient

from dicomnode.errors import ConfigurationError
from dicomnode.extension.services import Service
from dicomnode.plugins import ServiceSpec, get_registry
from dicomnode.server.toml_config import parse_pipeline


def _service_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("service-")]


def test_a_listed_service_starts_with_the_node_and_feeds_its_ingest(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    record = tmp_path / "jobs.jsonl"
    monkeypatch.setenv("DICOMNODE_TEST_RECORD", str(record))
    with RecordingNode(services={"example-folder": {"directory": str(drop), "interval": 0.05}},
                       data_directory=tmp_path / "data") as node:
        assert node.services["example-folder"].name == "example-folder"
        for path in write_patient(tmp_path / "series", "DROPPED", slices=CT.expected):
            shutil.copy(path, drop / path.name)
        assert wait_until(lambda: read_jobs(record), timeout=15)
        assert node.wait_for_jobs(15)
    assert read_jobs(record)[0]["patient"] == "DROPPED"
    assert list(drop.iterdir()) == []  # every file was stored by the node, then removed
    assert _service_threads() == []  # close() stopped the service


def test_an_instance_the_node_refuses_is_refused_through_the_service_too(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    mr = write_patient(tmp_path / "mr", "MR1", slices=1, modality="MR")[0]
    settings = {"example-folder": {"directory": str(drop), "interval": 0.05}}
    with RecordingNode(services=settings, rejection_policy="failure"):
        shutil.copy(mr, drop / "mr.dcm")
        assert wait_until(lambda: (drop / "mr.dcm.refused").exists(), timeout=10)
    with RecordingNode(services=settings):  # rejection_policy "discard", the default: acknowledged and dropped
        shutil.copy(mr, drop / "mr2.dcm")
        assert wait_until(lambda: not (drop / "mr2.dcm").exists(), timeout=10)
    assert sorted(path.name for path in drop.iterdir()) == ["mr.dcm.refused"]


def test_a_service_nobody_provides_is_a_configuration_error_naming_what_is_available() -> None:
    with pytest.raises(ConfigurationError, match=r"'services' names 'no-such-service'.*example-folder"):
        RecordingNode(services={"no-such-service": {}})


def test_a_bad_setting_of_a_service_is_an_error_before_anything_listens(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"services\['example-folder'\].*unknown setting\(s\) \['dirctory'\]"):
        RecordingNode(services={"example-folder": {"dirctory": str(tmp_path)}})
    with pytest.raises(ConfigurationError, match=r"'interval' must be a positive number of seconds, got -1"):
        RecordingNode(services={"example-folder": {"directory": str(tmp_path), "interval": -1}})


def test_the_services_setting_must_be_a_table_of_tables() -> None:
    with pytest.raises(ConfigurationError, match="setting 'services' must be a table"):
        RecordingNode(services=["example-folder"])
    with pytest.raises(ConfigurationError, match=r"services\['example-folder'\].*must be a table"):
        RecordingNode(services={"example-folder": "on"})


def test_a_service_that_cannot_start_fails_the_open_and_leaves_nothing_running(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    node = RecordingNode(services={"example-folder": {"directory": str(drop)}})
    drop.rmdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        node.open(blocking=False)
    assert not node.is_open
    assert _service_threads() == []


def test_services_come_from_a_toml_pipeline(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    document = {
        "process": "node:record_job",
        "node": {"port": 0, "services": {"example-folder": {"directory": str(drop)}}},
        "inputs": {"CT": {"required_values": {"Modality": "CT"}, "images": 1}},
    }
    pipeline = parse_pipeline(document, Path(__file__).parent.parent / "support")
    assert pipeline.config.services == {"example-folder": {"directory": str(drop)}}
    assert set(pipeline().services) == {"example-folder"}


def test_a_service_spec_target_must_subclass_service() -> None:
    from dicomnode.errors import PluginError

    assert get_registry().service("example-folder").__mro__[1] is Service
    with pytest.raises(PluginError, match=r"not a subclass of dicomnode\.extension\.services\.Service"):
        ServiceSpec("bad", "dicomnode.extension.outputs:NoOutput").load("test")
