"""The node's connection to a Dask scheduler: one client, made again whenever the scheduler comes back.

Dask's own client retries a lost scheduler for its ``timeout`` and then
closes for good; a node runs for months, so when that happens this makes a
new client, for as long as the node runs. Job threads that need the cluster
meanwhile wait in :meth:`Connection.client`, which never raises for an
unreachable scheduler: the node keeps receiving, the jobs wait, and they are
submitted again once a scheduler answers at the address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from distributed import Client

from dicomnode.errors import JobInterruptedError

__all__ = ["Connection"]

logger = logging.getLogger("dicomnode.dask")

#: seconds between two attempts to reach a scheduler that did not answer
RECONNECT_DELAY = 1.0


class Connection:
    """One :class:`distributed.Client` to ``address``, shared by the job threads."""

    def __init__(self, address: str, *, timeout: float, security: Any = None, direct_to_workers: bool = True) -> None:
        self.address = address
        self.timeout = timeout
        self.security = security
        self.direct_to_workers = direct_to_workers
        self.closing = threading.Event()
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._next_attempt = 0.0
        self.last_error = ""

    def connect(self) -> bool:
        """Try once to reach the scheduler (no waiting between attempts); True when connected."""
        with self._lock:
            return self._current() is not None or self._attempt()

    def client(self, waiting: Callable[[str], None]) -> Client:
        """A connected client; while there is none, call ``waiting(why)`` and wait.

        Raises :class:`~dicomnode.errors.JobInterruptedError` when the node
        closes meanwhile.
        """
        while True:
            if self.closing.is_set():
                raise JobInterruptedError("the node closed while the job waited for the Dask scheduler")
            with self._lock:
                client = self._current()
                if client is None and time.monotonic() >= self._next_attempt and self._attempt():
                    client = self._client
            if client is not None:
                return client
            waiting(f"the scheduler cannot be reached ({self.last_error or 'connecting'})")
            self.closing.wait(0.2)

    def _current(self) -> Client | None:
        client = self._client
        if client is None:
            return None
        if client.status == "running":
            return client
        if client.status in ("closing", "closed", "failed"):
            # Dask's client gave up reconnecting: a new one is made at the next attempt
            self._client = None
            _close_quietly(client)
        return None  # "connecting": the client is reconnecting by itself

    def _attempt(self) -> bool:
        try:
            self._client = Client(self.address, timeout=self.timeout, security=self.security,
                                  set_as_default=False, direct_to_workers=self.direct_to_workers,
                                  name="dicomnode")  # type: ignore[no-untyped-call]
        except Exception as error:  # OSError, TimeoutError, a TLS handshake refused, …
            self._next_attempt = time.monotonic() + RECONNECT_DELAY
            self.last_error = " ".join(str(error).split()) or type(error).__name__
            return False
        logger.info("connected to the Dask scheduler at %s", self.address)
        self.last_error = ""
        return True

    def close(self, timeout: float) -> None:
        """Stop: waiting job threads end with JobInterruptedError; the client is closed."""
        self.closing.set()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            _close_quietly(client, timeout)


def _close_quietly(client: Client, timeout: float = 2.0) -> None:
    try:
        client.close(timeout=max(0.5, timeout))  # type: ignore[no-untyped-call]
    except Exception as error:  # a client that lost its scheduler may fail to close cleanly; it is gone either way
        logger.debug("closing the Dask client: %s", error)
