"""The operations side of a node: its status, history, metrics and admin endpoint, together.

:class:`Operations` listens to the node's events (:mod:`dicomnode.server.events`)
with a status board and a history recorder from the start, and, when
``admin_port`` is set, with the metrics, behind the admin HTTP endpoint
(:mod:`dicomnode.server.admin`) it starts when the node opens. The node
holds one as ``node.operations``; ``node.status()`` asks it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from dicomnode.server.history import HistoryRecorder, RecentEvents
from dicomnode.server.status import DEFAULT_LIMIT, DirectoryCounts, StatusBoard, node_status

if TYPE_CHECKING:
    from dicomnode.server.admin import AdminServer
    from dicomnode.server.metrics import NodeMetrics
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["Operations"]

logger = logging.getLogger("dicomnode.admin")


class Operations:
    """Status board, history recorder, metrics and admin endpoint of one node."""

    def __init__(self, node: AbstractPipeline) -> None:
        self.node = node
        self.board = StatusBoard()
        self.recent = RecentEvents()
        data = node.data
        self.counts = DirectoryCounts(data) if data is not None else None
        self.recorder = HistoryRecorder([self.recent] if data is None else [data.history, self.recent])
        node.events.add(self.board)
        node.events.add(self.recorder)
        self.metrics: NodeMetrics | None = None
        self.admin: AdminServer | None = None
        self._metrics_missing = ""

    # --- life cycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Start the admin endpoint (when ``admin_port`` is set), before the node restores its data.

        It answers ``/healthz`` with 503 until the node is ready.
        """
        config = self.node.config
        self.board.reset()  # a node opened again starts its life again
        if config.admin_port is None:
            return
        token = config.admin_secret()  # before anything starts: a missing secret stops the node at once
        from dicomnode.server.admin import AdminServer
        from dicomnode.server.metrics import INSTALL_HINT, NodeMetrics, metrics_available

        if metrics_available():
            self.metrics = NodeMetrics(self.node, self.board, self.counts)
            self.node.events.add(self.metrics)
        else:
            self._metrics_missing = INSTALL_HINT
            logger.warning("admin endpoint without /metrics: %s", INSTALL_HINT)
        self.admin = AdminServer(self, config.admin_ip, config.admin_port, token)
        self.admin.start()
        logger.info("admin endpoint on %s: the status page, /status, /metrics, /healthz", self.admin.url)

    def close(self) -> None:
        """Stop the admin endpoint and the metrics."""
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        if self.metrics is not None:
            self.node.events.remove(self.metrics)
            self.metrics = None

    @property
    def admin_port(self) -> int | None:
        """The port of the admin endpoint while it serves (the real one when ``admin_port`` is 0)."""
        return self.admin.port if self.admin is not None else None

    # --- what the endpoint answers ------------------------------------------------------------------

    def status(self, *, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
        """The node's status (:func:`~dicomnode.server.status.node_status`)."""
        return node_status(self.node, self.board, self.counts, limit=limit)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the node listens and has restored its data, with a word on why not.

        While it restores: ``{"status": "restoring", "restored": n, "of": N}`` (stored instances read).
        """
        restoring = self.node.restoring
        if self.board.ready and self.node.is_open and restoring is None:
            return True, {"status": "ok", "address": self.board.address}
        if self.board.shutting_down:
            return False, {"status": "closing"}
        if restoring is not None and self.node.is_open:
            return False, {"status": "restoring", "restored": restoring[0], "of": restoring[1]}
        return False, {"status": "starting"}

    def metrics_text(self) -> tuple[bytes, str] | None:
        """The Prometheus exposition and its content type; None without prometheus-client."""
        return self.metrics.text() if self.metrics is not None else None

    def metrics_unavailable(self) -> str:
        """Why there are no metrics."""
        return self._metrics_missing or "the metrics are not running"

    def page(self) -> str:
        """The status page."""
        from dicomnode.server.status_page import render_page

        return render_page(self.status(), self.recent.latest(25))
