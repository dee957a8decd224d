"""A fake PACS for tests: a C-STORE SCP that records what it receives and answers with chosen statuses.

::

    with FakePacs() as pacs:                      # a free loopback port
        node_config = {"known_endpoints": {"PACS": pacs.address}}
        ...
        pacs.wait_for(20)                         # until 20 instances arrived
        pacs.datasets                             # SOPInstanceUID -> the dataset as received

``status`` decides each answer from the instance's UID and how many times it
arrived (``lambda uid, seen: 0xA700 if seen == 1 else 0x0000`` refuses every
instance once), so a test can make a destination fail and recover over real
sockets.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomnode.net.address import Address

__all__ = ["FakePacs", "StatusRule", "free_port"]

#: (SOPInstanceUID, how many times it arrived so far) -> the C-STORE status to answer
StatusRule = Callable[[str, int], int]

_STORED = (0x0000, 0xB000, 0xB007, 0xB006)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakePacs:
    """A storage SCP on 127.0.0.1 that records every C-STORE; use it with ``with``.

    ``received`` lists (SOPInstanceUID, status answered) in arrival order;
    ``datasets`` holds the instances it answered with success (or a warning);
    ``calling_aets`` the calling AE title of each association.
    """

    def __init__(self, port: int | None = None, *, ae_title: str = "FAKEPACS", status: StatusRule | None = None,
                 require_calling_aet: Sequence[str] = (), tls: Any = None) -> None:
        self.port = port or free_port()
        self.ae_title = ae_title
        self.status = status or (lambda _uid, _seen: 0x0000)
        self.received: list[tuple[str, int]] = []
        self.datasets: dict[str, Dataset] = {}
        self.calling_aets: list[str] = []
        self._require_calling_aet = list(require_calling_aet)
        self._tls = tls
        self._seen: Counter[str] = Counter()
        self._lock = threading.Condition()
        self._server: Any = None

    @property
    def address(self) -> Address:
        """Where it listens, as the node's known endpoints and outputs take it."""
        return Address("127.0.0.1", self.port, self.ae_title)

    def _store(self, event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        uid = str(dataset.SOPInstanceUID)
        with self._lock:
            self._seen[uid] += 1
            status = self.status(uid, self._seen[uid])
            self.received.append((uid, status))
            if status in _STORED:
                self.datasets[uid] = dataset
            self._lock.notify_all()
        return status

    def _accepted(self, event: evt.Event) -> None:
        with self._lock:
            self.calling_aets.append(str(event.assoc.requestor.ae_title).strip())

    def accepted(self) -> Counter[str]:
        """How many times each UID was answered with success."""
        with self._lock:
            return Counter(uid for uid, status in self.received if status == 0x0000)

    def sent(self) -> Counter[str]:
        """How many times each UID arrived, whatever the answer."""
        with self._lock:
            return Counter(uid for uid, _ in self.received)

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        """Block until at least ``count`` distinct instances are stored; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            return self._lock.wait_for(lambda: len(self.datasets) >= count, max(0.0, deadline - time.monotonic()))

    def start(self) -> FakePacs:
        """Start listening (``with`` does it)."""
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = 0
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self._require_calling_aet:
            ae.require_calling_aet = self._require_calling_aet
        handlers: list[Any] = [(evt.EVT_C_STORE, self._store), (evt.EVT_ACCEPTED, self._accepted)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers,
                                       ssl_context=self._tls)
        return self

    def stop(self) -> None:
        """Stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()

    def __enter__(self) -> FakePacs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
