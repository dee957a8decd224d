"""Logging of a node: where lines go, what every line carries, and patient keys that can be pseudonyms.

Every logger is a child of ``dicomnode`` (``dicomnode.node``,
``dicomnode.receive``, ``dicomnode.job``, …). :func:`configure_logging`
attaches one handler to the ``dicomnode`` logger: a stream (stderr) or a
rotating file, writing text in the configured format or one JSON object a
line. Every record that handler sees has ``patient_key``, ``calling_aet`` and
``job_id`` (``-`` on a line that is not about a patient), so a
``log_format`` may use them on any line.

:func:`job_logger` gives a logger adapter that prefixes each line with
``[patient <key> from <AE>]`` and puts the fields into the record.

A log line names a patient by its key only, never by a value of its datasets.
With ``log_patient_keys = "pseudonym"`` the key itself is replaced, wherever a
line names a patient, by :func:`patient_label`: ``P-`` and 12 hex digits of
an HMAC of the key with a secret kept in the data directory, so the lines of
one patient still go together and an operator with access to the data
directory can find them (``dicomnode history`` accepts the pseudonym).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import secrets
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomnode.extension.labels import PatientLabels, patient_label, pseudonym, set_patient_labels

if TYPE_CHECKING:
    from dicomnode.server.config import PipelineConfig

__all__ = ["JobLogger", "PatientLabels", "configure_logging", "configure_node_logging", "job_logger",
           "patient_label", "pseudonym", "set_patient_labels"]

_HANDLER_MARK = "_dicomnode_handler"
#: the fields every record of the node's handler has
RECORD_FIELDS = ("patient_key", "calling_aet", "job_id")
_SECRET_FILE = ".pseudonym-secret"


def read_secret(data_directory: Path | None, *, create: bool = True) -> bytes | None:
    """The pseudonym secret of a data directory (made on first use, readable by its owner only).

    Without a data directory a random secret lives as long as the process:
    its pseudonyms cannot be matched across restarts. None when ``create``
    is False and the data directory has none.
    """
    if data_directory is None:
        return secrets.token_bytes(32) if create else None
    path = Path(data_directory) / _SECRET_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: use theirs
        return path.read_bytes()
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(secret)
    return secret


class JobLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter for one job: every line names the patient and the calling AE title."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Prefix the message and add the job's fields to the record."""
        extra = dict(self.extra or {})
        label = patient_label(str(extra.get("patient_key", "")))
        extra["patient_key"] = label
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[patient {label or '?'} from {extra.get('calling_aet', '?') or '?'}] {msg}", kwargs


def job_logger(name: str, patient_key: str, calling_aet: str, job_id: str = "") -> JobLogger:
    """A :class:`JobLogger` over ``logging.getLogger(name)``."""
    extra = {"patient_key": patient_key, "calling_aet": calling_aet}
    if job_id:
        extra["job_id"] = job_id
    return JobLogger(logging.getLogger(name), extra)


class RecordDefaults(logging.Filter):
    """Give every record the fields a format may name (``-`` when the line is not about a patient).

    Without it a ``log_format`` with ``%(patient_key)s`` fails on every line
    that is not a job's, and the line is lost.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name in RECORD_FIELDS:
            if not getattr(record, name, ""):
                setattr(record, name, "-")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record fields, the traceback.

    A traceback is the ``exception`` field, inside the one line, so a log
    shipper that reads lines keeps it with its message.
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in RECORD_FIELDS:
            value = getattr(record, name, "-")
            if value and value != "-":
                document[name] = value
        document["thread"] = record.threadName
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False)


def configure_logging(level: str = "INFO", format: str | None = None, output: Path | None = None,
                      max_bytes: int = 10_000_000, backup_count: int = 5, *, json_lines: bool = False,
                      labels: PatientLabels | None = None) -> logging.Handler:
    """Send the ``dicomnode`` loggers' lines to stderr, or to a rotating file at ``output``.

    ``json_lines`` writes one JSON object a line instead of ``format``;
    ``labels`` decides how lines name patients (see :func:`patient_label`).
    Replaces a handler an earlier call installed, so a restarted pipeline in
    the same process does not log every line twice. Returns the handler.
    """
    root = logging.getLogger("dicomnode")
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    new: logging.Handler
    if output is None:
        new = logging.StreamHandler()
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        new = logging.handlers.RotatingFileHandler(output, maxBytes=max_bytes, backupCount=backup_count,
                                                   encoding="utf-8")
    if json_lines:
        new.setFormatter(JsonFormatter())
    else:
        new.setFormatter(logging.Formatter(format or "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    new.addFilter(RecordDefaults())
    setattr(new, _HANDLER_MARK, True)
    root.addHandler(new)
    root.setLevel(level)
    set_patient_labels(labels or PatientLabels())
    return new


def configure_node_logging(config: PipelineConfig) -> logging.Handler:
    """:func:`configure_logging` with a node's ``log_*`` settings (the pseudonym secret from its data directory)."""
    secret = read_secret(config.data_directory) if config.log_patient_keys == "pseudonym" else None
    return configure_logging(config.log_level, config.log_format, config.log_output, config.log_max_bytes,
                             config.log_backup_count, json_lines=config.log_json, labels=PatientLabels(secret))
