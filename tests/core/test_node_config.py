"""Pipeline settings: class attributes and overrides become one validated PipelineConfig."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pytest
from node import CT, RecordingNode

from dicomnode.errors import ConfigurationError
from dicomnode.extension.inputs import AbstractInput
from dicomnode.net import Address
from dicomnode.server.config import SETTINGS, PipelineConfig
from dicomnode.server.logs import configure_logging


def test_class_attributes_become_the_configuration() -> None:
    config = RecordingNode().config
    assert (config.name, config.ae_title, config.ip, config.port) == ("RecordingNode", "TESTNODE", "127.0.0.1", 0)
    assert config.inputs == {"CT": CT}
    assert config.patient_identifier_tag == 0x00100020


def test_constructor_keywords_override_class_attributes() -> None:
    node = RecordingNode(port=11999, ae_title="OTHER")
    assert (node.config.port, node.config.ae_title) == (11999, "OTHER")


def test_a_ready_config_object_is_used_as_it_is() -> None:
    config = PipelineConfig(inputs={"CT": CT}, name="fromtoml", ae_title="TOML", port=0)
    node = RecordingNode(config=config)
    assert node.config is config


@pytest.mark.parametrize(("setting", "value", "allowed"), [
    ("port", 70000, "from 1 to 65535"),
    ("ae_title", "A" * 17, "1 to 16 printable ASCII"),
    ("fsync", "always", "'none', 'association', 'instance'"),
    ("rejection_policy", "ignore", "'failure', 'discard'"),
    ("stable_time", -1, "positive number or None"),
    ("processing_workers", 0, "at least 1"),
    ("log_level", "LOUD", "DEBUG, INFO"),
    ("patient_identifier_tag", "PatientNumber", "not a DICOM keyword"),
    ("require_calling_aet", ["OK", "BAD\\AE"], "without backslash"),
])
def test_a_bad_value_names_the_setting_the_value_and_what_is_allowed(setting: str, value: object,
                                                                      allowed: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        RecordingNode(**{setting: value})
    assert setting in str(error.value) or "AE title" in str(error.value)
    assert allowed in str(error.value)


def test_an_input_that_is_not_an_input_class_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"inputs\['CT'\].*subclass of dicomnode.AbstractInput"):
        RecordingNode(input={"CT": dict})


def test_an_input_with_an_unknown_tag_keyword_is_refused_at_construction() -> None:
    class Typo(AbstractInput):
        required_values = {"Modalty": "CT"}

    with pytest.raises(ConfigurationError, match="Modalty"):
        RecordingNode(input={"CT": Typo})


def test_a_pipeline_without_inputs_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="non-empty mapping"):
        RecordingNode(input={})


def test_lazy_storage_needs_a_data_directory() -> None:
    with pytest.raises(ConfigurationError, match="'lazy_storage' needs 'data_directory'"):
        RecordingNode(lazy_storage=True)


def test_an_unknown_override_lists_the_known_settings() -> None:
    with pytest.raises(ConfigurationError, match="unknown setting"):
        RecordingNode(prot=104)


def test_known_endpoints_must_be_addresses() -> None:
    RecordingNode(known_endpoints={"PACS": Address("127.0.0.1", 104, "PACS")})
    with pytest.raises(ConfigurationError, match=r"known_endpoints\['PACS'\]"):
        RecordingNode(known_endpoints={"PACS": ("127.0.0.1", 104)})


def test_the_configuration_is_frozen_and_evolve_validates_again() -> None:
    config = RecordingNode().config
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="port"):
        attrs.evolve(config, port=-1)


def test_every_setting_is_a_class_attribute_of_the_pipeline() -> None:
    from dicomnode.server.nodes import AbstractPipeline

    missing = [name for name in SETTINGS if not hasattr(AbstractPipeline, "input" if name == "inputs" else name)]
    assert missing == ["name"]  # the name is the class name


def test_log_output_to_a_file_rotates_and_replaces_an_earlier_handler(tmp_path: Path) -> None:
    target = tmp_path / "logs" / "node.log"
    configure_logging("INFO", None, target, max_bytes=200, backup_count=2)
    handler = configure_logging("INFO", "%(levelname)s %(message)s", target, max_bytes=200, backup_count=2)
    root = logging.getLogger("dicomnode")
    try:
        assert sum(1 for h in root.handlers if getattr(h, "_dicomnode_handler", False)) == 1
        for index in range(20):
            logging.getLogger("dicomnode.test").info("line %d of the rotating log", index)
        assert target.exists() and (tmp_path / "logs" / "node.log.1").exists()
        assert "INFO line 19 of the rotating log" in target.read_text()
    finally:
        root.removeHandler(handler)
        handler.close()
