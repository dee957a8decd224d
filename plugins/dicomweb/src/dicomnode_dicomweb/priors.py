"""Prior studies over DICOMweb: QIDO-RS searches and WADO-RS retrieval for the historic input.

::

    from dicomnode_dicomweb import DicomWebPriors

    class Priors(DicomWebPriors):
        url = "https://pacs.example.org/dicom-web"
        token = {"env": "PACS_TOKEN"}
        modality = "CT"

:class:`DicomWebPriors` is a
:class:`~dicomnode_historic_input.HistoricAbstractInput` whose
:meth:`prior_source` is a :class:`DicomWebSource`: the walk, the
FIND/MOVE/SKIP decisions (``check_query_dataset``, ``modality``,
``query_level``), ``timeout``, ``on_failure``, ``max_attempts``,
``retry_interval`` and ``max_concurrent_retrievals`` are the historic
input's own. A C-FIND becomes a QIDO-RS search at the same level (the
identifier's values are the filters, its empty attributes the fields asked
for); a MOVE target is retrieved with WADO-RS (study, series or instance)
and each instance goes through the node's ingest, like a C-GET's.
``retrieve_mode`` does not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydicom import Dataset

from dicomnode.errors import ConfigurationError
from dicomnode.extension.handles import Source
from dicomnode.net import QueryLevel
from dicomnode_dicomweb.connection import Secret, WebConnection
from dicomnode_historic_input import HistoricAbstractInput, PriorSource, Retrieved, Target

if TYPE_CHECKING:
    from dicomnode.extension.handles import NodeHandle

__all__ = ["DicomWebError", "DicomWebPriors", "DicomWebSource"]

_CONNECTION_SETTINGS = ("url", "token", "username", "password", "headers", "verify", "client_cert", "client_key")


class DicomWebError(ConnectionError):
    """A DICOMweb request failed: the server could not be reached, refused, or answered with an error."""


def _problem(error: Exception, server: WebConnection) -> str:
    response = getattr(error, "response", None)
    if response is not None:
        return f"{server.host} answered HTTP {response.status_code} {response.reason or ''}".strip()
    text = str(error).split("(Caused by", 1)[-1].strip(" )")[:200]
    return f"cannot reach {server.host}: {type(error).__name__}{': ' + text if text else ''}"


class DicomWebSource(PriorSource):
    """A PACS searched with QIDO-RS and retrieved from with WADO-RS (see the module's documentation)."""

    search_name = "QIDO-RS"

    def __init__(self, connection: WebConnection) -> None:
        self.connection = connection

    def __str__(self) -> str:
        return str(self.connection)

    @property
    def turn_key(self) -> Any:
        return ("dicomweb", self.connection.url)

    def search(self, identifier: Dataset, level: QueryLevel) -> Iterable[Dataset]:
        """One QIDO-RS search: the identifier's values filter, its empty attributes are the fields asked for."""
        import requests

        filters: dict[str, Any] = {}
        fields: list[str] = []
        uids: dict[str, str] = {}
        for element in identifier:
            keyword = element.keyword
            value = element.value
            if keyword in ("StudyInstanceUID", "SeriesInstanceUID") and value and _uid_level(keyword) < _depth(level):
                uids[keyword] = str(value)
            elif value in (None, "") or (isinstance(value, list) and not value):
                fields.append(keyword)
            elif keyword == "PatientID" and level is not QueryLevel.STUDY:
                continue  # the study in the path says whose it is; not every server filters on it below
            else:
                filters[keyword] = str(value) if not isinstance(value, list) else ",".join(map(str, value))
        try:
            client = self.connection.client()
            if level is QueryLevel.STUDY:
                found = client.search_for_studies(search_filters=filters, fields=fields)
            elif level is QueryLevel.SERIES:
                found = client.search_for_series(study_instance_uid=uids.get("StudyInstanceUID"),
                                                 search_filters=filters, fields=fields)
            else:
                found = client.search_for_instances(study_instance_uid=uids.get("StudyInstanceUID"),
                                                    series_instance_uid=uids.get("SeriesInstanceUID"),
                                                    search_filters=filters, fields=fields)
        except requests.RequestException as error:
            raise DicomWebError(_problem(error, self.connection)) from None
        except ConfigurationError as error:
            raise DicomWebError(str(error)) from None
        try:
            return [Dataset.from_json(item) for item in found]
        except (ValueError, TypeError, KeyError) as error:
            raise DicomWebError(f"{self.connection.host} answered with a search result that is not "
                                f"DICOM JSON ({type(error).__name__})") from None

    def retrieve(self, target: Target, node: NodeHandle) -> Retrieved:
        """WADO-RS: the study, series or instance, each instance through the node's ingest."""
        import requests

        identifier = target.identifier
        study = str(identifier.get("StudyInstanceUID", ""))
        series = str(identifier.get("SeriesInstanceUID", ""))
        source = Source("", self.connection.host, "wado-rs", id(target))
        completed = failed = 0
        stored: list[Path] = []
        error: str | None = None
        try:
            client = self.connection.client()
            if target.level is QueryLevel.STUDY:
                instances: Iterable[Dataset] = client.iter_study(study)
            elif target.level is QueryLevel.SERIES:
                instances = client.iter_series(study, series)
            else:
                instances = [client.retrieve_instance(study, series, str(identifier.get("SOPInstanceUID", "")))]
            for dataset in instances:
                result = node.ingest(dataset, source)
                if result.path is not None:
                    stored.append(result.path)
                if result.ok:
                    completed += 1
                else:
                    failed += 1
        except requests.RequestException as problem:
            error = f"WADO-RS: {_problem(problem, self.connection)}"
        except ConfigurationError as problem:
            error = f"WADO-RS: {problem}"
        except (ValueError, EOFError) as problem:  # a part that is not a DICOM file
            error = f"WADO-RS: {self.connection.host} sent a part that cannot be read ({type(problem).__name__})"
        finally:
            node.sync(stored)
        return Retrieved(completed=completed, failed=failed, error=error)


def _uid_level(keyword: str) -> int:
    return {"StudyInstanceUID": 1, "SeriesInstanceUID": 2}[keyword]


def _depth(level: QueryLevel) -> int:
    return {QueryLevel.STUDY: 1, QueryLevel.SERIES: 2, QueryLevel.IMAGE: 3}.get(level, 1)


def _as_given(value: object) -> object:
    return value  # checked together when the class is made (or the settings given)


class DicomWebPriors(HistoricAbstractInput):
    """The historic input over DICOMweb: the patient's prior studies by QIDO-RS and WADO-RS.

    Class attributes, besides the historic input's own (``modality``,
    ``query_level``, ``timeout``, ``on_failure``, ``retry_interval``,
    ``max_attempts``, ``max_concurrent_retrievals``, ``check_query_dataset``):

    ``url``
        the PACS's DICOMweb root, such as ``"https://pacs.example.org/dicom-web"`` (required);
    ``token`` / ``username`` and ``password`` / ``headers``
        bearer or basic authentication, custom headers; each secret text
        or ``{"env": "NAME"}``;
    ``verify``, ``client_cert``, ``client_key``
        TLS: verification on by default (or a CA bundle's path; False
        switches it off), a client certificate.
    """

    url: ClassVar[str | None] = None
    token: ClassVar[Secret | None] = None
    username: ClassVar[str | None] = None
    password: ClassVar[Secret | None] = None
    headers: ClassVar[Mapping[str, Secret]] = {}
    verify: ClassVar[bool | str] = True
    client_cert: ClassVar[str | None] = None
    client_key: ClassVar[str | None] = None
    toml_settings: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        **{key: value for key, value in HistoricAbstractInput.toml_settings.items() if key != "address"},
        **{key: _as_given for key in _CONNECTION_SETTINGS},
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.url is not None:
            _connection(cls, cls)

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if settings and self.url is not None:
            _connection(type(self), self)

    def prior_source(self, node: NodeHandle) -> PriorSource:
        """The DICOMweb source at ``url``, with this input's authentication, TLS and ``timeout``."""
        if self.url is None:
            raise ConfigurationError(f"{type(self).__name__}.url is not set: give it the PACS's DICOMweb root "
                                     "such as 'https://pacs.example.org/dicom-web'")
        return DicomWebSource(_connection(type(self), self))


def _connection(cls: type, source: Any) -> WebConnection:
    try:
        return WebConnection(source.url, token=source.token, username=source.username, password=source.password,
                             headers=dict(source.headers or {}), verify=source.verify, client_cert=source.client_cert,
                             client_key=source.client_key, timeout=source.timeout)
    except ConfigurationError as error:
        raise ConfigurationError(f"{cls.__name__}: {error}") from None
