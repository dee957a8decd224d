"""The outbox: undelivered results, kept on disk until an output delivers them.

Output-agnostic: an entry records the *registered output name* (``"dicom"``),
the settings that output needs to try again (JSON), the datasets as DICOM
files and the history of attempts. Layout::

    data_directory/outbox/<entry id>/manifest.json
                                    /000000.dcm, 000001.dcm, …

Files are written to a temporary folder that is renamed into place, so a
crash never leaves a half-written entry that looks complete. The
maintenance thread (and ``dicomnode outbox``) calls :meth:`Outbox.retry`,
which hands the entry to ``registry.output(name).retry_outbox_entry(entry)``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from pydicom import Dataset

from dicomnode.dicom.lazy import with_file_meta
from dicomnode.errors import StorageError
from dicomnode.extension.outputs import OutboxEntry
from dicomnode.server.logs import patient_label

if TYPE_CHECKING:
    from dicomnode.plugins import PluginRegistry
    from dicomnode.server.events import NodeEvents

__all__ = ["Outbox", "OutboxEntry"]

logger = logging.getLogger("dicomnode.outbox")

JSON = Any
_MANIFEST = "manifest.json"
_CLAIM = ".retrying"
#: a claim older than this (seconds) was left by a process that died while retrying
_STALE_CLAIM = 3600.0


class Outbox:
    """A folder of :class:`OutboxEntry` s; safe to use from several threads of one process.

    What happens to its entries is reported to ``events``.
    """

    def __init__(self, directory: Path | str, *, events: NodeEvents | None = None) -> None:
        from dicomnode.server.events import NodeEvents

        self.directory = Path(directory)
        self.events = events if events is not None else NodeEvents()

    def put(self, output_name: str, settings: Mapping[str, JSON], datasets: Sequence[Dataset],
            reason: str, *, patient_key: str = "", job_id: str = "") -> OutboxEntry:
        """Store datasets an output could not deliver, with what it needs to retry.

        ``patient_key`` and ``job_id`` say whose result it is and which job made it.
        """
        try:
            json.dumps(dict(settings))
        except (TypeError, ValueError) as error:
            raise ValueError(f"outbox settings must be JSON-serialisable: {error}") from None
        entry_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".{entry_id}.tmp"
        try:
            staging.mkdir()
            files = []
            for index, dataset in enumerate(datasets):
                name = f"{index:06d}.dcm"
                with_file_meta(dataset).save_as(staging / name, enforce_file_format=True)
                files.append(name)
            now = time.time()
            entry = OutboxEntry(entry_id, self.directory / entry_id, output_name, dict(settings), reason,
                                0, now, None, tuple(files), patient_key, job_id)
            _write_manifest(staging, entry)
            os.replace(staging, entry.directory)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise StorageError(f"cannot write an outbox entry in {self.directory}: {error}") from error
        logger.warning("outbox: stored %d dataset(s) of patient %s for output %r as %s: %s",
                       len(files), patient_label(patient_key) or "?", output_name, entry_id, reason)
        self.events.outbox_stored(entry)
        return entry

    def entries(self) -> list[OutboxEntry]:
        """Every complete entry, oldest first."""
        if not self.directory.is_dir():
            return []
        result = []
        for folder in sorted(self.directory.iterdir()):
            if folder.name.startswith(".") or not (folder / _MANIFEST).is_file():
                continue
            try:
                result.append(_read_manifest(folder))
            except (OSError, ValueError, KeyError) as error:
                logger.error("outbox: cannot read entry %s: %s", folder, error)
        return sorted(result, key=lambda entry: entry.created)

    def get(self, entry_id: str) -> OutboxEntry:
        """The entry with this id; LookupError naming the known ids when there is none."""
        for entry in self.entries():
            if entry.id == entry_id:
                return entry
        raise LookupError(f"no outbox entry {entry_id!r} in {self.directory}")

    def remove(self, entry: OutboxEntry) -> None:
        """Delete an entry (after it was delivered)."""
        shutil.rmtree(entry.directory, ignore_errors=True)

    def record_attempt(self, entry: OutboxEntry, reason: str) -> OutboxEntry:
        """Note a failed attempt (count, time, reason); returns the updated entry."""
        updated = attrs.evolve(entry, attempts=entry.attempts + 1, last_attempt=time.time(), reason=reason)
        _write_manifest(entry.directory, updated)
        return updated

    def retry(self, entry: OutboxEntry, registry: PluginRegistry) -> bool:
        """Hand the entry to its output's ``retry_outbox_entry``; remove it when delivered.

        An entry another thread or process is retrying right now (the node's
        maintenance thread and ``dicomnode outbox retry`` at the same time) is
        left alone, so nothing is delivered twice: False, and no attempt counted.
        """
        claim = entry.directory / _CLAIM
        try:
            descriptor = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if time.time() - claim.stat().st_mtime < _STALE_CLAIM:
                logger.info("outbox: %s is being retried elsewhere; skipped", entry.id)
                return False
            claim.unlink(missing_ok=True)  # left by a process that died while retrying
            return self.retry(entry, registry)
        except FileNotFoundError:
            return False  # delivered and removed meanwhile
        os.close(descriptor)
        try:
            return self._retry_claimed(entry, registry)
        finally:
            claim.unlink(missing_ok=True)

    def _retry_claimed(self, entry: OutboxEntry, registry: PluginRegistry) -> bool:
        remaining: Sequence[Path] = ()
        try:
            output = registry.output(entry.output_name)
            outcome = output.retry_outbox_entry(entry)
            if isinstance(outcome, bool):
                delivered = outcome
                reason = "" if delivered else f"output {entry.output_name!r} could not deliver it"
            else:
                remaining = [Path(path) for path in outcome]
                delivered = not remaining
                reason = f"{len(remaining)} of {len(entry.files)} file(s) still undelivered"
        except Exception as error:  # an output's retry may fail in any way; the entry stays
            delivered, reason = False, f"{type(error).__name__}: {error}"
        if delivered:
            self.remove(entry)
            logger.info("outbox: delivered %s (patient %s) with output %r", entry.id,
                        patient_label(entry.patient_key) or "?", entry.output_name)
            self.events.outbox_attempt(entry, True)
            return True
        if remaining:
            entry = self._keep_only(entry, remaining)
        self.record_attempt(entry, reason)
        logger.warning("outbox: %s still undelivered after attempt %d: %s", entry.id, entry.attempts + 1, reason)
        self.events.outbox_attempt(entry, False, reason)
        return False

    def _keep_only(self, entry: OutboxEntry, remaining: Sequence[Path]) -> OutboxEntry:
        """Drop the files of an entry that were delivered, so they are never sent again."""
        keep = {path.name for path in remaining}
        updated = attrs.evolve(entry, files=tuple(name for name in entry.files if name in keep))
        _write_manifest(entry.directory, updated)
        for name in entry.files:
            if name not in keep:
                (entry.directory / name).unlink(missing_ok=True)
        return updated


def _write_manifest(folder: Path, entry: OutboxEntry) -> None:
    manifest = {
        "id": entry.id,
        "output": entry.output_name,
        "settings": dict(entry.settings),
        "reason": entry.reason,
        "attempts": entry.attempts,
        "created": entry.created,
        "last_attempt": entry.last_attempt,
        "files": list(entry.files),
        "patient_key": entry.patient_key,
        "job_id": entry.job_id,
    }
    temporary = folder / f".{_MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(temporary, folder / _MANIFEST)


def _read_manifest(folder: Path) -> OutboxEntry:
    data = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
    return OutboxEntry(
        id=str(data["id"]), directory=folder, output_name=str(data["output"]),
        settings=dict(data["settings"]), reason=str(data["reason"]), attempts=int(data["attempts"]),
        created=float(data["created"]),
        last_attempt=None if data["last_attempt"] is None else float(data["last_attempt"]),
        files=tuple(data["files"]), patient_key=str(data.get("patient_key", "")),
        job_id=str(data.get("job_id", "")),
    )
