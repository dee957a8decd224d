"""DicomWebOutput: deliver a pipeline's datasets by STOW-RS, retrying, and never dropping anything.

The datasets go to ``{url}/studies`` in batches of ``batch_size`` instances
per request (dicomweb-client encodes each request), ``requests`` of them
under way at once; files go as they are stored, never decoded. Each response is read
per instance (:mod:`dicomnode_dicomweb.stow`): what the server stored is
done, what it refused (FailedSOPSequence, with its FailureReason), did not
acknowledge, or could not be sent because the server was down, refused the
request or did not answer in time, is tried again after an exponentially
growing delay (:class:`~dicomnode.extension.retry.Backoff`), and only that.

After the last attempt the undelivered datasets go to the node's outbox
(through the output's context) with the server and the reason, and
``send()`` returns True: the work is safe, and the node counts this output
as deferred. Without an outbox (no data directory) ``send()`` returns
False. The maintenance thread and ``dicomnode outbox retry`` hand an entry
back to :meth:`DicomWebOutput.retry_outbox_entry`. Secrets given as text
are not written into the entry (see :mod:`dicomnode_dicomweb.connection`).

Every failed attempt is logged (logger ``dicomnode.output.dicomweb``, or the
job's logger when a pipeline bound a context) with the server, the attempt
and the HTTP status or FailureReasons.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
from pydicom import Dataset, dcmread

from dicomnode.dicom.lazy import with_file_meta
from dicomnode.errors import ConfigurationError, StorageError
from dicomnode.extension.outputs import (
    OutboxEntry,
    PipelineOutput,
    Sendable,
    by_instance_uid,
    sop_instance_uid_of,
)
from dicomnode.extension.retry import Backoff
from dicomnode_dicomweb.connection import Secret, WebConnection
from dicomnode_dicomweb.stow import StowClient, StowResponse, describe_reason

__all__ = ["DicomWebOutput", "StowReport"]

logger = logging.getLogger("dicomnode.output.dicomweb")



@attrs.frozen
class StowReport:
    """What the server received.

    ``accepted`` are the SOPInstanceUIDs it stored (over all attempts),
    ``warnings`` those it stored with a WarningReason, ``failed`` the
    instances still undelivered after the last attempt with the last
    FailureReason or problem, ``attempts`` how many attempts were made,
    ``error`` the last request-level problem, ``outbox_entry`` the id of the
    outbox entry holding what was not delivered, and ``unsendable`` how many
    items could not be sent at all (no SOPInstanceUID, unreadable).
    """

    url: str
    accepted: tuple[str, ...] = ()
    warnings: Mapping[str, int | None] = attrs.field(factory=dict)
    failed: Mapping[str, str] = attrs.field(factory=dict)
    attempts: int = 0
    error: str | None = None
    outbox_entry: str | None = None
    unsendable: int = 0

    @property
    def ok(self) -> bool:
        """True when the server stored every instance."""
        return not self.failed and self.unsendable == 0

    @property
    def safe(self) -> bool:
        """True when every instance was stored or waits in the outbox."""
        return self.ok or (self.outbox_entry is not None and self.unsendable == 0)


def _loaded(item: Sendable) -> Dataset | bytes:
    """A dataset as it is; a file as its bytes (sent as stored, never decoded)."""
    return item if isinstance(item, Dataset) else item.read_bytes()


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"DicomWebOutput {name} must be a whole number of at least 1, got {value!r}")
    return value


class DicomWebOutput(PipelineOutput):
    """Send datasets by STOW-RS to a DICOMweb server, in batches, with retries and an outbox.

    Parameters
    ----------
    url:
        the server's DICOMweb root, such as ``https://pacs.example.org/dicom-web``
        (the requests go to ``{url}/studies``).
    datasets:
        pydicom datasets or paths of DICOM files.
    token, username, password, headers:
        authentication: a bearer token, or basic; custom headers (an API key).
        Each secret is text or ``{"env": "NAME"}`` (read from the environment
        when used; an outbox entry can then be retried after a restart).
    verify, client_cert, client_key:
        TLS: verification is on by default (True: the system's CAs; a CA
        bundle's path; False switches it off); a client certificate for mutual TLS.
    attempts, first_delay, max_delay:
        the retry policy (see :class:`~dicomnode.extension.retry.Backoff`).
    timeout:
        seconds to connect, and to wait for each response.
    batch_size:
        instances per STOW-RS request (default 50).
    requests:
        how many requests may be under way at once (default 2: the server
        stores one batch while the next arrives).

    >>> DicomWebOutput("https://pacs.example.org/dicom-web", datasets, token={"env": "PACS_TOKEN"}).send()  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        url: str,
        datasets: Iterable[Sendable],
        *,
        token: Secret | None = None,
        username: str | None = None,
        password: Secret | None = None,
        headers: Mapping[str, Secret] | None = None,
        verify: bool | str | Path = True,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        attempts: int = 5,
        first_delay: float = 1.0,
        max_delay: float = 60.0,
        timeout: float = 30.0,
        batch_size: int = 50,
        requests: int = 2,
    ) -> None:
        if isinstance(datasets, (Dataset, str, Path)):
            raise ConfigurationError("DicomWebOutput datasets must be a list of datasets or paths, not one")
        self.connection = WebConnection(url, token=token, username=username, password=password,
                                        headers=dict(headers or {}), verify=verify,
                                        client_cert=client_cert, client_key=client_key,
                                        timeout=timeout)
        self.datasets: list[Sendable] = [Path(d) if isinstance(d, str) else d for d in datasets]
        self.backoff = Backoff(attempts=attempts, first_delay=first_delay, max_delay=max_delay)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.requests = _positive_int("requests", requests)
        #: what the server received, filled by :meth:`send`
        self.report: StowReport | None = None

    @classmethod
    def from_config(cls, settings: Mapping[str, Any], datasets: Iterable[Sendable]) -> DicomWebOutput:
        """The output of a TOML ``[[outputs]]`` entry with ``type = "dicomweb"``: its keys are the keywords."""
        options = dict(settings)
        if "url" not in options:
            raise ConfigurationError("a dicomweb output needs url, the server's DICOMweb root "
                                     "(url = \"https://pacs.example.org/dicom-web\")")
        try:
            return cls(options.pop("url"), datasets, **options)
        except TypeError as error:
            raise ConfigurationError(f"dicomweb output: {error}") from None

    @property
    def _log(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        context_logger = getattr(self.context, "logger", None)
        return context_logger if context_logger is not None else logger

    def outgoing_datasets(self) -> list[Sendable]:
        """Every dataset or file this output sends (the node validates them before sending)."""
        return list(self.datasets)

    # -- sending ------------------------------------------------------------------------------

    def send(self) -> bool:
        """Deliver every instance; True when each was stored or is in the outbox. See :attr:`report`."""
        server = str(self.connection)
        pending, reasons = by_instance_uid(self.datasets)
        for reason in reasons:
            self._log.error("STOW-RS to %s: %s", server, reason)
        accepted: list[str] = []
        warnings: dict[str, int | None] = {}
        failures: dict[str, str] = {}
        error: str | None = None
        sender = _Sender(self.connection, self.requests)

        def one_attempt() -> str | None:
            nonlocal failures, error
            failures, error = sender.one_pass(pending, self.batch_size, accepted, warnings)
            return _summarise(failures, error, len(pending)) if pending else None

        attempt = self.backoff.run(one_attempt, self._log, f"STOW-RS to {server}") if pending else 0
        if warnings:
            self._log.warning("STOW-RS to %s: %d instance(s) stored with a warning: %s", server, len(warnings),
                              "; ".join(sorted({describe_reason(code) for code in warnings.values()})))
        entry = None
        if pending:
            entry = self._to_outbox(pending, _summarise(failures, error, len(pending)))
        elif attempt > 1:
            self._log.info("STOW-RS to %s: all %d instance(s) stored after %d attempts", server, len(accepted),
                           attempt)
        still = {uid: failures.get(uid, error or "not acknowledged") for uid in pending}
        self.report = StowReport(self.connection.url, tuple(accepted), warnings, still, attempt, error, entry,
                                 len(reasons))
        return self.report.safe

    # -- the outbox ---------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {"connection": self.connection.to_settings(), "batch_size": self.batch_size,
                "requests": self.requests}

    def _to_outbox(self, pending: Mapping[str, Sendable], reason: str) -> str | None:
        message = f"{len(pending)} instance(s) not stored at {self.connection}: {reason}"
        if self.context is None or not self.context.can_defer:
            self._log.error("%s; there is no outbox (the pipeline has no data_directory), so they "
                            "are kept only if the job's data is kept", message)
            return None
        datasets = [with_file_meta(item) if isinstance(item, Dataset) else dcmread(item)
                    for item in pending.values()]
        try:
            entry = self.context.defer(self._settings(), datasets, message)
        except StorageError as error:
            self._log.error("%s; the outbox cannot keep them either: %s", message, error)
            return None
        self._log.error("%s; stored in the outbox as %s", message, entry)
        return entry

    @classmethod
    def retry_outbox_entry(cls, entry: OutboxEntry) -> bool | Sequence[Path]:
        """Send an outbox entry once more; True when the server stored everything.

        When it stores only part of the entry, the files it did not store are
        returned: the outbox keeps only those. When it stored nothing, raises
        ConnectionError naming the server and the reason (the outbox records it).
        """
        settings = entry.settings
        connection = WebConnection.from_settings(settings.get("connection") or {}, entry.id)
        batch_size = int(settings.get("batch_size", 50))
        pending: dict[str, Sendable] = {sop_instance_uid_of(path) or str(path): path for path in entry.paths}
        total = len(pending)
        requests = int(settings.get("requests", 1))
        failures, error = _Sender(connection, requests).one_pass(pending, batch_size, [], {})
        if not pending:
            logger.info("outbox entry %s stored at %s (%d instance(s))", entry.id, connection, total)
            return True
        reason = f"{len(pending)} instance(s) not stored at {connection}: {_summarise(failures, error, len(pending))}"
        if len(pending) == total:
            raise ConnectionError(reason)
        logger.warning("outbox entry %s: %d of %d instance(s) stored at %s; the rest stays: %s",
                       entry.id, total - len(pending), total, connection, reason)
        return [path for path in pending.values() if isinstance(path, Path)]


class _Sender:
    """Sends batches over ``requests`` connections at once, each thread with its own session."""

    def __init__(self, connection: WebConnection, requests: int) -> None:
        self.connection = connection
        self.requests = requests
        self._local = threading.local()

    def _client(self) -> StowClient:
        client: StowClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = StowClient(self.connection)
        return client

    def _batch(self, batch: list[tuple[str, Sendable]]) -> StowResponse:
        try:
            items = [(uid, _loaded(item)) for uid, item in batch]
        except OSError as problem:
            return StowResponse(error=f"cannot read a file to send: {problem}")
        return self._client().store(items)

    def one_pass(self, pending: dict[str, Sendable], batch_size: int, accepted: list[str],
                 warnings: dict[str, int | None]) -> tuple[dict[str, str], str | None]:
        """Send what is pending once; what was stored leaves ``pending`` for ``accepted``.

        Returns the refusals (UID -> FailureReason) and the last request-level error.
        """
        items = list(pending.items())
        batches = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
        if self.requests == 1 or len(batches) == 1:
            responses: Iterable[StowResponse] = map(self._batch, batches)
        else:
            with ThreadPoolExecutor(self.requests, thread_name_prefix="dicomnode-stow") as pool:
                responses = list(pool.map(self._batch, batches))
        failures: dict[str, str] = {}
        error: str | None = None
        for response in responses:
            for uid in response.accepted:
                if pending.pop(uid, None) is not None:
                    accepted.append(uid)
                    if uid in response.warnings:
                        warnings[uid] = response.warnings[uid]
            for uid, reason in response.failed.items():
                failures[uid] = f"FailureReason {describe_reason(reason)}"
            if response.error is not None:
                error = response.error
        return failures, error


def _summarise(failures: Mapping[str, str], error: str | None, missing: int) -> str:
    """One line on why ``missing`` instances are still undelivered."""
    counts: dict[str, int] = {}
    for reason in failures.values():
        counts[reason] = counts.get(reason, 0) + 1
    parts = [f"{reason} for {count} instance(s)" for reason, count in counts.items()]
    if error is not None:
        parts.insert(0, error)
    return "; ".join(parts) or f"{missing} instance(s) were not acknowledged"
