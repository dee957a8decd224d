"""What the historic input retrieves, which images it takes, and how its settings are checked (no PACS)."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from dicomnode.errors import ConfigurationError
from dicomnode.extension.inputs import AbstractInput
from dicomnode.net import Address, QueryLevel
from dicomnode.server.pipeline_tree import PipelineTree
from dicomnode_historic_input import HistoricAbstractInput
from dicomnode_historic_input.ground import PriorsGrinder
from dicomnode_historic_input.query import Action, deeper_query, default_decision, first_query

pytestmark = pytest.mark.plugin("historic-input")


def _dataset(**values: object) -> Dataset:
    dataset = Dataset()
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    return dataset


TRIGGER = _dataset(PatientID="P1", StudyInstanceUID="1.2.3", StudyDate="20260301", Modality="CT")


def test_an_earlier_study_is_moved() -> None:
    study = _dataset(StudyInstanceUID="1.2.4", StudyDate="20250101")
    assert default_decision(TRIGGER, study, QueryLevel.STUDY, None) is Action.MOVE


@pytest.mark.parametrize("study", [
    _dataset(StudyInstanceUID="1.2.3", StudyDate="20250101"),  # the trigger's own study
    _dataset(StudyInstanceUID="1.2.4", StudyDate="20260301"),  # same day
    _dataset(StudyInstanceUID="1.2.4", StudyDate="20270101"),  # later
    _dataset(StudyInstanceUID="1.2.4", StudyDate=""),  # undated
], ids=["own-study", "same-day", "later", "undated"])
def test_the_current_later_and_undated_studies_are_skipped(study: Dataset) -> None:
    assert default_decision(TRIGGER, study, QueryLevel.STUDY, None) is Action.SKIP


def test_with_a_modality_a_study_holding_it_is_searched_series_by_series() -> None:
    study = _dataset(StudyInstanceUID="1.2.4", StudyDate="20250101", ModalitiesInStudy=["CT", "PT"])
    assert default_decision(TRIGGER, study, QueryLevel.STUDY, "CT") is Action.FIND
    other = _dataset(StudyInstanceUID="1.2.5", StudyDate="20250101", ModalitiesInStudy="MR")
    assert default_decision(TRIGGER, other, QueryLevel.STUDY, "CT") is Action.SKIP


def test_with_a_modality_only_its_series_are_moved() -> None:
    ct = _dataset(StudyInstanceUID="1.2.4", StudyDate="20250101", Modality="CT")
    pt = _dataset(StudyInstanceUID="1.2.4", StudyDate="20250101", Modality="PT")
    assert default_decision(TRIGGER, ct, QueryLevel.SERIES, "CT") is Action.MOVE
    assert default_decision(TRIGGER, pt, QueryLevel.SERIES, "CT") is Action.SKIP


def test_the_first_query_asks_for_the_patients_studies() -> None:
    query = first_query(TRIGGER, QueryLevel.STUDY)
    assert query.PatientID == "P1"
    assert query.StudyInstanceUID == "" and query.StudyDate == "" and "SeriesInstanceUID" not in query


def test_a_deeper_query_names_the_study_and_asks_for_its_series() -> None:
    query = deeper_query(_dataset(PatientID="P1", StudyInstanceUID="1.2.4"), QueryLevel.SERIES)
    assert query.StudyInstanceUID == "1.2.4"
    assert query.SeriesInstanceUID == "" and query.Modality == ""


class History(HistoricAbstractInput):
    address = Address("127.0.0.1", 4242, "PACS")


def _started_history() -> HistoricAbstractInput:
    history = History()
    history._trigger, history._trigger_study, history._trigger_date = TRIGGER, "1.2.3", "20260301"
    return history


def test_the_input_takes_images_of_earlier_studies_only() -> None:
    history = _started_history()
    assert history.accepts(_dataset(StudyInstanceUID="1.2.4", StudyDate="20250101"))
    assert "current study" in str(history.rejection(_dataset(StudyInstanceUID="1.2.3", StudyDate="20250101")))
    assert "dated before" in str(history.rejection(_dataset(StudyInstanceUID="1.2.4", StudyDate="20260301")))


def test_before_the_patient_started_the_input_takes_nothing() -> None:
    assert "no image of the current study" in str(History().rejection(_dataset(StudyInstanceUID="1.2.4",
                                                                               StudyDate="20250101")))


class Today(AbstractInput):
    required_values = {"StudyDate": "20260301"}


def test_without_a_node_the_input_validates_at_once_with_what_it_is_given() -> None:
    # a quarantine retry replays the stored datasets (priors included) outside a running node
    tree = PipelineTree({"history": History, "today": Today})
    tree.add_image("P1", _dataset(StudyInstanceUID="1.2.3", StudyDate="20260301", SOPInstanceUID="1"))
    tree.add_image("P1", _dataset(StudyInstanceUID="1.2.4", StudyDate="20250101", SOPInstanceUID="2"))
    history = tree["P1"].inputs["history"]
    assert history.validate() and history.retrieval.error is None
    assert history.images == 1


def test_a_missing_address_is_a_recorded_error_not_a_hang() -> None:
    class Nowhere(HistoricAbstractInput):
        pass

    history = Nowhere()
    history.patient_started(TRIGGER, "P1", object())  # type: ignore[arg-type]
    assert history.validate()
    assert "Nowhere.address is not set" in str(history.retrieval.error)


@pytest.mark.parametrize(("setting", "value", "allowed"), [
    ("address", ("127.0.0.1", 4242, "PACS"), "an Address(ip, port, ae_title)"),
    ("query_level", "PATIENT", "'STUDY', 'SERIES' or 'IMAGE'"),
    ("retrieve_mode", "c-get", "'move' or 'get'"),
    ("on_failure", "wait", "'process' or 'retry'"),
    ("timeout", 0, "a positive number of seconds"),
    ("max_attempts", 0, "an integer of at least 1, or None"),
    ("max_concurrent_retrievals", 0, "an integer of at least 1, or None"),
])
def test_a_bad_setting_is_refused_when_the_class_is_defined(setting: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        type("Bad", (HistoricAbstractInput,), {setting: value})
    assert f"Bad.{setting} must be {allowed}, got {value!r}" in str(error.value)


def test_the_ground_value_is_priors_by_study_date_and_series_description() -> None:
    images = [
        _dataset(StudyDate="20250101", SeriesDescription="CT", InstanceNumber=2, SeriesInstanceUID="5"),
        _dataset(StudyDate="20240101", SeriesDescription="CT", InstanceNumber=1, SeriesInstanceUID="4"),
        _dataset(StudyDate="20250101", SeriesDescription="CT", InstanceNumber=1, SeriesInstanceUID="5"),
        _dataset(StudyDate="20250101", InstanceNumber=1, SeriesInstanceUID="6"),
    ]
    priors = PriorsGrinder()(images)
    assert list(priors) == ["20240101", "20250101"]
    assert [ds.InstanceNumber for ds in priors["20250101"]["CT"]] == [1, 2]
    assert list(priors["20250101"]) == ["CT", "6"]  # no description: keyed by the series UID


def test_a_decision_that_is_not_an_action_is_named_in_the_error() -> None:
    from dicomnode_historic_input.query import _action

    assert _action(None) is Action.SKIP
    assert _action("MOVE") is Action.MOVE
    with pytest.raises(TypeError, match=r"must return Action\.FIND, Action\.MOVE or Action\.SKIP .* got True"):
        _action(True)
