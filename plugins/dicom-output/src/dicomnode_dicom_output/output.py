"""DicomOutput: deliver a pipeline's datasets by C-STORE, retrying, and never dropping anything.

For each destination the datasets go out through
:func:`dicomnode.net.send_datasets` (one association, presentation
contexts for exactly what is sent, TCP_NODELAY, the peer's maximum PDU). Every
response status is checked. What the peer did not accept — because it refused
the association, was down, did not answer in time or returned a failure
status — is tried again after an exponentially growing delay
(:class:`~dicomnode.extension.retry.Backoff`). A retry sends only the
instances still missing: an instance the peer accepted once is never sent
again.

After the last attempt the undelivered datasets go to the node's outbox
(``data_directory/outbox``, through the output's context) with the
destination and the reason, and ``send()`` returns True: the work is safe,
and the node counts this output as deferred. Without an outbox (no data
directory) ``send()`` returns False and the job fails. The maintenance
thread and ``dicomnode outbox retry`` hand an entry back to
:meth:`DicomOutput.retry_outbox_entry`.

Every failed attempt is logged (logger ``dicomnode.output.dicom``, or the
job's logger when a pipeline bound a context) with the destination, the
attempt number and the status or reason.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
from pydicom import Dataset, dcmread

from dicomnode.dicom.lazy import with_file_meta
from dicomnode.errors import ConfigurationError, DimseError, StorageError, describe_value
from dicomnode.extension.outputs import (
    OutboxEntry,
    PipelineOutput,
    Sendable,
    by_instance_uid,
    sop_instance_uid_of,
)
from dicomnode.extension.retry import Backoff
from dicomnode.net import (
    Address,
    FailedInstance,
    SendResult,
    TlsSettings,
    check_ae_title,
    send_datasets,
)

__all__ = ["DestinationReport", "DicomOutput"]

logger = logging.getLogger("dicomnode.output.dicom")


#: SSL contexts given as objects cannot be written to an outbox entry; within the
#: process that stored the entry, the entry refers to them by a random token
_TLS_CONTEXTS: dict[str, ssl.SSLContext] = {}
_TLS_LOCK = threading.Lock()


@attrs.frozen
class DestinationReport:
    """What one destination received.

    ``accepted`` are the SOPInstanceUIDs the peer accepted (over all attempts),
    ``failed`` the instances still undelivered after the last attempt with the
    last status the peer gave (``status`` is None when the association itself
    failed), ``attempts`` how many associations were tried, ``error`` the last
    association problem, and ``outbox_entry`` the id of the outbox entry that
    holds what was not delivered.
    """

    address: Address
    accepted: tuple[str, ...] = ()
    failed: tuple[FailedInstance, ...] = ()
    attempts: int = 0
    error: str | None = None
    outbox_entry: str | None = None
    #: instances that could not be sent at all (no SOPInstanceUID, unreadable): never in the outbox
    unsendable: int = 0

    @property
    def ok(self) -> bool:
        """True when the peer accepted every instance."""
        return not self.failed and self.error is None

    @property
    def safe(self) -> bool:
        """True when every instance was accepted or waits in the outbox."""
        return self.ok or (self.outbox_entry is not None and self.unsendable == 0)


def _describe_status(status: int | None) -> str:
    return "no status" if status is None else f"status 0x{status:04X}"


def tls_settings(cert: str | Path | None = None, key: str | Path | None = None,
                 ca: str | Path | None = None, *, check_hostname: bool = True) -> TlsSettings:
    """DicomOutput's TLS files as :class:`~dicomnode.net.tls.TlsSettings`: verify the peer against
    ``ca`` (or the system's CAs), present ``cert``/``key`` when the peer asks for a client certificate."""
    for setting, value in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)):
        if value is not None and not Path(value).is_file():
            raise ConfigurationError(f"DicomOutput {setting}: no such file {str(value)!r}")
    if key is not None and cert is None:
        raise ConfigurationError("DicomOutput tls_key needs tls_cert (the certificate of that key)")
    return TlsSettings(cert, key, ca, check_hostname)


class DicomOutput(PipelineOutput):
    """Send datasets by C-STORE to one or more destinations, with retries and an outbox.

    Parameters
    ----------
    destinations:
        pairs of (:class:`~dicomnode.net.Address`, datasets); datasets are
        pydicom datasets or paths of DICOM files.
    ae_title:
        our calling AE title; by default the AE title of the pipeline that bound the
        output (``"DICOMNODE"`` when used on its own).
    attempts, first_delay, max_delay:
        the retry policy per destination (see :class:`~dicomnode.extension.retry.Backoff`).
    timeout:
        seconds any network step may take (connect, association, each C-STORE).
    tls, tls_cert, tls_key, tls_ca, tls_check_hostname:
        DICOM TLS: :class:`~dicomnode.net.tls.TlsSettings` (or an ``ssl.SSLContext``),
        or the certificate/key/CA file paths of one. Prefer the files when a node
        has an outbox: an entry stores them and so can be retried after a restart.
    to_sender:
        also send every dataset of this output to the address the job's images
        came from (the known endpoint the pipeline bound in its context).

    >>> DicomOutput([(Address("127.0.0.1", 11112, "PACS"), [])], "MYNODE").send()  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        destinations: Iterable[tuple[Address, Iterable[Sendable]]],
        ae_title: str | None = None,
        *,
        attempts: int = 5,
        first_delay: float = 1.0,
        max_delay: float = 60.0,
        timeout: float = 30.0,
        tls: TlsSettings | ssl.SSLContext | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_ca: str | Path | None = None,
        tls_check_hostname: bool = True,
        to_sender: bool = False,
    ) -> None:
        pairs: list[tuple[Address, list[Sendable]]] = []
        for number, pair in enumerate(destinations, start=1):
            try:
                address, datasets = pair
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"DicomOutput destination {number} must be an (Address, datasets) pair, got {describe_value(pair)}"
                ) from None
            if not isinstance(address, Address):
                raise ConfigurationError(
                    f"DicomOutput destination {number}: expected a dicomnode Address, got {describe_value(address)}"
                )
            if isinstance(datasets, Dataset):
                raise ConfigurationError(
                    f"DicomOutput destination {number} ({address}): give a list of datasets, not one dataset"
                )
            pairs.append((address, [Path(d) if isinstance(d, str) else d for d in datasets]))
        self.destinations: tuple[tuple[Address, list[Sendable]], ...] = tuple(pairs)
        try:
            self.ae_title = None if ae_title is None else check_ae_title(ae_title, "DicomOutput ae_title")
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        self.backoff = Backoff(attempts=attempts, first_delay=first_delay, max_delay=max_delay)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigurationError(f"DicomOutput timeout must be a number of seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        if tls is not None and any(v is not None for v in (tls_cert, tls_key, tls_ca)):
            raise ConfigurationError("DicomOutput: give either tls (TlsSettings or an SSLContext) or "
                                     "tls_cert/tls_key/tls_ca")
        if tls is not None and not isinstance(tls, (TlsSettings, ssl.SSLContext)):
            raise ConfigurationError(f"DicomOutput tls must be TlsSettings or an ssl.SSLContext, got {tls!r}")
        if any(v is not None for v in (tls_cert, tls_key, tls_ca)):
            tls = tls_settings(tls_cert, tls_key, tls_ca, check_hostname=tls_check_hostname)
        if isinstance(tls, TlsSettings):
            tls.client_context()  # a certificate or key that cannot be used fails here, not at the first send
        self.tls: TlsSettings | ssl.SSLContext | None = tls
        self.to_sender = bool(to_sender)
        #: datasets meant for the sender only (see :meth:`back_to_sender`)
        self.sender_datasets: list[Sendable] = []
        #: one :class:`DestinationReport` per destination, filled by :meth:`send`
        self.report: list[DestinationReport] = []

    # -- sending ------------------------------------------------------------------------------

    @property
    def calling_ae_title(self) -> str:
        """The AE title we call with: the one given, else the bound pipeline's, else DICOMNODE."""
        if self.ae_title is not None:
            return self.ae_title
        pipeline_ae: str | None = getattr(self.context, "ae_title", None)
        return pipeline_ae or "DICOMNODE"

    @property
    def _log(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        context_logger = getattr(self.context, "logger", None)
        return context_logger if context_logger is not None else logger

    @classmethod
    def back_to_sender(cls, datasets: Iterable[Sendable], ae_title: str | None = None,
                       **options: Any) -> DicomOutput:
        """An output that delivers ``datasets`` only to the node the job's images came from.

        The sender must be a known endpoint of the pipeline (its calling AE title
        a key of ``known_endpoints``); ``options`` are those of the constructor.

        >>> DicomOutput.back_to_sender(result_datasets)  # doctest: +SKIP
        """
        output = cls([], ae_title, to_sender=True, **options)
        output.sender_datasets = list(datasets)
        return output

    def _all_destinations(self) -> list[tuple[Address, list[Sendable]]]:
        pairs = list(self.destinations)
        if not self.to_sender:
            return pairs
        sender = getattr(self.context, "responding_address", None)
        if sender is None:
            raise ConfigurationError(
                "DicomOutput to_sender=True, but the job has no responding address: the images "
                "must come from a calling AE title listed in the pipeline's known_endpoints"
            )
        seen: set[int] = set()
        everything: list[Sendable] = []
        for datasets in [self.sender_datasets, *(datasets for _, datasets in pairs)]:
            for item in datasets:
                if id(item) not in seen:
                    seen.add(id(item))
                    everything.append(item)
        return [*pairs, (sender, everything)]

    def describe_destination(self) -> str:
        """The destinations' AE titles and addresses (and "the sender" when ``to_sender``)."""
        where = [str(address) for address, _ in self.destinations]
        if self.to_sender:
            sender = getattr(self.context, "responding_address", None)
            where.append(f"the sender {sender}" if sender is not None else "the sender")
        return ", ".join(where)

    def outgoing_datasets(self) -> list[Sendable]:
        """Every dataset or file this output sends, once (the node validates them before sending)."""
        seen: set[int] = set()
        result: list[Sendable] = []
        for datasets in [self.sender_datasets, *(datasets for _, datasets in self.destinations)]:
            for item in datasets:
                if id(item) not in seen:
                    seen.add(id(item))
                    result.append(item)
        return result

    def send(self) -> bool:
        """Deliver to every destination; True when every instance was accepted or is in the outbox.

        Destinations are served in parallel, so a peer that is down does not
        hold up the others while it is retried. :attr:`report` says, per
        destination, what was accepted and what went to which outbox entry.
        """
        destinations = self._all_destinations()
        if len(destinations) <= 1:
            self.report = [self._deliver(address, datasets) for address, datasets in destinations]
        else:
            with ThreadPoolExecutor(len(destinations), thread_name_prefix="dicomnode-output") as pool:
                self.report = list(pool.map(lambda pair: self._deliver(*pair), destinations))
        return all(report.safe for report in self.report)

    def _deliver(self, address: Address, datasets: Sequence[Sendable]) -> DestinationReport:
        pending, reasons = by_instance_uid(datasets)
        unsendable = [FailedInstance("", None, reason) for reason in reasons]
        for reason in reasons:
            self._log.error("C-STORE to %s: %s", address, reason)
        accepted: list[str] = []
        result: SendResult | None = None

        def one_attempt() -> str | None:
            nonlocal result
            result = send_datasets(address, list(pending.values()), ae_title=self.calling_ae_title,
                                   timeout=self.timeout, tls=self.tls)
            for uid in result.accepted:
                if pending.pop(uid, None) is not None:
                    accepted.append(uid)
            return _summarise(result, len(pending)) if pending else None

        attempts = self.backoff.run(one_attempt, self._log, f"C-STORE to {address}") if pending else 0
        if not pending:
            if attempts > 1:
                self._log.info("C-STORE to %s: all %d instance(s) delivered after %d attempts",
                               address, len(accepted), attempts)
            return DestinationReport(address, tuple(accepted), tuple(unsendable), attempts, None, None)
        assert result is not None  # at least one attempt ran, since pending was not empty
        failed = (*unsendable, *_undelivered(result, pending))
        entry = self._to_outbox(address, pending, _summarise(result, len(pending)))
        return DestinationReport(address, tuple(accepted), failed, attempts, result.error, entry, len(unsendable))

    # -- the outbox ---------------------------------------------------------------------------

    def _settings(self, address: Address) -> dict[str, Any]:
        tls: dict[str, Any] | None = None
        if isinstance(self.tls, TlsSettings):
            tls = self.tls.to_json()
        elif self.tls is not None:
            token = secrets.token_hex(8)
            with _TLS_LOCK:
                _TLS_CONTEXTS[token] = self.tls
            tls = {"context": token}
        return {
            "destination": {"ip": address.ip, "port": address.port, "ae_title": address.ae_title},
            "ae_title": self.calling_ae_title,
            "timeout": self.timeout,
            "tls": tls,
        }

    def _to_outbox(self, address: Address, pending: Mapping[str, Sendable], reason: str) -> str | None:
        message = f"{len(pending)} instance(s) not delivered to {address}: {reason}"
        if self.context is None or not self.context.can_defer:
            self._log.error("%s; there is no outbox (the pipeline has no data_directory), so they "
                            "are kept only if the job's data is kept", message)
            return None
        datasets = [with_file_meta(item) if isinstance(item, Dataset) else dcmread(item)
                    for item in pending.values()]
        try:
            entry = self.context.defer(self._settings(address), datasets, message)
        except StorageError as error:
            self._log.error("%s; the outbox cannot keep them either: %s", message, error)
            return None
        self._log.error("%s; stored in the outbox as %s", message, entry)
        return entry

    @classmethod
    def retry_outbox_entry(cls, entry: OutboxEntry) -> bool | Sequence[Path]:
        """Send an outbox entry once more (one association); True when the peer accepted everything.

        When the peer accepts only part of the entry, the files it did not
        accept are returned: the outbox keeps only those, so what was accepted
        is never sent again. When nothing was accepted, raises
        :class:`~dicomnode.errors.DimseError` naming the destination and the
        status or reason (the outbox records it).
        """
        address, ae_title, timeout, tls = _from_settings(entry)
        paths = entry.paths
        result = send_datasets(address, paths, ae_title=ae_title, timeout=timeout, tls=tls)
        pending = {sop_instance_uid_of(path) or str(path): path for path in paths}
        for uid in result.accepted:
            pending.pop(uid, None)
        if not pending:
            logger.info("outbox entry %s delivered to %s (%d instance(s))", entry.id, address, len(paths))
            return True
        reason = f"{len(pending)} instance(s) not delivered to {address}: {_summarise(result, len(pending))}"
        if len(pending) == len(paths):
            raise DimseError(reason)
        logger.warning("outbox entry %s: %d of %d instance(s) delivered to %s; the rest stays: %s",
                       entry.id, len(paths) - len(pending), len(paths), address, reason)
        return list(pending.values())


def _summarise(result: SendResult, missing: int) -> str:
    """One line on why ``missing`` instances are still undelivered."""
    if result.error:
        # our messages name the destination already
        return result.error.removeprefix(f"{result.address}: ")
    statuses: dict[str, int] = {}
    for failure in result.failed:
        key = failure.reason or _describe_status(failure.status)
        statuses[key] = statuses.get(key, 0) + 1
    if not statuses:
        return f"{missing} instance(s) were not sent"
    return "; ".join(f"{key} for {count} instance(s)" for key, count in statuses.items())


def _undelivered(result: SendResult, pending: Mapping[str, Sendable]) -> tuple[FailedInstance, ...]:
    """A FailedInstance for each undelivered instance, with the peer's last word on it."""
    known = {failure.sop_instance_uid: failure for failure in result.failed}
    reason = result.error or "not sent"
    return tuple(known.get(uid) or FailedInstance(uid, None, reason) for uid in pending)


def _from_settings(entry: OutboxEntry) -> tuple[Address, str, float, TlsSettings | ssl.SSLContext | None]:
    """Rebuild what a retry needs from an outbox entry's settings; ValueError says what is wrong."""
    settings = entry.settings
    try:
        destination = settings["destination"]
        address = Address(destination["ip"], int(destination["port"]), destination["ae_title"])
        ae_title = str(settings["ae_title"])
        timeout = float(settings["timeout"])
        stored = settings.get("tls")
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"outbox entry {entry.id}: its settings are not those of a DicomOutput "
                         f"({type(error).__name__}: {error})") from None
    tls: TlsSettings | ssl.SSLContext | None = None
    if stored:
        if "context" in stored:
            with _TLS_LOCK:
                found = _TLS_CONTEXTS.get(str(stored["context"]))
            if found is None:
                raise ValueError(
                    f"outbox entry {entry.id} needs the TLS context of the process that stored it; "
                    "give DicomOutput tls_cert/tls_key/tls_ca paths so entries can be retried after a restart"
                )
            tls = found
        else:
            # entries written before TlsSettings named the files cert, key and ca
            tls = tls_settings(stored.get("certificate", stored.get("cert")), stored.get("key"), stored.get("ca"),
                               check_hostname=bool(stored.get("check_hostname", True)))
    return address, ae_title, timeout, tls
