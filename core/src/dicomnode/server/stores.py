"""The data directory: where a node keeps what it must not lose.

::

    data_directory/incoming/         received instances, until their job succeeds   (storage.InstanceStore)
                  /quarantine/       jobs that did not finish, with their images     (quarantine.Quarantine)
                  /outbox/           results waiting for a destination to come back (outbox.Outbox)
                  /history.sqlite3   what happened to each patient                  (history.History)

:class:`DataDirectory` holds them together, so that what ties them is in
one place: when the outbox delivers an entry, the quarantine entry that
waits for it is updated (and closed when nothing else is pending), and what
the quarantine and the outbox do is reported to the node's events (which
the history records).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import Dataset

from dicomnode.errors import ConfigurationError
from dicomnode.server.events import NodeEvents
from dicomnode.server.history import FILE_NAME, History, HistoryRecorder
from dicomnode.server.outbox import Outbox
from dicomnode.server.quarantine import Quarantine
from dicomnode.server.storage import FsyncPolicy, InstanceStore

if TYPE_CHECKING:
    from dicomnode.extension.outputs import OutboxEntry
    from dicomnode.plugins import PluginRegistry

__all__ = ["DataDirectory"]

logger = logging.getLogger("dicomnode.storage")


class DataDirectory:
    """The incoming store, the quarantine, the outbox and the history of one data directory.

    ``events`` are the node's (what the quarantine and the outbox do is
    reported there); without them, a data directory used on its own (by the
    command line) records that in its history itself.
    """

    def __init__(self, path: Path | str, fsync: FsyncPolicy = "none", *, events: NodeEvents | None = None) -> None:
        self.path = Path(path)
        self.history = History(self.path / FILE_NAME)
        if events is None:
            events = NodeEvents([HistoryRecorder([self.history])])
        self.events = events
        self.store = InstanceStore(self.path, fsync)
        self.quarantine = Quarantine(self.path / "quarantine", events=events)
        self.outbox = Outbox(self.path / "outbox", events=events)

    @classmethod
    def existing(cls, path: Path | str) -> DataDirectory:
        """The data directory at ``path``, which must exist (for the command line: a typo is an error)."""
        folder = Path(path)
        if not folder.is_dir():
            raise ConfigurationError(f"no data directory at {str(folder)!r}: the folder does not exist")
        return cls(folder)

    def defer(self, output_name: str, settings: Mapping[str, Any], datasets: Sequence[Dataset], reason: str,
              *, patient_key: str, job_id: str) -> str:
        """Put an output's undelivered work in the outbox; return the entry's id."""
        return self.outbox.put(output_name, settings, datasets, reason, patient_key=patient_key,
                               job_id=job_id).id

    def retry_outbox(self, entry: OutboxEntry, registry: PluginRegistry) -> bool:
        """Retry one outbox entry; when it is delivered, the quarantine entry waiting for it learns so."""
        delivered = self.outbox.retry(entry, registry)
        if delivered:
            self.quarantine.outbox_delivered(entry.id)
        return delivered

    def close(self) -> None:
        """Release what the store and the history hold open."""
        self.store.close()
        self.history.close()
