"""A service, imported only when a pipeline switches it on: DICOM files dropped into a folder are ingested.

Each file goes through the node's ingest (the checks a C-STORE gets); a
stored or discarded one is deleted from the folder, a refused one is
renamed ``NAME.refused`` so it is not tried again; the patients touched are
then checked for completeness, as at the end of an association.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicomnode.errors import ConfigurationError
from dicomnode.extension.handles import NodeHandle, Source
from dicomnode.extension.services import Service


class FolderService(Service):
    """Ingests the ``*.dcm`` files of ``directory`` every ``interval`` seconds."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.reject_unknown(settings, ("directory", "interval"))
        if "directory" not in settings:
            raise ConfigurationError("FolderService needs the setting 'directory', the folder to watch")
        self.directory = Path(self.take(settings, "directory", str, ""))
        self.interval = float(self.take(settings, "interval", (int, float), 0.2, check=lambda v: v > 0,
                                        allowed="a positive number of seconds"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, handle: NodeHandle) -> None:
        if not self.directory.is_dir():
            raise FileNotFoundError(f"the folder {self.name} watches does not exist: {self.directory}")
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(handle,), name=f"service-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _watch(self, handle: NodeHandle) -> None:
        while not self._stop.wait(self.interval):
            patients = set()
            for path in sorted(self.directory.glob("*.dcm")):
                result = handle.ingest(path, Source(kind="api", address=str(self.directory)))
                if result.ok:
                    path.unlink()
                    patients.add(result.patient_key)
                else:
                    path.rename(path.with_name(path.name + ".refused"))
            for key in sorted(patients):
                handle.check(key)
