"""A pipeline declared in TOML names the outputs "dicom" and "file" by their registered names."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import free_port, require_peer
from dcmtk import storescp, storescu
from node import wait_until
from pydicom import dcmread

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.errors import ConfigurationError
from dicomnode.server.toml_config import load_pipeline

pytestmark = pytest.mark.plugin("dicom-output", "file-output")

PROCESS = '''
def forward(input_container):
    return input_container.datasets["CT"]
'''

PIPELINE = """
process = "{module}:forward"

[node]
ae_title = "TOMLOUT"
ip = "127.0.0.1"
port = 0
maintenance_thread = false
log_level = "WARNING"

[node.known_endpoints.ARCHIVE]
ip = "127.0.0.1"
port = {archive_port}
ae_title = "ARCHIVE"

[inputs.CT]
required_values = {{ Modality = "CT" }}
images = 5

[[outputs]]
type = "dicom"
destination = "ARCHIVE"
attempts = 2
first_delay = 0.1

[[outputs]]
type = "file"
directory = "results"
existing = "keep"
"""


def _pipeline(folder: Path, module: str, archive_port: int, text: str = PIPELINE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(PROCESS, encoding="utf-8")
    path = folder / "pipeline.toml"
    path.write_text(textwrap.dedent(text).format(module=module, archive_port=archive_port), encoding="utf-8")
    return path


def test_a_toml_node_delivers_with_the_dicom_and_file_outputs(tmp_path: Path) -> None:
    require_peer("dcmtk")
    archive_port = free_port()
    path = _pipeline(tmp_path / "node", "toml_outputs_forward", archive_port)
    series = synthetic_series(slices=5, rows=16, columns=16, patient_id="TOML1")
    files = write_series(series, tmp_path / "in")
    uids = {str(ds.SOPInstanceUID) for ds in series}

    with storescp(tmp_path / "archive", archive_port, ae_title="ARCHIVE"), load_pipeline(path)() as node:
        sent = storescu(node.port, files, called_aet="TOMLOUT")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert wait_until(lambda: node.jobs_succeeded == 1, timeout=30)

    archived = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (tmp_path / "archive").iterdir()}
    assert archived == uids
    assert {p.stem for p in (tmp_path / "node" / "results").rglob("*.dcm")} == uids


def test_a_bad_output_setting_in_toml_names_the_setting(tmp_path: Path) -> None:
    path = _pipeline(tmp_path / "node", "toml_outputs_bad", free_port(),
                     PIPELINE.replace('existing = "keep"', 'existing = "replace"'))
    node_class = load_pipeline(path)
    node = node_class()
    from dicomnode.extension.containers import InputContainer

    with pytest.raises(ConfigurationError, match="existing must be one of 'overwrite', 'keep', 'fail'"):
        node.process(InputContainer({"CT": []}, datasets={"CT": []}, patient_key="P"))
