"""Walking a PACS with C-FIND: which prior studies, series or images to retrieve.

The walk starts with one query (by default: every study of the triggering
image's patient). For each C-FIND response a decision function says what
to do with it:

``Action.FIND``
    look one level deeper (study -> series -> image) inside this response;
``Action.MOVE``
    retrieve everything this response stands for (C-MOVE, or C-GET);
``Action.SKIP``
    leave it at the PACS.

Each response handed to the decision carries the keys of the responses
above it (a series response knows its study's StudyDate), so a decision at
series level can still look at the study.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from enum import Enum

import attrs
from pydicom import Dataset

from dicomnode.net import QueryLevel

__all__ = [
    "Action",
    "Target",
    "deeper_query",
    "default_decision",
    "first_query",
    "retrieve_identifier",
    "walk",
]

logger = logging.getLogger("dicomnode.historic")

#: the level a FIND action queries next
_DEEPER = {QueryLevel.STUDY: QueryLevel.SERIES, QueryLevel.SERIES: QueryLevel.IMAGE}

#: the return keys asked for at each level (empty values: "send me this attribute")
_RETURN_KEYS = {
    QueryLevel.STUDY: ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription",
                       "ModalitiesInStudy", "AccessionNumber"),
    QueryLevel.SERIES: ("SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber"),
    QueryLevel.IMAGE: ("SOPInstanceUID", "InstanceNumber"),
}

#: the unique keys that identify a response at each level, outermost first
_UNIQUE_KEYS = {
    QueryLevel.STUDY: ("StudyInstanceUID",),
    QueryLevel.SERIES: ("StudyInstanceUID", "SeriesInstanceUID"),
    QueryLevel.IMAGE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


class Action(str, Enum):
    """What to do with one C-FIND response."""

    FIND = "FIND"
    MOVE = "MOVE"
    SKIP = "SKIP"


#: ``decide(trigger, response, level) -> Action``
Decision = Callable[[Dataset, Dataset, QueryLevel], Action]


@attrs.frozen
class Target:
    """Something to retrieve: the identifier of a C-MOVE / C-GET at ``level``."""

    level: QueryLevel
    identifier: Dataset = attrs.field(eq=False)

    def __str__(self) -> str:
        uid = _UNIQUE_KEYS[self.level][-1]
        return f"{self.level.value} {self.identifier.get(uid, '?')}"


def first_query(trigger: Dataset, level: QueryLevel) -> Dataset:
    """The identifier of the first C-FIND: the trigger's PatientID, the return keys of ``level``."""
    query = Dataset()
    query.PatientID = str(trigger.get("PatientID", ""))
    for step in (QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE):
        for keyword in _RETURN_KEYS[step]:
            setattr(query, keyword, "")
        if step is level:
            break
    return query


def deeper_query(response: Dataset, level: QueryLevel) -> Dataset:
    """The C-FIND identifier one level below ``response``: its unique keys, the new level's return keys."""
    query = Dataset()
    above = {QueryLevel.SERIES: QueryLevel.STUDY, QueryLevel.IMAGE: QueryLevel.SERIES}[level]
    for keyword in _UNIQUE_KEYS[above]:
        setattr(query, keyword, str(response.get(keyword, "")))
    if "PatientID" in response:
        query.PatientID = str(response.PatientID)
    for keyword in _RETURN_KEYS[level]:
        setattr(query, keyword, "")
    return query


def retrieve_identifier(response: Dataset, level: QueryLevel) -> Dataset:
    """The C-MOVE / C-GET identifier of ``response``: its unique keys down to ``level``."""
    identifier = Dataset()
    for keyword in _UNIQUE_KEYS[level]:
        setattr(identifier, keyword, str(response.get(keyword, "")))
    return identifier


def _date(dataset: Dataset, keyword: str = "StudyDate") -> str:
    return str(dataset.get(keyword, "") or "").strip()


def default_decision(trigger: Dataset, response: Dataset, level: QueryLevel, modality: str | None) -> Action:
    """The default choice: every study dated before the trigger's; with ``modality`` only its series.

    A study of another date, the trigger's own study, or a response without
    a StudyDate is skipped. With ``modality`` a study whose
    ModalitiesInStudy lacks it is skipped, the others are searched series by
    series and only series of that Modality are retrieved.
    """
    if str(response.get("StudyInstanceUID", "")) == str(trigger.get("StudyInstanceUID", "")):
        return Action.SKIP
    before, current = _date(response), _date(trigger)
    if not before or not current or before >= current:
        return Action.SKIP
    if modality is None or level is QueryLevel.IMAGE:
        return Action.MOVE
    if level is QueryLevel.STUDY:
        modalities = response.get("ModalitiesInStudy", "")
        values = [str(m) for m in modalities] if not isinstance(modalities, str) else [modalities]
        values = [m.strip() for m in values if str(m).strip()]
        # a PACS that does not fill ModalitiesInStudy: look at the series instead
        return Action.FIND if not values or modality in values else Action.SKIP
    return Action.MOVE if str(response.get("Modality", "")).strip() == modality else Action.SKIP


def _action(value: object) -> Action:
    if value is None:  # a decision that says nothing leaves the response at the PACS
        return Action.SKIP
    try:
        return Action(value)
    except ValueError:
        raise TypeError(f"check_query_dataset must return Action.FIND, Action.MOVE or Action.SKIP "
                        f"(or None to skip), got {value!r}") from None


#: ``search(identifier, level) -> responses``: one C-FIND (or QIDO-RS search)
Search = Callable[[Dataset, QueryLevel], Iterable[Dataset]]


def walk(search: Search, trigger: Dataset, query: Dataset, level: QueryLevel, decide: Decision) -> list[Target]:
    """Run the searches the decisions ask for; return what to retrieve, in the order found.

    ``search`` is a :class:`~dicomnode_historic_input.source.PriorSource`'s;
    whatever it raises (a ConnectionError saying why the PACS could not be
    asked) ends the walk.
    """
    pending: list[tuple[Dataset, QueryLevel, Dataset]] = [(query, level, Dataset())]
    targets: list[Target] = []
    while pending:
        identifier, step, parent = pending.pop(0)
        for response in search(identifier, step):
            merged = Dataset()
            merged.update(parent)
            merged.update(response)
            action = _action(decide(trigger, merged, step))
            if action is Action.MOVE:
                targets.append(Target(step, retrieve_identifier(merged, step)))
            elif action is Action.FIND:
                deeper = _DEEPER.get(step)
                if deeper is None:
                    logger.warning("FIND asked for image %s, but IMAGE is the deepest level: skipped "
                                   "(return MOVE to retrieve it)", merged.get("SOPInstanceUID", "?"))
                    continue
                pending.append((deeper_query(merged, deeper), deeper, merged))
    return targets
