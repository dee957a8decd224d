"""Pipeline settings: class attributes and overrides become one validated PipelineConfig."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pytest
from node import CT, RecordingNode

from dicomnode.errors import ConfigurationError
from dicomnode.extension.inputs import AbstractInput, ConfiguredInput
from dicomnode.net import Address
from dicomnode.server.config import SETTINGS, PipelineConfig
from dicomnode.server.logs import configure_logging


def test_class_attributes_become_the_configuration() -> None:
    config = RecordingNode().config
    assert (config.name, config.ae_title, config.ip, config.port) == ("RecordingNode", "TESTNODE", "127.0.0.1", 0)
    assert config.inputs == {"CT": ConfiguredInput(CT)}
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
    ("late_images", "drop", "'new_job', 'ignore', 'rerun'"),
    ("late_images_window", 0, "positive number"),
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


def test_a_setting_and_its_default_exist_only_in_the_configuration() -> None:
    from dicomnode.server.nodes import AbstractPipeline

    declared_again = [name for name in SETTINGS if name in vars(AbstractPipeline) or name == "input"]
    assert declared_again == []
    assert RecordingNode().config.fsync == attrs.fields(PipelineConfig).fsync.default


@pytest.mark.parametrize(("typo", "meant"), [
    ("ae_tile", "ae_title"), ("data_dir", "data_directory"), ("maximum_asociations", "maximum_associations"),
    ("inputs", "input"),
])
def test_a_class_attribute_that_is_almost_a_setting_is_an_error_naming_the_setting(typo: str,
                                                                                    meant: str) -> None:
    node_class = type("Typo", (RecordingNode,), {typo: "x"})
    with pytest.raises(ConfigurationError, match=rf"Typo\.{typo} is not a setting; did you mean '{meant}'"):
        node_class()


def test_attributes_of_ones_own_that_are_not_near_a_setting_are_left_alone() -> None:
    class Mine(RecordingNode):
        model_path = "weights.pt"
        threshold = 0.5
        port_of_the_pacs = 4242
        _ae_tile = "private, and so never a setting"

    assert Mine().config.ae_title == "TESTNODE"


def test_a_setting_that_was_replaced_says_what_to_write_instead() -> None:
    class Old(RecordingNode):
        processing_directory = "work"

    with pytest.raises(ConfigurationError, match=r"'processing_directory' is gone; write executor = \"process\""):
        Old()


def test_a_keyword_that_is_almost_a_setting_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match=r"keyword argument data_dir is not a setting; did you mean "
                                                 r"'data_directory'"):
        RecordingNode(data_dir="data")


def test_an_input_attribute_that_is_almost_a_setting_is_an_error() -> None:
    class Typo(AbstractInput):
        required_value = {"Modality": "CT"}

    with pytest.raises(ConfigurationError, match=r"Typo\.required_value is not a setting of an input; did you "
                                                 r"mean 'required_values'"):
        RecordingNode(input={"CT": Typo})


def test_a_grinder_given_by_its_registered_name_says_which_object_to_give() -> None:
    class Named(AbstractInput):
        image_grinder = "list"  # type: ignore[assignment]

    with pytest.raises(ConfigurationError, match=r"Named\.image_grinder = 'list' is the name of a grinder, not a "
                                                 r"grinder: give ListGrinder\(\)"):
        RecordingNode(input={"CT": Named})


def test_an_input_configured_per_pipeline_without_a_subclass() -> None:
    configured = AbstractInput.configured(required_values={"Modality": "CT"}, minimum_images=3)
    node = RecordingNode(input={"CT": configured})
    instance = node.config.inputs["CT"].create()
    assert instance.minimum_images == 3 and not instance.validate()
    with pytest.raises(ConfigurationError, match=r"AbstractInput has no setting 'minimum_image'; did you mean "
                                                 r"'minimum_images'"):
        AbstractInput.configured(minimum_image=3)


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
