"""Pipelines declared in TOML: the same validated configuration as a class, and errors that say what to fix."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import attrs
import pytest
from conftest import require_peer
from dcmtk import storescu
from node import read_jobs, wait_until, write_patient

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.grinders import ListGrinder, ManyGrinder, TagGrinder
from dicomnode.extension.inputs import AbstractInput, DynamicInput
from dicomnode.extension.outputs import NoOutput
from dicomnode.net import Address
from dicomnode.server.config import PipelineConfig
from dicomnode.server.nodes import AbstractQueuedPipeline
from dicomnode.server.toml_config import load_pipeline, load_pipeline_config

PROCESS_MODULE = '''
import json
import os

from dicomnode.extension.outputs import NoOutput
from dicomnode.extension.containers import InputContainer


def record(input_container):
    """Write what the job received to jobs.jsonl beside this module."""
    line = {"patient": input_container.patient_key, "pid": os.getpid(),
            "uids": sorted(str(ds.SOPInstanceUID) for ds in input_container.datasets["CT"]),
            "ground": type(input_container["CT"]).__name__}
    with open(os.path.join(os.path.dirname(__file__), "jobs.jsonl"), "a", encoding="utf-8") as stream:
        stream.write(json.dumps(line) + "\\n")
    return None


def outputs(input_container):
    return [NoOutput()]


def datasets(input_container):
    return input_container.datasets["CT"]
'''

FULL = """
name = "toml-node"
process = "{module}:record"
type = "queued"

[node]
ae_title = "TOMLNODE"
ip = "127.0.0.1"
port = 11113
data_directory = "data"
study_expiration_days = 3
stable_time = 2.5
require_calling_aet = ["SCANNER", "PACS"]
maintenance_thread = false
log_level = "WARNING"

[node.known_endpoints.PACS]
ip = "127.0.0.1"
port = 4242
ae_title = "ORTHANC"

[inputs.CT]
required_values = { Modality = "CT", SeriesDescription = { regex = "Synthetic.*" } }
required_tags = ["SeriesInstanceUID"]
grinder = "list"
images = 6
"""


def _write(folder: Path, text: str, module: str = "jobs_module") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(PROCESS_MODULE, encoding="utf-8")
    path = folder / "pipeline.toml"
    path.write_text(textwrap.dedent(text).replace("{module}", module), encoding="utf-8")
    return path


def _minimal(extra_node: str = "", extra: str = "", inputs: str = "", module: str = "jobs_module") -> str:
    return f"""
process = "{module}:record"
{extra}
[node]
ae_title = "TOMLNODE"
{extra_node}
[inputs.CT]
required_values = {{ Modality = "CT" }}
{inputs}
"""


def _error(tmp_path: Path, text: str, module: str) -> str:
    path = _write(tmp_path, text, module)
    with pytest.raises(ConfigurationError) as raised:
        load_pipeline(path)
    return str(raised.value)


def test_toml_and_class_routes_build_the_same_configuration(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL, "same_config_jobs")

    class CT(AbstractInput):
        required_values = {"Modality": "CT", "SeriesDescription": re.compile("Synthetic.*")}
        required_tags = ["SeriesInstanceUID"]
        image_grinder = ListGrinder()

    class TomlNode(AbstractQueuedPipeline):
        name = "toml-node"
        ae_title = "TOMLNODE"
        ip = "127.0.0.1"
        port = 11113
        data_directory = str(tmp_path / "data")
        study_expiration_days = 3
        stable_time = 2.5
        require_calling_aet = ["SCANNER", "PACS"]
        known_endpoints = {"PACS": Address("127.0.0.1", 4242, "ORTHANC")}
        maintenance_thread = False
        log_level = "WARNING"
        input = {"CT": CT}

    from_toml = load_pipeline_config(path)
    from_class = PipelineConfig.from_pipeline_class(TomlNode)
    assert attrs.evolve(from_toml, inputs=from_class.inputs) == from_class
    declared = from_toml.inputs["CT"]
    assert declared.cls is AbstractInput  # the registered input "dicom", with the table's settings
    assert declared.settings["required_tags"] == CT.required_tags
    assert declared.settings["required_values"] == CT.required_values
    assert isinstance(declared.settings["image_grinder"], ListGrinder)
    pipeline = load_pipeline(path)
    assert pipeline.kind == "queued" and isinstance(pipeline(), AbstractQueuedPipeline)


def test_a_port_out_of_range_names_the_setting_the_value_and_the_range(tmp_path: Path) -> None:
    message = _error(tmp_path, _minimal("port = 70000", module="port_jobs"), "port_jobs")
    assert "[node]" in message and "'port'" in message and "70000" in message
    assert "1 to 65535" in message


def test_an_unknown_node_setting_lists_the_allowed_ones(tmp_path: Path) -> None:
    message = _error(tmp_path, _minimal("aetitle = 'X'", module="unknown_jobs"), "unknown_jobs")
    assert "[node]" in message and "'aetitle'" in message and "ae_title" in message


def test_an_unknown_grinder_names_the_input_and_the_registered_grinders(tmp_path: Path) -> None:
    message = _error(tmp_path, _minimal(inputs='grinder = "blender"', module="grinder_jobs"), "grinder_jobs")
    assert "[inputs.CT] grinder" in message and "'blender'" in message and "list" in message


def test_an_unknown_output_names_the_entry_and_the_registered_outputs(tmp_path: Path) -> None:
    text = _minimal(module="output_jobs") + '\n[[outputs]]\ntype = "carrier-pigeon"\n'
    message = _error(tmp_path, text, "output_jobs")
    assert "[[outputs]] 1" in message and "'carrier-pigeon'" in message and "none" in message


def test_output_settings_that_do_not_fit_the_output_are_refused_at_load(tmp_path: Path) -> None:
    text = _minimal(module="fit_jobs") + '\n[[outputs]]\ntype = "none"\ncolour = "blue"\n'
    message = _error(tmp_path, text, "fit_jobs")
    assert "[[outputs]] 1 (none)" in message and "colour" in message


def test_a_process_that_cannot_be_imported_is_named(tmp_path: Path) -> None:
    text = _minimal(module="absent_jobs").replace('"absent_jobs:record"', '"no_such_module:run"')
    message = _error(tmp_path, text, "absent_jobs")
    assert "process" in message and "no_such_module" in message


def test_a_count_of_images_below_one_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, _minimal(inputs="images = 0", module="count_jobs"), "count_jobs")
    assert "[inputs.CT] images = 0" in message and "at least 1" in message


def test_an_unknown_keyword_in_required_values_is_refused(tmp_path: Path) -> None:
    text = _minimal(module="keyword_jobs").replace("Modality", "Modallity")
    message = _error(tmp_path, text, "keyword_jobs")
    assert "[inputs.CT]" in message and "Modallity" in message


def test_series_selection_and_completeness_are_input_keys(tmp_path: Path) -> None:
    inputs = ('series_selection = "largest"\ncompleteness = "query"\nquery_endpoint = "PACS"\n'
              'query_interval = 2.5')
    extra_node = '[node.known_endpoints.PACS]\nip = "127.0.0.1"\nport = 4242\nae_title = "ORTHANC"'
    path = _write(tmp_path, _minimal(inputs=inputs, module="selection_jobs").replace(
        "[inputs.CT]", extra_node + "\n[inputs.CT]"), "selection_jobs")
    created = load_pipeline(path).config.inputs["CT"].create()
    assert (created.series_selection, created.completeness, created.query_endpoint, created.query_interval) == (
        "largest", "query", "PACS", 2.5)


def test_a_series_selection_table_is_a_tag_rule(tmp_path: Path) -> None:
    inputs = 'series_selection = { SeriesDescription = { regex = "AX.*" }, ImageType = { contains = "AXIAL" } }'
    path = _write(tmp_path, _minimal(inputs=inputs, module="rule_jobs"), "rule_jobs")
    rule = load_pipeline(path).config.inputs["CT"].create().series_selection
    assert rule["SeriesDescription"].pattern == "AX.*"
    assert rule["ImageType"](["ORIGINAL", "PRIMARY", "AXIAL"]) and not rule["ImageType"](["LOCALIZER"])


def test_a_series_selection_may_name_a_function(tmp_path: Path) -> None:
    path = _write(tmp_path, _minimal(inputs='series_selection = "os.path:basename"', module="select_jobs"),
                  "select_jobs")
    assert load_pipeline(path).config.inputs["CT"].create().series_selection is os.path.basename


@pytest.mark.parametrize(("line", "expected"), [
    ('series_selection = "biggest"', "must be 'largest', 'thinnest', 'module:function' or a table"),
    ('completeness = "quiet"', "completeness must be one of 'validate', 'announced', 'query'"),
    ("query_interval = -1", "query_interval must be a positive number of seconds"),
    ('query_endpoint = "NOWHERE"', "query_endpoint 'NOWHERE' is not a known endpoint"),
])
def test_bad_series_and_completeness_keys_say_what_is_allowed(tmp_path: Path, line: str, expected: str) -> None:
    module = f"bad_{abs(hash(line))}"
    assert expected in _error(tmp_path, _minimal(inputs=line, module=module), module)


def test_a_dynamic_input_groups_by_its_key_tag(tmp_path: Path) -> None:
    inputs = 'type = "dynamic"\nkey_tag = "SeriesNumber"'
    path = _write(tmp_path, _minimal(inputs=inputs, module="dynamic_jobs"), "dynamic_jobs")
    declared = load_pipeline(path).config.inputs["CT"]
    assert declared.cls is DynamicInput and declared.create().key_tag == "SeriesNumber"


def test_a_key_tag_on_an_input_that_does_not_group_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, _minimal(inputs='key_tag = "SeriesNumber"', module="key_jobs"), "key_jobs")
    assert "[inputs.CT]: unknown setting 'key_tag'" in message


def test_a_file_that_is_not_toml_says_so(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[node\nport = 1", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_pipeline(path)


def test_relative_directories_are_relative_to_the_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "node", _minimal('data_directory = "data"', module="relative_jobs"), "relative_jobs")
    monkeypatch.chdir(tmp_path)
    assert load_pipeline_config(path).data_directory == (tmp_path / "node" / "data").resolve()


def test_grinders_take_options_and_nest(tmp_path: Path) -> None:
    grinder = '{ name = "many", grinders = ["list", { name = "tag", tags = ["InstanceNumber"] }] }'
    path = _write(tmp_path, _minimal(inputs=f"grinder = {grinder}", module="nest_jobs"), "nest_jobs")
    built = load_pipeline(path).config.inputs["CT"].settings["image_grinder"]
    assert isinstance(built, ManyGrinder)
    assert isinstance(built.grinders[0], ListGrinder) and isinstance(built.grinders[1], TagGrinder)
    assert built.grinders[1].names == ["InstanceNumber"]


def _container(slices: int = 2) -> InputContainer:
    series = synthetic_series(slices=slices, rows=8, columns=8)
    return InputContainer({"CT": series}, {"CT": series}, patient_key="DEMO001")


def test_datasets_process_returns_go_to_every_declared_output(tmp_path: Path) -> None:
    text = _minimal(module="returns_jobs").replace(":record", ":datasets")
    text += '\n[[outputs]]\ntype = "none"\n\n[[outputs]]\ntype = "none"\n'
    node = load_pipeline(_write(tmp_path, text, "returns_jobs"))()
    outputs = node.process(_container())
    assert [type(output) for output in outputs] == [NoOutput, NoOutput]  # type: ignore[union-attr]


def test_outputs_process_returns_are_dispatched_as_they_are(tmp_path: Path) -> None:
    text = _minimal(module="as_is_jobs").replace(":record", ":outputs")
    node = load_pipeline(_write(tmp_path, text, "as_is_jobs"))()
    outputs = node.process(_container())
    assert len(outputs) == 1 and type(outputs[0]) is NoOutput  # type: ignore[arg-type,index]


def test_datasets_without_declared_outputs_are_an_error_that_says_so(tmp_path: Path) -> None:
    text = _minimal(module="nowhere_jobs").replace(":record", ":datasets")
    node = load_pipeline(_write(tmp_path, text, "nowhere_jobs"))()
    with pytest.raises(TypeError, match=r"no \[\[outputs\]\]"):
        node.process(_container())


def test_a_toml_node_receives_and_processes_a_series(tmp_path: Path) -> None:
    require_peer("dcmtk")
    path = _write(tmp_path / "node", _minimal("ip = '127.0.0.1'\nport = 0\nmaintenance_thread = false",
                                              inputs="images = 4", module="serve_jobs"), "serve_jobs")
    files = write_patient(tmp_path / "P1", "P1", slices=4)
    with load_pipeline(path)() as node:
        result = storescu(node.port, [tmp_path / "P1"], called_aet="TOMLNODE")
        assert result.returncode == 0, result.stdout + result.stderr
        assert wait_until(lambda: read_jobs(tmp_path / "node" / "jobs.jsonl"))
        node.wait_for_jobs(10)
    jobs = read_jobs(tmp_path / "node" / "jobs.jsonl")
    assert [job["patient"] for job in jobs] == ["P1"]
    assert jobs[0]["uids"] == sorted(p.stem for p in files)


def test_a_toml_node_can_process_in_a_spawned_process(tmp_path: Path) -> None:
    require_peer("dcmtk")
    node_settings = "ip = '127.0.0.1'\nport = 0\nmaintenance_thread = false\nexecutor = 'process'\nexecutor_settings = { directory = 'work' }"
    path = _write(tmp_path / "node", _minimal(node_settings, inputs="images = 3", module="spawn_jobs"),
                  "spawn_jobs")
    write_patient(tmp_path / "P2", "P2", slices=3)
    with load_pipeline(path)() as node:
        result = storescu(node.port, [tmp_path / "P2"], called_aet="TOMLNODE")
        assert result.returncode == 0, result.stdout + result.stderr
        assert wait_until(lambda: read_jobs(tmp_path / "node" / "jobs.jsonl"), timeout=60)
        node.wait_for_jobs(30)
        assert node.jobs_succeeded == 1
    job = read_jobs(tmp_path / "node" / "jobs.jsonl")[0]
    assert job["pid"] != os.getpid()
    assert job["ground"] == "list"
