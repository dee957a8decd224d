"""Restore: the instances of the data directory go back into the pipeline tree, behind a node that listens.

A node with a ``data_directory`` starts with what it held when it stopped.
Reading every stored header takes long with a backlog (about 0.7 ms per
instance: 14 s for 20,000), and a sender that cannot reach the node for that
long raises alarms or gives up. So the node lists the stored files, starts
listening, and only then reads them back, on a thread of their own
(:class:`Restore`). While that runs:

* The node answers C-ECHO and stores C-STOREs as usual. The files to restore
  were listed before the node listened, so nothing it writes afterwards is
  restored a second time.
* A patient whose stored images are not all back yet is *held*: no readiness
  check (an association's end, the maintenance thread's ``stable_time``
  checks, ``check_ready``) starts its job, and the expiry does not take it,
  since it would run, or be judged, without the images still on disk. The
  listing names the held patients (each has a folder named after its key,
  :meth:`~dicomnode.server.storage.InstanceStore.path_for`), so they are held
  from the first moment. Patients without stored images are not held.
* An instance received again (a sender resending what it sent before the
  stop) is held once: the copy received since the start wins, and the older
  stored copy is not added, only kept with the patient's files so that the
  job's end removes it (or quarantines it) with the others.
* When every file is read, the restored patients that validate are started
  (their ``stable_time`` has passed, as before a restart), the others held
  back meanwhile are checked as usual, and the node is *ready*.
* :meth:`stop` (the node closes) ends it between two files: a restore only
  reads, so an interrupted one leaves every file in place and the next start
  restores them all.

The health endpoint, status and metrics say "restoring" with the progress
(:attr:`Restore.done` of :attr:`Restore.total` files) until then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset, dcmread

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.dicom.paths import safe_component
from dicomnode.extension.handles import Source
from dicomnode.server.logs import patient_label
from dicomnode.server.storage import written_order

if TYPE_CHECKING:
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["RESTORED_AET", "Restore"]

logger = logging.getLogger("dicomnode.node")

#: the calling AE title of images restored from the data directory (until a sender's image names one)
RESTORED_AET = "RESTORED"
#: seconds between two progress lines of a long restore
PROGRESS_INTERVAL = 5.0


class Restore:
    """The stored instances of one start, read back into the node's tree on a thread (module docstring).

    ``listing`` is the stored files' names by folder, taken before the node listened. :meth:`holds`
    says whether a patient must wait; ``done``/``total`` the progress;
    ``restored`` the instances added, ``images`` per patient key.
    """

    def __init__(self, node: AbstractPipeline, listing: Mapping[Path, Sequence[str]]) -> None:
        self.node = node
        #: the stored files' names by patient folder (:meth:`~dicomnode.server.storage.InstanceStore.listing`)
        self.listing = dict(listing)
        self.total = sum(len(files) for files in self.listing.values())
        #: files read so far (restored, skipped or unreadable)
        self.done = 0
        #: instances added to the tree
        self.restored = 0
        #: instances a sender sent again since the start: its new copy is the one held
        self.superseded = 0
        #: instances added, per patient key
        self.images: Counter[str] = Counter()
        self.seconds = 0.0
        self._folders = frozenset(folder.name for folder in self.listing)
        self._keys: set[str] = set()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._released = threading.Event()
        self._thread: threading.Thread | None = None
        #: test hook: called before each file is read (a test holds a restore open with it)
        self.before_file: Callable[[Path], None] | None = None

    # --- what the node asks ---------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """True once every file was read and the held patients were let go."""
        return self._released.is_set()

    def holds(self, patient_key: str) -> bool:
        """Whether the patient has stored images not yet back in the tree (its job must wait).

        A stopped restore holds its patients until the node is closed: their
        images are not all back.
        """
        if self._released.is_set():
            return False
        return patient_key in self._keys or safe_component(patient_key) in self._folders

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the restore ended (complete or stopped); False on timeout."""
        return self._finished.wait(timeout)

    # --- life cycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Read the files on a thread of their own (the node listens meanwhile)."""
        logger.info("restoring %d stored instance(s) of %d patient folder(s) while listening", self.total,
                    len(self._folders))
        self._thread = threading.Thread(target=self._run, name=f"{self.node.config.name}-restore", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the restore between two files and wait for its thread (the node closes)."""
        self._stop.set()
        thread = self._thread
        if thread is None:  # never started (the node failed to open): nothing to wait for
            self._finished.set()
        elif thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        started = time.monotonic()
        last_line = started
        failed = False
        try:
            for path in self._in_written_order():
                if self._stop.is_set():
                    break
                if self.before_file is not None:
                    self.before_file(path)
                    if self._stop.is_set():
                        break
                self._restore(path)
                self.done += 1
                now = time.monotonic()
                if now - last_line >= PROGRESS_INTERVAL:
                    last_line = now
                    logger.info("restoring: %d of %d stored instance(s) read", self.done, self.total)
        except Exception:  # the node must go on serving; the patients stay held (their images are not back)
            failed = True
            logger.exception("restoring the data directory failed after %d of %d file(s); its patients wait "
                             "for the next start", self.done, self.total)
        finally:
            self.seconds = time.monotonic() - started
            try:
                self._finish(failed)
            finally:
                self._finished.set()

    def _finish(self, failed: bool) -> None:
        node = self.node
        if failed:
            return
        if self._stop.is_set():
            # its patients stay held: the node closes, and their images are not all back
            logger.info("restore stopped after %d of %d stored instance(s) (%.1f s); every file stays in the "
                        "data directory for the next start", self.done, self.total, self.seconds)
            return
        logger.info("restored %d stored instance(s) of %d patient(s) in %.1f s%s", self.restored,
                    len(self.images), self.seconds,
                    f" ({self.superseded} sent again since the start)" if self.superseded else "")
        self._released.set()  # from here no patient is held: a check from now on may start its job
        node.tree.restoring = None
        # every patient held until now is in the tree (an image makes its container before its check)
        keys = node.tree.keys()  # a snapshot (the tree is not iterable)
        held = [key for key in keys if key in self._keys or safe_component(key) in self._folders]
        node.events.restored(dict(self.images))
        # restored patients that got nothing since the start: their stable time has passed (as before)
        quiet = [key for key in held if key in self.images and not _received_since_start(node, key)]
        node.check_ready_after_restore(quiet)
        # the others held meanwhile (images came since the start): as an association's end checks them
        others = [key for key in held if key not in quiet]
        if others:
            node.check_ready(others)

    def _in_written_order(self) -> Iterator[Path]:
        """Folder by folder, each in the order its files were written (sorted here, not before the listen).

        The order keeps an input's "first image" (the one that started the
        patient, the series ``enforce_single_series`` keeps) the same.
        """
        for folder, names in self.listing.items():
            yield from sorted((folder / name for name in names), key=written_order)

    # --- one file -------------------------------------------------------------------------------------

    def _restore(self, path: Path) -> None:
        node = self.node
        tag = node.config.patient_identifier_tag
        try:
            header = dcmread(path, stop_before_pixels=True)
            key = str(header[tag].value).strip() if tag in header else ""
            uid = str(header.get("SOPInstanceUID", "") or "")
            modified = path.stat().st_mtime
        except Exception as error:  # an unreadable file must not stop the start
            # the message without the folder, which is named after the patient key
            logger.error("cannot read stored instance %s: %s", path.name,
                         str(error).replace(str(path), path.name) or type(error).__name__)
            return
        if not key:
            self._not_accepted(path, key)
            return
        self._keys.add(key)  # held from now, whatever its folder is called
        try:
            if node.pacs_counts is not None:  # received before the restart: the PACS need not send it again
                node.pacs_counts.seen(Source(RESTORED_AET, "", "restore"), header, key)
            self._add(path, header, key, uid, modified)
        except Exception:  # an input's user code (its rules) must not stop the restore
            logger.exception("stored instance %s of patient %s could not be restored; left in place", path.name,
                             patient_label(key))

    def _add(self, path: Path, header: Dataset, key: str, uid: str, modified: float) -> None:
        tree = self.node.tree
        with tree.patient(key) as container:
            if uid and uid in container.received_while_restoring:
                # the sender sent it again since the start: that copy is newer; this file goes with the patient
                container.keep_file(path)
                self.superseded += 1
                return
            names, _ = container.choose(header)
            if not names:
                self._not_accepted(path, key)
                return
            # the pixels stay on disk until a job needs them, whatever lazy_storage says:
            # a backlog of restored patients must not fill the memory at start
            calling_aet = RESTORED_AET if container.calling_aet in ("", RESTORED_AET) else ""
            container.add_chosen(names, LazyDataset(path), path, header=header, calling_aet=calling_aet,
                                 known_endpoints=tree.known_endpoints)
            # the patient's age counts from its first stored image, not from this start
            container.created = min(container.created, modified)
        self.restored += 1
        self.images[key] += 1

    def _not_accepted(self, path: Path, key: str) -> None:
        logger.warning("stored instance %s of patient %s is accepted by no input any more; left in place",
                       path.name, patient_label(key) or "?")


def _received_since_start(node: AbstractPipeline, key: str) -> bool:
    try:
        return bool(node.tree[key].received_while_restoring)
    except KeyError:
        return False
