"""Outputs: what a pipeline delivers after ``process``.

``process`` returns one :class:`PipelineOutput` or a list of them. The node
sends them one after the other (on the node, whatever executor ran
``process``). Before calling :meth:`PipelineOutput.send` it binds an
:class:`OutputContext` to each output: who the pipeline is, which patient
and job the output delivers for, the known endpoints, a logger whose lines
carry the patient key, and the name the output is registered under.

``send()`` returns True when the output's work is safe: delivered, or kept in
the node's outbox with :meth:`OutputContext.defer` for a later retry. It
returns False (or raises) when it failed; the node then quarantines the
patient's data with the reason, noting which outputs were delivered, so a
retry never sends those again. An output that defers implements
:meth:`PipelineOutput.retry_outbox_entry`, with which the node's maintenance
thread and ``dicomnode outbox retry`` deliver the entry later; when every
deferred entry of a job is delivered, its quarantine entry is closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from dicomnode.dicom.lazy import LazyDataset
from dicomnode.errors import StorageError
from dicomnode.net.address import Address

__all__ = ["Defer", "NoOutput", "OutboxEntry", "OutputContext", "PipelineOutput", "Sendable", "as_sendable",
           "by_instance_uid", "sop_instance_uid_of"]

#: what an output sends: a dataset, or a stored file
Sendable = Dataset | Path


def as_sendable(item: Sendable) -> Sendable:
    """An unloaded LazyDataset goes as its file: streamed as stored, never read into memory."""
    if isinstance(item, LazyDataset) and not item.is_loaded:
        return item.path
    return item


def sop_instance_uid_of(item: Sendable) -> str | None:
    """The SOPInstanceUID of a dataset or file (read from the file meta), None when it has none."""
    if isinstance(item, Dataset):
        uid = item.get("SOPInstanceUID")
    else:
        try:
            uid = read_file_meta_info(item).get("MediaStorageSOPInstanceUID")
        except (OSError, InvalidDicomError, ValueError, EOFError):
            return None
    return str(uid) if uid else None


def by_instance_uid(datasets: Iterable[Sendable]) -> tuple[dict[str, Sendable], list[str]]:
    """What to send, by SOPInstanceUID (each once, files streamed as stored), and why the others cannot go.

    A dataset without a SOPInstanceUID, or a path that is not a readable
    DICOM file, cannot be sent: its reason (without a value of the dataset)
    is in the second list.
    """
    pending: dict[str, Sendable] = {}
    unsendable: list[str] = []
    for given in datasets:
        item = as_sendable(given)
        uid = sop_instance_uid_of(item)
        if uid is None:
            what = f"{item}: not a readable DICOM file with" if isinstance(item, Path) else "a dataset without"
            unsendable.append(f"{what} a SOPInstanceUID cannot be sent")
        else:
            pending.setdefault(uid, item)
    return pending, unsendable


JSON = Any

#: stores datasets in the node's outbox: (output name, settings, datasets, reason) -> entry id
Defer = Callable[[str, Mapping[str, JSON], Sequence[Dataset], str], str]


@attrs.frozen
class OutboxEntry:
    """One undelivered piece of an output's work: what to deliver, how, and why it is waiting.

    ``settings`` is what the output stored to be able to try again (JSON);
    ``files`` the DICOM files of the entry, in ``directory``.
    """

    id: str
    directory: Path
    output_name: str
    settings: Mapping[str, JSON]
    reason: str
    attempts: int
    created: float
    last_attempt: float | None
    files: tuple[str, ...]
    patient_key: str = ""
    job_id: str = ""

    @property
    def paths(self) -> list[Path]:
        """The DICOM files of the entry."""
        return [self.directory / name for name in self.files]

    def datasets(self) -> list[Dataset]:
        """The datasets of the entry, read from disk."""
        return [dcmread(path) for path in self.paths]


@attrs.frozen
class OutputContext:
    """What an output may need to know about the pipeline and the job it delivers for.

    ``output_name`` is the name the output's class is registered under
    (``"dicom"``; its class name when it is not registered), ``job_id`` the
    job's id. :meth:`defer` keeps undelivered work in the node's outbox.
    """

    pipeline_name: str
    ae_title: str
    data_directory: Path | None
    patient_key: str
    known_endpoints: Mapping[str, Address]
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    #: the known endpoint that sent the job's images, when the calling AE title is one
    responding_address: Address | None = None
    output_name: str = ""
    job_id: str = ""
    #: the node's outbox, as a function (None without a data directory)
    outbox: Defer | None = attrs.field(default=None, repr=False)

    @property
    def can_defer(self) -> bool:
        """True when the node has an outbox (a data directory) for :meth:`defer`."""
        return self.outbox is not None

    def defer(self, settings: Mapping[str, JSON], datasets: Sequence[Dataset], reason: str) -> str:
        """Keep ``datasets`` in the outbox with the ``settings`` needed to retry; return the entry's id.

        The entry is written (atomically) before this returns; the output may
        then return True from ``send()``: its work is safe, and the node
        counts it as deferred rather than delivered. ``settings`` must be
        JSON-serialisable. Raises :class:`~dicomnode.errors.StorageError` when
        there is no outbox (no data directory) or it cannot be written.
        """
        if self.outbox is None:
            raise StorageError("the pipeline has no data_directory, so it has no outbox to defer to")
        return self.outbox(self.output_name, settings, datasets, reason)


class PipelineOutput:
    """Base class of outputs: ``send()`` delivers and returns True when its work is safe.

    Subclass it::

        class PrintOutput(PipelineOutput):
            def __init__(self, text):
                self.text = text

            def send(self) -> bool:
                print(self.text)
                return True

    ``self.context`` is the :class:`OutputContext` the node bound before
    ``send()`` (None when the output is used on its own).
    """

    #: class-level default so subclasses need not call ``super().__init__()``
    context: OutputContext | None = None

    def bind(self, context: OutputContext) -> None:
        """Give the output the context of the job it delivers for (called by the node)."""
        self.context = context

    def send(self) -> bool:
        """Deliver (or defer to the outbox); True when the work is safe."""
        raise NotImplementedError(f"{type(self).__name__} must define send()")

    def outgoing_datasets(self) -> Sequence[Dataset | Path]:
        """The datasets (or DICOM files) this output is about to send, for the node's checks before sending.

        The node validates them first when ``validate_outputs`` is on. The
        default, for outputs that send no datasets, is none.
        """
        return ()

    def describe_destination(self) -> str:
        """Where this output delivers, in a few words for the history and the log: ``PACS@10.0.0.5:104``.

        No value of a dataset belongs here. The default, for outputs that do
        not say, is empty.
        """
        return ""

    @classmethod
    def retry_outbox_entry(cls, entry: OutboxEntry) -> bool | Sequence[Path]:
        """Try once more to deliver an outbox entry this output stored.

        Return True when everything was delivered, False (or raise, with a
        message naming the destination and the reason) when nothing was, or
        the paths still undelivered when part of the entry was: the outbox
        then keeps only those. The default says the output cannot retry.
        """
        return False


class NoOutput(PipelineOutput):
    """An output that delivers nothing, successfully."""

    def send(self) -> bool:
        """Nothing to deliver: always True."""
        return True

    def __repr__(self) -> str:
        return "NoOutput()"
