"""What an input sees of the node: a narrow handle, and what ingesting an instance gives back.

An input's ``patient_started(dataset, patient_key, node)`` gets a
:class:`NodeHandle` — not the node — with just what an input that fetches
images itself (prior studies from a PACS) needs: the node's AE title and
known endpoints, a logger, whether it is serving, :meth:`NodeHandle.ingest`
to hand it instances through the same checks as a C-STORE (and
:meth:`NodeHandle.sync` to make them durable, as an association's end does),
and :meth:`NodeHandle.check` to ask it to look at a patient again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs
from pydicom import Dataset

from dicomnode.net.address import Address

__all__ = ["STATUS_SUCCESS", "IngestResult", "NodeHandle", "Source"]

STATUS_SUCCESS = 0x0000


@attrs.frozen
class Source:
    """Where an instance came from, for the log, the patient's calling AE title and the statistics.

    ``kind`` is ``"c-store"``, ``"c-get"``, ``"stow"`` (STOW-RS),
    ``"wado-rs"``, ``"restore"``, ``"retry"`` or ``"api"``; ``association`` identifies one association (or
    one request) so its instances can be counted together.
    """

    calling_aet: str = ""
    address: str = ""
    kind: str = "api"
    association: int = 0


@attrs.frozen
class IngestResult:
    """What the node did with one instance: the C-STORE status it answers, and why.

    ``status`` 0x0000 means stored (or discarded by ``rejection_policy``:
    ``stored`` says which); a failure status (0xA700, 0xC001–0xC005) comes
    with ``comment``, the ErrorComment (reason first, at most 64
    characters). ``series_instance_uid`` and ``modality`` say which series
    a stored instance belongs to (for the history and the association's
    log line).
    """

    status: int
    comment: str = ""
    patient_key: str = ""
    sop_instance_uid: str = ""
    stored: bool = False
    path: Path | None = None
    series_instance_uid: str = ""
    modality: str = ""

    @property
    def ok(self) -> bool:
        """True for a success status (stored, or discarded on purpose)."""
        return self.status == STATUS_SUCCESS


class NodeHandle(Protocol):
    """The node, as an input's ``patient_started`` sees it."""

    @property
    def ae_title(self) -> str:
        """The node's AE title (a C-MOVE destination must name it)."""

    @property
    def known_endpoints(self) -> Mapping[str, Address]:
        """The pipeline's known endpoints, by AE title."""

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        """The node's logger."""

    @property
    def is_open(self) -> bool:
        """True while the node is serving."""

    def ingest(self, item: Dataset | bytes | Path, source: Source) -> IngestResult:
        """Hand the node one instance (a dataset, the bytes of a DICOM file, or its path)."""

    def check(self, patient_key: str) -> None:
        """Ask the node to see whether the patient is complete now (after fetching its images)."""

    def sync(self, paths: Sequence[Path]) -> None:
        """Make the files ``ingest`` stored durable as the node's ``fsync`` setting asks of an association's."""

    def holds(self, patient_key: str, owner: object) -> bool:
        """True while the patient is waiting in the node with ``owner`` among its inputs."""
