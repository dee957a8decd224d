"""The dicomweb output and the stow service declared in a TOML pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.errors import ConfigurationError
from dicomnode.server.toml_config import parse_pipeline, result_outputs
from dicomnode_dicomweb import DicomWebOutput, StowService

pytestmark = pytest.mark.plugin("dicomweb")

SUPPORT = Path(__file__).parent.parent / "support"


def _document(**output: object) -> dict[str, object]:
    return {
        "process": "node:record_job",
        "node": {"port": 0, "services": {"stow": {"port": 0, "root": "/dicom-web/"}}},
        "inputs": {"CT": {"required_values": {"Modality": "CT"}, "images": 1}},
        "outputs": [{"type": "dicomweb", **output}],
    }


def test_an_outputs_entry_of_type_dicomweb_builds_the_output_with_the_results() -> None:
    pipeline = parse_pipeline(_document(url="https://pacs.example.org/dicom-web", batch_size=10,
                                        token={"env": "PACS_TOKEN"}), SUPPORT)
    series = synthetic_series(slices=2, rows=8, columns=8)
    [output] = result_outputs(series, pipeline.outputs)
    assert isinstance(output, DicomWebOutput)
    assert output.batch_size == 10 and output.datasets == series
    assert output.connection.url == "https://pacs.example.org/dicom-web"


@pytest.mark.parametrize(("output", "message"), [
    ({"url": "https://pacs.example.org", "batchsize": 10}, "unexpected keyword argument 'batchsize'"),
    ({"batch_size": 10}, "needs url"),
    ({"url": "https://pacs.example.org", "verify": "no-such-ca.pem"}, "verify must be true"),
])
def test_wrong_output_settings_are_refused_when_the_file_is_loaded(output: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_pipeline(_document(**output), SUPPORT)


def test_the_stow_service_comes_from_the_node_table() -> None:
    pipeline = parse_pipeline(_document(url="https://pacs.example.org"), SUPPORT)
    node = pipeline()
    assert isinstance(node.services["stow"], StowService)
    assert node.services["stow"].root == "/dicom-web/"
