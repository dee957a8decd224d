"""``dicomnode run TARGET``: what a target may be, overrides, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import storescu, wait_for_port
from node import read_jobs, wait_until, write_patient

from dicomnode.cli.run import load_target
from dicomnode.errors import ConfigurationError

NODE_FILE = '''
import json
import os

from dicomnode import AbstractInput, AbstractPipeline, NoOutput


class CT(AbstractInput):
    required_values = {"Modality": "CT"}

    def validate(self):
        return self.images >= int(os.environ.get("RUN_TEST_IMAGES", "4"))


class RunTestNode(AbstractPipeline):
    ae_title = "RUNTEST"
    ip = "127.0.0.1"
    port = 11112
    input = {"CT": CT}
    maintenance_thread = False
    log_level = "INFO"

    def process(self, input_container):
        with open(os.environ["RUN_TEST_RECORD"], "a", encoding="utf-8") as stream:
            uids = sorted(str(ds.SOPInstanceUID) for ds in input_container.datasets["CT"])
            stream.write(json.dumps({"patient": input_container.patient_key, "uids": uids, "pid": os.getpid()}) + "\\n")
        return NoOutput()
'''

SECOND_NODE = '''

class OtherNode(RunTestNode):
    ae_title = "OTHER"
'''


def _node_file(folder: Path, name: str = "run_test_node", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(NODE_FILE + extra, encoding="utf-8")
    return path


# --- targets ------------------------------------------------------------------------------------


def test_a_file_with_one_pipeline_is_a_target(tmp_path: Path) -> None:
    cls = load_target(str(_node_file(tmp_path, "single_node_file")))
    assert cls.__name__ == "RunTestNode"


def test_a_file_and_class_name_is_a_target(tmp_path: Path) -> None:
    path = _node_file(tmp_path, "two_nodes_named", SECOND_NODE)
    assert load_target(f"{path}:OtherNode").__name__ == "OtherNode"


def test_a_file_with_several_pipelines_asks_for_a_class_name(tmp_path: Path) -> None:
    path = _node_file(tmp_path, "two_nodes_unnamed", SECOND_NODE)
    with pytest.raises(ConfigurationError, match=r"several pipelines \(OtherNode, RunTestNode\)"):
        load_target(str(path))


def test_a_module_and_class_name_is_a_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "run_test_package"
    _node_file(package, "nodes")
    (package / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert load_target("run_test_package.nodes:RunTestNode").__name__ == "RunTestNode"


def test_a_toml_file_is_a_target(tmp_path: Path) -> None:
    (tmp_path / "toml_target_jobs.py").write_text("def process(container):\n    return None\n", encoding="utf-8")
    path = tmp_path / "toml-target.toml"
    path.write_text('process = "toml_target_jobs:process"\n[inputs.CT]\nrequired_values = { Modality = "CT" }\n',
                    encoding="utf-8")
    assert load_target(str(path)).name == "toml-target"


def test_a_class_that_is_not_a_pipeline_is_refused(tmp_path: Path) -> None:
    path = _node_file(tmp_path, "not_a_pipeline")
    with pytest.raises(ConfigurationError, match="CT is not a subclass of AbstractPipeline"):
        load_target(f"{path}:CT")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        load_target(str(tmp_path / "absent.py"))


def test_a_pipeline_from_a_file_can_process_in_a_spawned_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_peer("dcmtk")
    monkeypatch.setenv("RUN_TEST_RECORD", str(tmp_path / "jobs.jsonl"))
    monkeypatch.setenv("RUN_TEST_IMAGES", "3")
    cls = load_target(str(_node_file(tmp_path / "node", "spawned_from_file")))
    write_patient(tmp_path / "P3", "P3", slices=3)
    with cls(port=0, executor="process", executor_settings={"directory": tmp_path / "work"}) as node:
        sent = storescu(node.port, [tmp_path / "P3"], called_aet="RUNTEST")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert wait_until(lambda: node.jobs_succeeded + node.jobs_failed == 1, timeout=60)
        assert node.jobs_succeeded == 1
    [job] = read_jobs(tmp_path / "jobs.jsonl")
    assert job["patient"] == "P3" and job["pid"] != os.getpid()


# --- the command --------------------------------------------------------------------------------


def _dicomnode(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "dicomnode", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RUN_TEST_RECORD": str(tmp_path / "jobs.jsonl")}


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; killed by PID at the end if still running."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def test_run_serves_with_overridden_port_and_ae_title_and_stops_on_sigterm(
        tmp_path: Path, run_env: dict[str, str], started: list[subprocess.Popen[str]]) -> None:
    require_peer("dcmtk")
    path = _node_file(tmp_path / "node")
    port = free_port()
    process = _dicomnode("run", str(path), "--port", str(port), "--ae-title", "OVERRIDE", cwd=tmp_path, env=run_env)
    started.append(process)
    wait_for_port(port, timeout=60)
    files = write_patient(tmp_path / "P1", "P1", slices=4)
    sent = storescu(port, [tmp_path / "P1"], called_aet="OVERRIDE")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert wait_until(lambda: read_jobs(tmp_path / "jobs.jsonl"), timeout=30)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "serving as OVERRIDE" in stderr and "stopped (SIGTERM)" in stderr
    jobs = [(job["patient"], job["uids"]) for job in read_jobs(tmp_path / "jobs.jsonl")]
    assert jobs == [("P1", sorted(p.stem for p in files))]


def test_sigint_keeps_incomplete_work_stored_and_a_restart_completes_it_once(
        tmp_path: Path, run_env: dict[str, str], started: list[subprocess.Popen[str]]) -> None:
    require_peer("dcmtk")
    path = _node_file(tmp_path / "node")
    files = write_patient(tmp_path / "P2", "P2", slices=4)
    data = tmp_path / "data"
    port = free_port()
    first = _dicomnode("run", str(path), "--port", str(port), "--data-directory", str(data), cwd=tmp_path,
                       env=run_env)
    started.append(first)
    wait_for_port(port, timeout=60)
    sent = storescu(port, files[:2], called_aet="RUNTEST")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    os.kill(first.pid, signal.SIGINT)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert "stopped (SIGINT)" in stderr
    assert len([p for p in data.rglob("*.dcm") if "quarantine" not in p.parts]) == 2
    assert read_jobs(tmp_path / "jobs.jsonl") == []

    second = _dicomnode("run", str(path), "--port", str(port), "--data-directory", str(data), cwd=tmp_path,
                        env=run_env)
    started.append(second)
    wait_for_port(port, timeout=60)
    sent = storescu(port, files[2:], called_aet="RUNTEST")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert wait_until(lambda: read_jobs(tmp_path / "jobs.jsonl"), timeout=30)
    os.kill(second.pid, signal.SIGTERM)
    second.communicate(timeout=60)
    jobs = [(job["patient"], job["uids"]) for job in read_jobs(tmp_path / "jobs.jsonl")]
    assert jobs == [("P2", sorted(p.stem for p in files))]


def test_a_bad_override_names_the_setting_and_exits_1(tmp_path: Path, run_env: dict[str, str]) -> None:
    path = _node_file(tmp_path / "node")
    process = _dicomnode("run", str(path), "--port", "70000", cwd=tmp_path, env=run_env)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "dicomnode run: error:" in stderr and "'port'" in stderr and "70000" in stderr


def test_run_reports_a_target_it_cannot_load(tmp_path: Path, run_env: dict[str, str]) -> None:
    process = _dicomnode("run", "no_such_package.nodes:Node", cwd=tmp_path, env=run_env)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "cannot import 'no_such_package.nodes'" in stderr
