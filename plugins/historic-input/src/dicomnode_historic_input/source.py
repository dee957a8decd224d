"""Where priors come from: a :class:`PriorSource` searches a PACS and retrieves what was chosen.

The historic input walks the PACS and decides what to retrieve the same way
whatever the PACS speaks; only the two network steps differ:

``search(identifier, level)``
    the responses to one query (C-FIND, or a QIDO-RS search);
``retrieve(target, node)``
    bring one chosen study, series or image to the node (C-MOVE, C-GET,
    WADO-RS) and say how it went as a :class:`Retrieved`.

Both raise a ``ConnectionError`` (:class:`~dicomnode.errors.DimseError` is
one) saying why when the PACS cannot be asked; every network step is
bounded by the input's ``timeout``. :class:`DimseSource` is the DIMSE one,
the default of :meth:`HistoricAbstractInput.prior_source
<dicomnode_historic_input.HistoricAbstractInput.prior_source>`; a plugin
that reaches a PACS another way subclasses :class:`PriorSource` and returns
it from ``prior_source`` in an input subclass::

    class WebPriors(HistoricAbstractInput):
        def prior_source(self, node):
            return MyWebSource(self.url, timeout=self.timeout)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from pydicom import Dataset

from dicomnode.extension.handles import Source
from dicomnode.net import Address, QueryLevel, find, get, move

if TYPE_CHECKING:
    from dicomnode.extension.handles import NodeHandle
    from dicomnode_historic_input.query import Target

__all__ = ["DimseSource", "PriorSource", "Retrieved"]


@attrs.frozen
class Retrieved:
    """How the retrieval of one target went: instance counts, and why it failed (None: it did not).

    ``completed`` instances arrived and were stored, ``failed`` did not,
    ``warning`` arrived with a warning.
    """

    completed: int = 0
    failed: int = 0
    warning: int = 0
    error: str | None = None


class PriorSource:
    """Searches one PACS and retrieves from it; subclass it for another protocol.

    ``search_name`` names the search step in reports (``"C-FIND"``),
    :attr:`turn_key` identifies the PACS for ``max_concurrent_retrievals``
    (retrievals with the same key take turns), and ``str(source)`` names it
    in log lines.
    """

    search_name = "search"

    @property
    def turn_key(self) -> Hashable:
        """What identifies the PACS: retrievals with the same key share its turns."""
        return str(self)

    def search(self, identifier: Dataset, level: QueryLevel) -> Iterable[Dataset]:
        """The responses to ``identifier`` at ``level``; raise a ConnectionError saying why it failed."""
        raise NotImplementedError(f"{type(self).__name__} must define search(identifier, level)")

    def retrieve(self, target: Target, node: NodeHandle) -> Retrieved:
        """Bring ``target`` to the node (through ``node.ingest`` when the images come back to us)."""
        raise NotImplementedError(f"{type(self).__name__} must define retrieve(target, node)")


class DimseSource(PriorSource):
    """A PACS reached with C-FIND, and C-MOVE to the node (``mode="move"``) or C-GET (``"get"``)."""

    search_name = "C-FIND"

    def __init__(self, address: Address, *, ae_title: str, mode: str = "move", timeout: float = 30.0) -> None:
        self.address = address
        self.ae_title = ae_title
        self.mode = mode
        self.timeout = timeout

    def __str__(self) -> str:
        return str(self.address)

    @property
    def turn_key(self) -> Hashable:
        return (self.address.ip, self.address.port, self.address.ae_title)

    def search(self, identifier: Dataset, level: QueryLevel) -> Iterable[Dataset]:
        return find(self.address, identifier, level=level, ae_title=self.ae_title, timeout=self.timeout)

    def retrieve(self, target: Target, node: NodeHandle) -> Retrieved:
        if self.mode == "get":
            source = Source(self.address.ae_title, str(self.address), "c-get", id(target))
            stored: list[Path] = []

            def store(dataset: Dataset) -> int:
                result = node.ingest(dataset, source)
                if result.path is not None:
                    stored.append(result.path)
                return result.status

            result = get(self.address, target.identifier, storage_handler=store, level=target.level,
                         ae_title=self.ae_title, timeout=self.timeout)
            node.sync(stored)
        else:
            result = move(self.address, target.identifier, node.ae_title, level=target.level,
                          ae_title=self.ae_title, timeout=self.timeout)
        error = result.error
        if error is not None and self.mode == "move" and result.completed == 0:
            error += (f" (the PACS must know the AE title {node.ae_title} as a C-MOVE destination "
                      f"with this node's address and port; or use retrieve_mode = 'get')")
        return Retrieved(result.completed, result.failed, result.warning, error)
