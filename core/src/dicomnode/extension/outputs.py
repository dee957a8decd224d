"""Outputs: what a pipeline delivers after ``process``.

``process`` returns one :class:`PipelineOutput` or a list of them. Before
calling :meth:`PipelineOutput.send` the pipeline binds an
:class:`OutputContext` to each output: who the pipeline is, where its data
directory and outbox are, which patient the job is about, the known
endpoints and a logger whose lines carry the patient key. An output that
cannot deliver returns False (or raises); the pipeline then quarantines the
patient's data. An output that supports the outbox stores what it could not
deliver there (``context.outbox``) and implements
:meth:`PipelineOutput.retry_outbox_entry` so the maintenance thread can try
again later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import attrs

from dicomnode.net import Address

if TYPE_CHECKING:
    from dicomnode.server.outbox import Outbox, OutboxEntry

__all__ = ["NoOutput", "OutputContext", "PipelineOutput"]


@attrs.frozen
class OutputContext:
    """What an output may need to know about the pipeline and the job it delivers for."""

    pipeline_name: str
    ae_title: str
    data_directory: Path | None
    outbox: Outbox | None
    patient_key: str
    known_endpoints: Mapping[str, Address]
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    #: the known endpoint that sent the job's images, when the calling AE title is one
    responding_address: Address | None = None


class PipelineOutput:
    """Base class of outputs: ``send()`` delivers and returns True on success.

    Subclass it::

        class PrintOutput(PipelineOutput):
            def __init__(self, text):
                self.text = text

            def send(self) -> bool:
                print(self.text)
                return True

    ``self.context`` is the :class:`OutputContext` the pipeline bound before
    ``send()`` (None when the output is used on its own).
    """

    #: class-level default so subclasses need not call ``super().__init__()``
    context: OutputContext | None = None
    #: the name the output is registered under (used for outbox entries)
    output_name: ClassVar[str] = ""

    def bind(self, context: OutputContext) -> None:
        """Give the output the context of the job it delivers for (called by the pipeline)."""
        self.context = context

    def send(self) -> bool:
        """Deliver; True on success."""
        raise NotImplementedError(f"{type(self).__name__} must define send()")

    @classmethod
    def retry_outbox_entry(cls, entry: OutboxEntry) -> bool:
        """Try once more to deliver an outbox entry this output stored; True when delivered.

        The default says the output does not support the outbox.
        """
        return False


class NoOutput(PipelineOutput):
    """An output that delivers nothing, successfully."""

    output_name: ClassVar[str] = "none"

    def send(self) -> bool:
        """Nothing to deliver: always True."""
        return True

    def __repr__(self) -> str:
        return "NoOutput()"
