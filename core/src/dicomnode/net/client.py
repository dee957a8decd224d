"""Client helpers for talking to other DICOM nodes: C-ECHO, C-FIND, C-MOVE, C-GET (and C-STORE).

Every helper opens its own association, sets TCP_NODELAY on its socket,
announces an unlimited maximum PDU for what it receives, bounds every
network step by ``timeout`` (each PDU the peer sends included) and
optionally speaks TLS (:class:`~dicomnode.net.tls.TlsSettings` or an
``ssl.SSLContext``)::

    from dicomnode.net import Address, echo, send_datasets

    pacs = Address("127.0.0.1", 4242, "ORTHANC")
    echo(pacs)                                  # 0x0000, or AssociationError
    result = send_datasets(pacs, paths)         # never raises for the peer's failures
    if not result.ok:
        print(result.failed, result.error)

C-STORE lives in :mod:`dicomnode.net.sending` and is re-exported here.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

import attrs
from pydicom import Dataset
from pynetdicom import StoragePresentationContexts, evt
from pynetdicom.presentation import build_context, build_role
from pynetdicom.status import code_to_category

from dicomnode.errors import AssociationError, DimseError
from dicomnode.net.adapter import parked_reactor, read_pdus, wake_on_data
from dicomnode.net.address import Address, check_ae_title
from dicomnode.net.pdata import answer_c_stores_directly
from dicomnode.net.sending import FailedInstance, SendResult, send_datasets
from dicomnode.net.tls import TlsSettings, client_context
from dicomnode.net.transport import application_entity, associate, end, no_response_reason

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = [
    "Address",
    "FailedInstance",
    "MoveResult",
    "QueryLevel",
    "SendResult",
    "check_ae_title",
    "echo",
    "find",
    "get",
    "move",
    "send_datasets",
]

logger = logging.getLogger("dicomnode.dimse")

# -- query / retrieve ----------------------------------------------------------------------------

_VERIFICATION = "1.2.840.10008.1.1"
#: (model, operation) -> SOP class UID of the Query/Retrieve information model
_MODELS = {
    ("patient", "find"): "1.2.840.10008.5.1.4.1.2.1.1",
    ("patient", "move"): "1.2.840.10008.5.1.4.1.2.1.2",
    ("patient", "get"): "1.2.840.10008.5.1.4.1.2.1.3",
    ("study", "find"): "1.2.840.10008.5.1.4.1.2.2.1",
    ("study", "move"): "1.2.840.10008.5.1.4.1.2.2.2",
    ("study", "get"): "1.2.840.10008.5.1.4.1.2.2.3",
}
#: what C-GET accepts the instances in: uncompressed first, then the common compressed syntaxes,
#: so the peer never has to transcode
_GET_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]


class QueryLevel(str, Enum):
    """The Query/Retrieve Level of a C-FIND, C-MOVE or C-GET (QueryRetrieveLevel)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


@attrs.frozen
class MoveResult:
    """The outcome of a C-MOVE or C-GET: sub-operation counts, the final status, and why it failed.

    ``status`` is the final response status (None if none came); ``error``
    says why the association failed or the retrieve did not finish.
    ``failed_sop_instance_uids`` comes from the peer's final response.
    """

    completed: int = 0
    failed: int = 0
    warning: int = 0
    status: int | None = None
    error: str | None = None
    failed_sop_instance_uids: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the retrieve finished with success and no sub-operation failed."""
        return self.error is None and self.status == 0x0000 and self.failed == 0


def _level(level: QueryLevel | str) -> QueryLevel:
    try:
        return QueryLevel(level.upper() if isinstance(level, str) else level)
    except ValueError:
        allowed = ", ".join(member.value for member in QueryLevel)
        raise ValueError(f"level must be one of {allowed}, got {level!r}") from None


def _model(model: str, operation: str, level: QueryLevel) -> str:
    uid = _MODELS.get((model, operation))
    if uid is None:
        raise ValueError(f"model must be 'study' or 'patient', got {model!r}")
    if model == "study" and level is QueryLevel.PATIENT:
        raise ValueError("the study root model has no PATIENT level: use model='patient' or level=STUDY")
    return uid


def _identifier(query: Dataset, level: QueryLevel) -> Dataset:
    """A copy of ``query`` with its QueryRetrieveLevel set; the caller's dataset is not changed."""
    identifier = Dataset()
    identifier.update(query)
    identifier.QueryRetrieveLevel = level.value
    return identifier


def _status_code(status: Dataset | None) -> int | None:
    if not status or "Status" not in status:
        return None
    return int(status.Status)


def _open(address: Address, contexts: list[Any], *, ae_title: str, timeout: float,
          tls: TlsSettings | ssl.SSLContext | None, ext_neg: list[Any] | None = None,
          handlers: list[Any] | None = None) -> Association:
    ae = application_entity(ae_title, timeout)
    return associate(ae, address, contexts, timeout=timeout, tls=client_context(tls), ext_neg=ext_neg,
                     handlers=handlers)


@contextmanager
def _exchange(assoc: Association, timeout: float) -> Iterator[Association]:
    """Requests and responses on ``assoc`` with its reactor parked; the association ends after.

    Its DUL thread waits for the peer's data instead of polling for it and
    reads each PDU in large pieces (what C-GET brings back is whole images),
    each within ``timeout``.
    """
    wake_on_data(assoc)
    read_pdus(assoc, timeout)
    try:
        with parked_reactor(assoc):
            yield assoc
    finally:
        end(assoc)


def echo(address: Address, *, ae_title: str = "DICOMNODE", timeout: float = 10.0,
         tls: TlsSettings | ssl.SSLContext | None = None) -> int:
    """C-ECHO ``address`` and return the response status (``0x0000`` is success).

    Raises :class:`~dicomnode.errors.AssociationError` when the peer cannot be
    reached, refuses the association or does not answer within ``timeout``.
    """
    assoc = _open(address, [build_context(_VERIFICATION)], ae_title=ae_title, timeout=timeout, tls=tls)
    with _exchange(assoc, timeout):
        code = _status_code(assoc.send_c_echo())
        if code is None:
            raise AssociationError(no_response_reason(assoc, address, "C-ECHO", timeout))
    logger.info("C-ECHO %s: status 0x%04X", address, code)
    return code


def find(address: Address, query: Dataset, *, level: QueryLevel | str = QueryLevel.STUDY,
         model: Literal["study", "patient"] = "study", ae_title: str = "DICOMNODE",
         timeout: float = 30.0, tls: TlsSettings | ssl.SSLContext | None = None) -> list[Dataset]:
    """C-FIND ``address`` with ``query`` (the keys to match and return); return every match.

    ``level`` sets QueryRetrieveLevel. Raises AssociationError when no
    association is made, and DimseError when the peer answers with a failure
    status or stops answering.

    >>> query = Dataset(); query.PatientID = "DEMO001"; query.StudyInstanceUID = ""  # doctest: +SKIP
    >>> [s.StudyInstanceUID for s in find(pacs, query, level="STUDY")]  # doctest: +SKIP
    """
    query_level = _level(level)
    sop_class = _model(model, "find", query_level)
    assoc = _open(address, [build_context(sop_class)], ae_title=ae_title, timeout=timeout, tls=tls)
    matches: list[Dataset] = []
    with _exchange(assoc, timeout):
        for status, identifier in assoc.send_c_find(_identifier(query, query_level), sop_class):
            code = _status_code(status)
            if code is None:
                raise DimseError(no_response_reason(assoc, address, "C-FIND", timeout))
            category = code_to_category(code)
            if category == "Pending":
                if identifier is not None:
                    matches.append(identifier)
            elif category != "Success":
                comment = status.get("ErrorComment", "")
                raise DimseError(f"{address} answered the C-FIND with status 0x{code:04X} ({category})"
                                 + (f": {comment}" if comment else ""))
    logger.info("C-FIND %s at %s level: %d match(es)", address, query_level.value, len(matches))
    return matches


def _uid_list(identifier: Dataset | None) -> tuple[str, ...]:
    """FailedSOPInstanceUIDList of a final C-MOVE/C-GET response, as a tuple."""
    if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
        return ()
    element = identifier["FailedSOPInstanceUIDList"]
    values = element.value if element.VM > 1 else [element.value]
    return tuple(str(uid) for uid in values if uid)


def _collect_retrieve(assoc: Association, responses: Iterator[tuple[Dataset, Dataset | None]],
                      address: Address, operation: str, timeout: float) -> MoveResult:
    counts = {"NumberOfCompletedSuboperations": 0, "NumberOfFailedSuboperations": 0,
              "NumberOfWarningSuboperations": 0}
    final: int | None = None
    error: str | None = None
    failed_uids: tuple[str, ...] = ()
    for status, identifier in responses:
        code = _status_code(status)
        if code is None:
            error = no_response_reason(assoc, address, operation, timeout)
            break
        for keyword in counts:
            if keyword in status and status[keyword].value is not None:
                counts[keyword] = int(status[keyword].value)
        if code_to_category(code) == "Pending":
            continue
        final = code
        failed_uids = _uid_list(identifier)
        if code_to_category(code) not in ("Success", "Warning"):
            comment = status.get("ErrorComment", "")
            error = (f"{address} ended the {operation} with status 0x{code:04X} ({code_to_category(code)})"
                     + (f": {comment}" if comment else ""))
    result = MoveResult(completed=counts["NumberOfCompletedSuboperations"],
                        failed=counts["NumberOfFailedSuboperations"],
                        warning=counts["NumberOfWarningSuboperations"],
                        status=final, error=error, failed_sop_instance_uids=failed_uids)
    logger.info("%s %s: %s", operation, address, result)
    return result


def move(address: Address, query: Dataset, destination_ae: str, *,
         level: QueryLevel | str = QueryLevel.STUDY, model: Literal["study", "patient"] = "study",
         ae_title: str = "DICOMNODE", timeout: float = 60.0,
         tls: TlsSettings | ssl.SSLContext | None = None) -> MoveResult:
    """C-MOVE what ``query`` selects from ``address`` to the node known to it as ``destination_ae``.

    The peer opens its own association to the destination, so the
    destination must be in the peer's list of known nodes. Peer and network
    failures do not raise: they are in :attr:`MoveResult.error`.
    ``timeout`` bounds the wait for each response, the sub-operations included.
    """
    check_ae_title(destination_ae, "destination AE title")
    query_level = _level(level)
    sop_class = _model(model, "move", query_level)
    try:
        assoc = _open(address, [build_context(sop_class)], ae_title=ae_title, timeout=timeout, tls=tls)
    except AssociationError as error:
        return MoveResult(error=str(error))
    with _exchange(assoc, timeout):
        return _collect_retrieve(assoc, assoc.send_c_move(_identifier(query, query_level), destination_ae, sop_class),
                                 address, "C-MOVE", timeout)


#: the C-GET storage handler: receives each instance (with its file meta); returns a C-STORE
#: status (None means success)
StorageHandler = Callable[[Dataset], "int | None"]


def get(address: Address, query: Dataset, *, storage_handler: StorageHandler,
        level: QueryLevel | str = QueryLevel.STUDY, model: Literal["study", "patient"] = "study",
        ae_title: str = "DICOMNODE", timeout: float = 60.0, tls: TlsSettings | ssl.SSLContext | None = None,
        sop_classes: list[str] | None = None) -> MoveResult:
    """C-GET what ``query`` selects from ``address``; each instance is given to ``storage_handler``.

    The instances come back on the same association (we take the SCP role
    for their storage SOP classes: ``sop_classes``, by default pynetdicom's
    120 common storage classes). An exception in the handler answers that
    C-STORE with 0xC000 and is logged. Peer and network failures do not
    raise: they are in :attr:`MoveResult.error`.
    """
    query_level = _level(level)
    sop_class = _model(model, "get", query_level)
    classes = sop_classes if sop_classes is not None else [
        str(cx.abstract_syntax) for cx in StoragePresentationContexts]
    if len(classes) > 127:
        raise ValueError(f"C-GET can take at most 127 storage SOP classes, got {len(classes)}")

    def on_store(event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        try:
            status = storage_handler(dataset)
        except Exception:
            logger.exception("the C-GET storage handler failed on %s", dataset.get("SOPInstanceUID"))
            return 0xC000
        return 0x0000 if status is None else int(status)

    contexts = [build_context(sop_class)]
    contexts += [build_context(uid, _GET_TRANSFER_SYNTAXES) for uid in classes]
    roles = [build_role(uid, scp_role=True) for uid in classes]
    try:
        assoc = _open(address, contexts, ae_title=ae_title, timeout=timeout, tls=tls, ext_neg=roles,
                      handlers=[(evt.EVT_C_STORE, on_store)])
    except AssociationError as error:
        return MoveResult(error=str(error))
    answer_c_stores_directly(assoc)
    with _exchange(assoc, timeout):
        return _collect_retrieve(assoc, assoc.send_c_get(_identifier(query, query_level), sop_class),
                                 address, "C-GET", timeout)
