"""HistoricAbstractInput: a patient's prior studies, fetched from a PACS when the patient arrives.

::

    from dicomnode import AbstractInput, AbstractPipeline, Address
    from dicomnode_historic_input import HistoricAbstractInput

    class Priors(HistoricAbstractInput):
        address = Address("10.0.0.5", 4242, "PACS")   # the PACS to ask
        modality = "CT"                                # earlier CT series only

    class FollowUp(AbstractPipeline):
        ae_title = "FOLLOWUP"                          # the PACS must know this AE (C-MOVE)
        input = {"today": TodaysCT, "history": Priors}

When the first image of a patient is accepted by another input, the historic
input starts a thread that asks the PACS for the patient's studies (C-FIND)
and retrieves the ones :meth:`HistoricAbstractInput.check_query_dataset`
chooses (C-MOVE to the node, or C-GET). The retrieved images come back to the
node and land in this input only; it validates once the retrieval is over,
and ``process`` gets the priors by study date and series description.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydicom import Dataset

from dicomnode.errors import ConfigurationError
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.labels import patient_label
from dicomnode.net import Address, QueryLevel
from dicomnode_historic_input.ground import Priors, PriorsGrinder, RetrievalReport
from dicomnode_historic_input.query import Action, default_decision, first_query

if TYPE_CHECKING:
    from dicomnode.extension.handles import NodeHandle
    from dicomnode_historic_input.source import PriorSource

__all__ = ["HistoricAbstractInput"]

logger = logging.getLogger("dicomnode.historic")

RETRIEVE_MODES = ("move", "get")
FAILURE_OUTCOMES = ("process", "retry")


def _setting_error(cls: type, setting: str, value: object, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"{cls.__name__}.{setting} must be {allowed}, got {value!r}")


def _check_settings(cls: type, source: Any) -> None:
    """Check the settings ``source`` (the class, or an instance with settings of its own) has."""
    if source.address is not None and not isinstance(source.address, Address):
        raise _setting_error(cls, "address", source.address, "an Address(ip, port, ae_title)")
    try:
        level = QueryLevel(source.query_level.upper() if isinstance(source.query_level, str) else source.query_level)
    except ValueError:
        level = QueryLevel.PATIENT
    if level is QueryLevel.PATIENT:
        raise _setting_error(cls, "query_level", source.query_level, "'STUDY', 'SERIES' or 'IMAGE'")
    if source.retrieve_mode not in RETRIEVE_MODES:
        raise _setting_error(cls, "retrieve_mode", source.retrieve_mode, "'move' or 'get'")
    if source.on_failure not in FAILURE_OUTCOMES:
        raise _setting_error(cls, "on_failure", source.on_failure, "'process' or 'retry'")
    for setting in ("timeout", "retry_interval"):
        if not _positive(getattr(source, setting)):
            raise _setting_error(cls, setting, getattr(source, setting), "a positive number of seconds")
    for setting in ("max_attempts", "max_concurrent_retrievals"):
        count = getattr(source, setting)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise _setting_error(cls, setting, count, "an integer of at least 1, or None")
    if source.modality is not None and not isinstance(source.modality, str):
        raise _setting_error(cls, "modality", source.modality, "a Modality such as 'CT', or None")


def _positive(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


def address_from_toml(value: object) -> Address:
    """The ``address`` of a TOML ``[inputs.NAME]`` table: ``{ip = "…", port = 4242, ae_title = "PACS"}``."""
    keys = ("ip", "port", "ae_title")
    if not isinstance(value, Mapping) or sorted(value) != sorted(keys):
        raise ValueError('must be a table {ip = "10.0.0.5", port = 4242, ae_title = "PACS"}')
    return Address(value["ip"], value["port"], value["ae_title"])


def _as_given(value: object) -> object:
    return value  # checked with the other class attributes when the class is made


class HistoricAbstractInput(AbstractInput):
    """An input that retrieves the patient's prior studies from a PACS.

    Class attributes a subclass sets:

    ``address``
        the PACS, an :class:`~dicomnode.net.Address` (required);
    ``query_level``
        where the C-FIND walk starts: ``STUDY`` (default), ``SERIES`` or ``IMAGE``;
    ``modality``
        with the default decision, retrieve only series of this Modality
        (None, the default: whole studies);
    ``retrieve_mode``
        ``"move"`` (C-MOVE to the node's AE title, which the PACS must know;
        default) or ``"get"`` (C-GET: the images come back on our own
        association, nothing to register at the PACS);
    ``timeout``
        seconds each network step (association, C-FIND / C-MOVE / C-GET
        response) may take (default 30);
    ``max_concurrent_retrievals``
        how many patients' retrievals may talk to the same PACS at once
        (default 2; None: no limit); the others wait their turn, so fifty
        patients arriving together do not open fifty associations;
    ``on_failure``
        when the PACS is down or refuses: ``"process"`` (default) runs the
        job without (all of) the history, ``"retry"`` waits
        ``retry_interval`` seconds and asks again, up to ``max_attempts``
        times (None: until the patient expires), then runs the job;
    ``required_values`` / ``required_tags`` / ``image_grinder``
        as for every input; the default grinder gives a
        :class:`~dicomnode_historic_input.ground.Priors` mapping.

    Override :meth:`check_query_dataset` to choose what to retrieve, and
    :meth:`query_dataset` to change the first C-FIND. :meth:`prior_source`
    says how the PACS is reached (DIMSE by default; ``dicomnode-dicomweb``
    returns a DICOMweb source from it). The input accepts only
    images of another study than the triggering image's, dated before it
    (or of a study it asked for), and takes them away from the other inputs.
    ``validate()`` is True once the retrieval is over; :attr:`retrieval`
    (and the ground value's ``retrieval``) says how it went.
    """

    address: ClassVar[Address | None] = None
    query_level: ClassVar[QueryLevel | str] = QueryLevel.STUDY
    modality: ClassVar[str | None] = None
    retrieve_mode: ClassVar[str] = "move"
    timeout: ClassVar[float] = 30.0
    on_failure: ClassVar[str] = "process"
    retry_interval: ClassVar[float] = 30.0
    max_attempts: ClassVar[int | None] = 3
    max_concurrent_retrievals: ClassVar[int | None] = 2
    image_grinder: ClassVar[Any] = PriorsGrinder()
    exclusive: ClassVar[bool] = True
    toml_settings: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        "address": address_from_toml,
        **{key: _as_given for key in ("query_level", "modality", "retrieve_mode", "timeout", "on_failure",
                                      "retry_interval", "max_attempts", "max_concurrent_retrievals")},
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_settings(cls, cls)  # when the class is defined, not when the first patient arrives

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if settings:
            _check_settings(type(self), self)  # settings given per pipeline (TOML, configured())
        self._lock = threading.Lock()
        self._trigger: Dataset | None = None
        self._trigger_study = ""
        self._trigger_date = ""
        self._expected_studies: set[str] = set()
        self._report = RetrievalReport()

    @property
    def level(self) -> QueryLevel:
        """The level the C-FIND walk starts at."""
        level = self.query_level
        return QueryLevel(level.upper() if isinstance(level, str) else level)

    # --- what a user overrides -----------------------------------------------------

    def check_query_dataset(self, trigger: Dataset, response: Dataset, level: QueryLevel) -> Action:
        """Decide what to do with one C-FIND ``response`` at ``level``: FIND deeper, MOVE it, or SKIP.

        ``trigger`` is the patient's first image. The default retrieves every
        study dated before the trigger's; with ``modality`` set, only the
        series of that Modality (studies are searched series by series).
        """
        return default_decision(trigger, response, level, self.modality)

    def query_dataset(self, trigger: Dataset) -> Dataset:
        """The first C-FIND identifier: by default the trigger's PatientID and the level's return keys."""
        return first_query(trigger, self.level)

    def prior_source(self, node: NodeHandle) -> PriorSource:
        """How the PACS is searched and retrieved from: by default C-FIND and C-MOVE/C-GET to ``address``.

        Called once per patient on the association thread, so keep it cheap
        (build connections in the source's methods); raise
        :class:`~dicomnode.errors.ConfigurationError` when a setting it
        needs is missing: the retrieval then ends at once with that error.
        """
        from dicomnode_historic_input.source import DimseSource

        if self.address is None:
            raise ConfigurationError(f"{type(self).__name__}.address is not set: give it the PACS as "
                                     "Address(ip, port, ae_title)")
        return DimseSource(self.address, ae_title=node.ae_title, mode=self.retrieve_mode, timeout=self.timeout)

    # --- the node's side -------------------------------------------------------------

    def patient_started(self, dataset: Dataset, patient_key: str, node: NodeHandle | None) -> None:
        """Remember the triggering image and start retrieving the priors on a thread."""
        self._trigger = dataset
        self._trigger_study = str(dataset.get("StudyInstanceUID", ""))
        self._trigger_date = str(dataset.get("StudyDate", "") or "").strip()
        if not self._trigger_date:
            logger.warning("[patient %s] the first image has no StudyDate: only studies chosen by "
                           "check_query_dataset count as priors", patient_label(patient_key))
        if node is None:  # datasets replayed outside a node (a quarantine retry) bring their priors
            self._finish(RetrievalReport(finished=True))
            return
        try:
            source = self.prior_source(node)
        except ConfigurationError as error:
            logger.error("[patient %s] %s", patient_label(patient_key), error)
            self._finish(RetrievalReport(finished=True, error=str(error)))
            return
        from dicomnode_historic_input.retrieval import PriorRetrieval

        PriorRetrieval(self, dataset, patient_key, node, source).start()

    def rejection(self, dataset: Dataset) -> str | None:
        """Why the image is not a prior this input takes (or the reasons of :class:`AbstractInput`)."""
        name = type(self).__name__
        if self._trigger is None:
            return f"{name} takes prior studies, and no image of the current study has arrived yet"
        study = str(dataset.get("StudyInstanceUID", ""))
        if study == self._trigger_study:
            return f"{name} takes prior studies; the image is of the current study"
        if study not in self._expected_studies:
            date = str(dataset.get("StudyDate", "") or "").strip()
            if not date or not self._trigger_date or date >= self._trigger_date:
                return (f"{name} takes studies dated before the current one ({self._trigger_date or 'no date'}), "
                        f"the image's StudyDate is {date or 'empty'}")
        return super().rejection(dataset)

    def _expect(self, identifier: Dataset) -> None:
        """A study is about to be retrieved: its images are priors whatever their date."""
        self._expected_studies.add(str(identifier.get("StudyInstanceUID", "")))

    def _finish(self, report: RetrievalReport) -> None:
        with self._lock:
            self._report = report

    # --- what the job sees ------------------------------------------------------------

    @property
    def retrieval(self) -> RetrievalReport:
        """How the retrieval went so far (``finished``, ``error``, sub-operation counts)."""
        with self._lock:
            return self._report

    def validate(self) -> bool:
        """True once the retrieval is over: the priors are here, or the failure is recorded."""
        return self.retrieval.finished

    def get_data(self) -> Any:
        """The grinder's value; the default :class:`Priors` also carries the retrieval report."""
        value = self.setting("image_grinder")(self.datasets)
        if isinstance(value, Priors):
            value.retrieval = self.retrieval
        return value
