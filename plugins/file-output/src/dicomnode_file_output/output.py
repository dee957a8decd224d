"""FileOutput: write a pipeline's datasets into folders, safely and atomically.

Layout
------
Every dataset lands at::

    <directory>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm

Each component goes through :func:`dicomnode.dicom.paths.safe_component`, so a
tag value is data and never a path: a PatientID of ``../../etc``, ``/abs``,
``CON``, a 300-character or a non-ASCII value all become one harmless folder
name inside ``directory`` (with a short hash of the original whenever the value
had to change, so two patients never share a folder).

Atomicity
---------
A file is written under a temporary name (``.<name>.<random>.partial``) in its
final folder, flushed and fsynced, then renamed onto its final name. A reader
therefore sees either no file or the complete file; a crash in the middle
leaves at most a hidden ``.partial`` file, never a truncated ``.dcm``.

Existing files
--------------
``existing`` says what happens when the final file is already there:

``"overwrite"`` (default)
    replace it atomically with the new content (a re-run of a pipeline with
    deterministic UIDs refreshes its earlier result);
``"keep"``
    leave the existing file untouched and count the instance as delivered
    (listed under ``kept`` in the report);
``"fail"``
    leave the existing file untouched and count the instance as failed, so
    ``send()`` returns False and the pipeline quarantines the job.

``keep`` and ``fail`` never replace a file that appears while we write: the
final name is claimed with a hard link, which fails if the name exists.

Retries and the outbox
----------------------
A write that fails for a reason that may pass (the directory is on a share
that is down, the disk is full, a permission is being fixed) is tried again
with exponential backoff (``attempts``, ``first_delay``, ``max_delay``).
After the last attempt the instances still unwritten go to the node's outbox
(through the output's context) and ``send()`` returns True: the node counts
the output as deferred, and its maintenance thread (or ``dicomnode outbox
retry``) writes them once the directory is back
(:meth:`FileOutput.retry_outbox_entry`). Failures that cannot pass — no
SOPInstanceUID to name the file, an unreadable source, ``existing="fail"``
on an existing file — are not retried: ``send()`` returns False.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite

from dicomnode.dicom.lazy import LazyDataset, with_file_meta
from dicomnode.dicom.paths import safe_component
from dicomnode.errors import ConfigurationError, StorageError, describe_value
from dicomnode.extension.outputs import OutboxEntry, PipelineOutput
from dicomnode.extension.retry import Backoff

__all__ = ["ExistingPolicy", "FailedFile", "FileOutput", "FileReport"]

logger = logging.getLogger("dicomnode.output.file")

ExistingPolicy = Literal["overwrite", "keep", "fail"]
_POLICIES: tuple[str, ...] = ("overwrite", "keep", "fail")
_PARTIAL = ".partial"
#: what FileOutput writes: a dataset, or the path of a DICOM file (copied as it is)
Writable = Dataset | Path | str
_COPY_CHUNK = 1 << 20
_NAMING_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@attrs.frozen
class FailedFile:
    """An instance that was not written: its SOPInstanceUID (if any), its target and why.

    ``transient`` failures (an OSError while writing) may pass and are retried.
    """

    sop_instance_uid: str | None
    path: Path | None
    reason: str
    transient: bool = False


@attrs.frozen
class FileReport:
    """What one destination directory received.

    ``written`` are files this output created or replaced, ``kept`` existing
    files left in place under ``existing="keep"``, ``failed`` the instances
    that could not be written.
    """

    directory: Path
    written: tuple[Path, ...] = ()
    kept: tuple[Path, ...] = ()
    failed: tuple[FailedFile, ...] = ()
    attempts: int = 1
    #: the outbox entry holding the instances still unwritten after the last attempt
    outbox_entry: str | None = None

    @property
    def ok(self) -> bool:
        """True when every instance is on disk (written or kept)."""
        return not self.failed

    @property
    def safe(self) -> bool:
        """True when every instance is on disk or waits in the outbox."""
        return self.ok or (self.outbox_entry is not None and all(f.transient for f in self.failed))


def instance_path(directory: Path, dataset: Dataset) -> Path:
    """Where ``dataset`` goes under ``directory``: patient/study/series/instance.dcm, all sanitised.

    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "P1", "1.2", "1.2.3", "1.2.3.4"
    >>> instance_path(Path("out"), ds).as_posix()
    'out/P1/1.2/1.2.3/1.2.3.4.dcm'
    """
    return directory.joinpath(
        safe_component(dataset.get("PatientID")),
        safe_component(dataset.get("StudyInstanceUID")),
        safe_component(dataset.get("SeriesInstanceUID")),
        safe_component(dataset.get("SOPInstanceUID")) + ".dcm",
    )


def _source_file(item: Writable) -> Path | None:
    """The file that already holds the instance as it is: a path given, or an unread LazyDataset's file."""
    if isinstance(item, LazyDataset):
        return None if item.is_loaded else item.path
    if isinstance(item, Dataset):
        return None
    return Path(item)


def _header(item: Writable) -> Dataset:
    """The identifiers that name the file, read without the pixels when the instance is a file."""
    source = _source_file(item)
    if source is not None:
        return dcmread(source, stop_before_pixels=True, specific_tags=list(_NAMING_TAGS))
    assert isinstance(item, Dataset)  # _source_file returns None only for datasets
    return item


def _fsync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(dataset: Writable, target: Path, *, replace: bool = True, fsync: bool = True) -> bool:
    """Write ``dataset`` (or copy a DICOM file) to ``target`` through a temporary file and a rename.

    Returns True when ``target`` now holds ``dataset``, False when ``replace`` is
    False and ``target`` already existed (it is left untouched). On any error the
    temporary file is removed and ``target`` is as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}{_PARTIAL}")
    try:
        with open(temporary, "xb") as handle:
            source_file = _source_file(dataset)
            if source_file is not None:
                # the instance is a file already: copy its bytes, do not decode and re-encode
                with open(source_file, "rb") as source:
                    shutil.copyfileobj(source, handle, _COPY_CHUNK)
            else:
                assert isinstance(dataset, Dataset)
                dcmwrite(handle, with_file_meta(dataset), enforce_file_format=True)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, target)
            return True
        try:
            # a hard link claims the name only if it is free: no window to overwrite a newcomer
            os.link(temporary, target)
        except FileExistsError:
            return False
        except OSError:
            # file systems without hard links: the small race is the best they allow
            if target.exists():
                return False
            os.replace(temporary, target)
        return True
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass


class FileOutput(PipelineOutput):
    """Write datasets into one or more directories with the patient/study/series/instance layout.

    Parameters
    ----------
    destinations:
        pairs of (directory, datasets); the directory is created when missing. Datasets
        may be pydicom datasets or paths of DICOM files (copied byte for byte).
    existing:
        what to do when a file is already there: ``"overwrite"``, ``"keep"`` or ``"fail"``
        (see the module documentation).
    fsync:
        flush each file (and each folder's renames) to the disk before counting it as written.
    attempts, first_delay, max_delay:
        the retry policy for writes that fail with an operating system error
        (see :class:`~dicomnode.extension.retry.Backoff`); then the outbox.

    >>> from dicomnode.dicom.synthetic import synthetic_series
    >>> output = FileOutput([("results", synthetic_series(slices=2, rows=8, columns=8))])
    >>> output.send()  # doctest: +SKIP
    True
    """

    def __init__(
        self,
        destinations: Iterable[tuple[Path | str, Iterable[Writable]]],
        *,
        existing: ExistingPolicy = "overwrite",
        fsync: bool = True,
        attempts: int = 3,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
    ) -> None:
        super().__init__()
        if existing not in _POLICIES:
            raise ConfigurationError(
                f"FileOutput existing must be one of {', '.join(map(repr, _POLICIES))}, got {existing!r}"
            )
        pairs: list[tuple[Path, Sequence[Writable]]] = []
        for number, pair in enumerate(destinations, start=1):
            try:
                directory, datasets = pair
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"FileOutput destination {number} must be a (directory, datasets) pair, got {describe_value(pair)}"
                ) from None
            if not isinstance(directory, (str, os.PathLike)) or not str(directory):
                raise ConfigurationError(
                    f"FileOutput destination {number}: the directory must be a path, got {describe_value(directory)}"
                )
            if isinstance(datasets, (Dataset, str, os.PathLike)):
                raise ConfigurationError(
                    f"FileOutput destination {number}: give a list of datasets or files, not a single one"
                )
            pairs.append((Path(directory), list(datasets)))
        self.destinations: tuple[tuple[Path, Sequence[Writable]], ...] = tuple(pairs)
        self.existing: ExistingPolicy = existing
        self.fsync = fsync
        self.backoff = Backoff(attempts=attempts, first_delay=first_delay, max_delay=max_delay)
        #: one :class:`FileReport` per destination, filled by :meth:`send`
        self.report: list[FileReport] = []

    @property
    def _log(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        context = getattr(self, "context", None)
        context_logger = getattr(context, "logger", None)
        return context_logger if context_logger is not None else logger

    def describe_destination(self) -> str:
        """The folders this output writes into."""
        return ", ".join(str(directory) for directory, _ in self.destinations)

    def outgoing_datasets(self) -> list[Dataset | Path]:
        """Every dataset or file this output writes (the node validates them before writing)."""
        seen: set[int] = set()
        result: list[Dataset | Path] = []
        for _, datasets in self.destinations:
            for item in datasets:
                if id(item) not in seen:
                    seen.add(id(item))
                    result.append(item if isinstance(item, Dataset) else Path(item))
        return result

    def send(self) -> bool:
        """Write every dataset; True when every instance is on disk (written, or kept by policy) or in the outbox."""
        self.report = [self._deliver(directory, datasets) for directory, datasets in self.destinations]
        return all(report.safe for report in self.report)

    def _deliver(self, directory: Path, datasets: Sequence[Writable]) -> FileReport:
        """Write to one directory, retrying transient failures, then defer what is left to the outbox."""
        pending = list(datasets)
        written: list[Path] = []
        kept: list[Path] = []
        permanent: list[FailedFile] = []
        delays = self.backoff.delays()
        attempt = 0
        while True:
            attempt += 1
            report, unwritten = self._write_destination(directory, pending)
            written += report.written
            kept += report.kept
            permanent += [failure for failure in report.failed if not failure.transient]
            transient = [failure for failure in report.failed if failure.transient]
            if not transient:
                return FileReport(directory, tuple(written), tuple(kept), tuple(permanent), attempt)
            delay = next(delays, None)
            problem = transient[0].reason
            if delay is None:
                self._log.error("writing to %s: attempt %d of %d failed for %d instance(s), giving up: %s",
                                directory, attempt, self.backoff.attempts, len(transient), problem)
                break
            self._log.warning("writing to %s: attempt %d of %d failed for %d instance(s): %s; retrying in %g s",
                              directory, attempt, self.backoff.attempts, len(transient), problem, delay)
            time.sleep(delay)
            pending = unwritten
        entry = self._to_outbox(directory, unwritten, problem)
        return FileReport(directory, tuple(written), tuple(kept), (*permanent, *transient), attempt, entry)

    def _to_outbox(self, directory: Path, items: Sequence[Writable], reason: str) -> str | None:
        message = f"{len(items)} instance(s) not written to {directory}: {reason}"
        if self.context is None or not self.context.can_defer:
            self._log.error("%s; there is no outbox (the pipeline has no data_directory)", message)
            return None
        settings = {"directory": str(directory.resolve()), "existing": self.existing, "fsync": self.fsync}
        try:
            datasets: list[Dataset] = []
            for item in items:
                source = _source_file(item)
                if source is None:
                    assert isinstance(item, Dataset)  # _source_file returns None only for datasets
                    datasets.append(item)
                else:
                    datasets.append(dcmread(source))
            entry = self.context.defer(settings, datasets, message)
        except (StorageError, OSError) as error:
            self._log.error("%s; the outbox cannot keep them either: %s", message, error)
            return None
        self._log.error("%s; stored in the outbox as %s", message, entry)
        return entry

    @classmethod
    def retry_outbox_entry(cls, entry: OutboxEntry) -> bool | Sequence[Path]:
        """Write an outbox entry's files to its directory; the files still unwritten when some failed.

        Raises :class:`~dicomnode.errors.StorageError` naming the directory and
        the reason when nothing could be written.
        """
        settings: Any = entry.settings
        try:
            directory = Path(settings["directory"])
            existing = settings.get("existing", "overwrite")
            fsync = bool(settings.get("fsync", True))
        except (KeyError, TypeError) as error:
            raise ValueError(f"outbox entry {entry.id}: its settings are not those of a FileOutput "
                             f"({type(error).__name__}: {error})") from None
        output = cls([], existing=existing, fsync=fsync)
        report, unwritten = output._write_destination(directory, entry.paths)
        if not report.failed:
            return True
        if len(unwritten) == len(entry.paths):
            raise StorageError(f"{len(unwritten)} instance(s) not written to {directory}: {report.failed[0].reason}")
        return [Path(str(item)) for item in unwritten]

    def _write_destination(self, directory: Path,
                           datasets: Sequence[Writable]) -> tuple[FileReport, list[Writable]]:
        """One pass over ``datasets``; the report, and the items whose failure was transient."""
        unwritten: list[Writable] = []
        written: list[Path] = []
        kept: list[Path] = []
        failed: list[FailedFile] = []
        folders: set[Path] = set()
        replace = self.existing == "overwrite"
        for dataset in datasets:
            try:
                header = _header(dataset)
            except Exception as error:  # an unreadable stored file fails alone
                where = _source_file(dataset) or "the dataset"
                failed.append(FailedFile(None, None, f"cannot read {where}: {error}"))
                continue
            uid = header.get("SOPInstanceUID")
            if not uid:
                failed.append(FailedFile(None, None, "the dataset has no SOPInstanceUID to name its file"))
                continue
            target = instance_path(directory, header)
            if not replace and target.exists():
                # checked before writing only to save the work; write_atomically checks again
                stored = False
            else:
                try:
                    stored = write_atomically(dataset, target, replace=replace, fsync=self.fsync)
                except OSError as error:  # the folder or the disk: may pass, tried again
                    failed.append(FailedFile(str(uid), target, f"{type(error).__name__}: {error}", transient=True))
                    unwritten.append(dataset)
                    continue
                except Exception as error:  # one bad instance must not stop the rest
                    failed.append(FailedFile(str(uid), target, f"{type(error).__name__}: {error}"))
                    self._log.error("could not write %s to %s: %s", uid, target, error)
                    continue
            if stored:
                written.append(target)
                folders.add(target.parent)
            elif self.existing == "keep":
                kept.append(target)
            else:
                failed.append(FailedFile(str(uid), target, "the file exists and existing='fail'"))
                self._log.error("refusing to replace existing file %s (existing='fail')", target)
        if self.fsync:
            for folder in folders:
                _fsync_directory(folder)
        self._log.info("wrote %d file(s) to %s (%d kept, %d failed)",
                       len(written), directory, len(kept), len(failed))
        return FileReport(directory, tuple(written), tuple(kept), tuple(failed)), unwritten
