"""Logging of a node: where lines go, and the patient key and calling AE title on every job line.

Every logger is a child of ``dicomnode`` (``dicomnode.node``,
``dicomnode.receive``, ``dicomnode.job``, …). :func:`configure_logging`
attaches one handler to the ``dicomnode`` logger: a stream (stderr) or a
rotating file. :func:`job_logger` gives a logger adapter that prefixes each
line with ``[patient <key> from <AE>]`` and puts ``patient_key`` and
``calling_aet`` into the record, so a format may use them too.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

__all__ = ["JobLogger", "configure_logging", "job_logger"]

_HANDLER_MARK = "_dicomnode_handler"


class JobLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter for one job: every line names the patient and the calling AE title."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Prefix the message and add the job's fields to the record."""
        extra = dict(self.extra or {})
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[patient {extra.get('patient_key', '?')} from {extra.get('calling_aet', '?') or '?'}] {msg}", kwargs


def job_logger(name: str, patient_key: str, calling_aet: str) -> JobLogger:
    """A :class:`JobLogger` over ``logging.getLogger(name)``."""
    return JobLogger(logging.getLogger(name), {"patient_key": patient_key, "calling_aet": calling_aet})


def configure_logging(level: str = "INFO", format: str | None = None, output: Path | None = None,
                      max_bytes: int = 10_000_000, backup_count: int = 5) -> logging.Handler:
    """Send the ``dicomnode`` loggers' lines to stderr, or to a rotating file at ``output``.

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
    new.setFormatter(logging.Formatter(format or "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    setattr(new, _HANDLER_MARK, True)
    root.addHandler(new)
    root.setLevel(level)
    return new
