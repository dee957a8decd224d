"""A pynetdicom storage SCP for tests that records every C-STORE and answers with chosen statuses.

    with recording_scp(port, status=lambda uid, seen: 0xA700 if seen == 1 else 0x0000) as peer:
        ...
        peer.received    # [(SOPInstanceUID, status we answered), ...] in arrival order

DCMTK's storescp answers success to everything; this peer lets a test make an
instance fail on its first delivery, or refuse a calling AE title, over real
sockets.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

StatusRule = Callable[[str, int], int]


class RecordingPeer:
    """What the peer received: each instance's UID with the status it answered."""

    def __init__(self, status: StatusRule) -> None:
        self.status = status
        self.received: list[tuple[str, int]] = []
        self.datasets: dict[str, Dataset] = {}
        self.calling_aets: list[str] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def handle_store(self, event: evt.Event) -> int:
        dataset = event.dataset
        uid = str(dataset.SOPInstanceUID)
        with self._lock:
            self._seen[uid] += 1
            status = self.status(uid, self._seen[uid])
            self.received.append((uid, status))
            if status in (0x0000, 0xB000, 0xB007, 0xB006):
                self.datasets[uid] = dataset
        return status

    def handle_open(self, event: evt.Event) -> None:
        with self._lock:
            self.calling_aets.append(event.assoc.requestor.ae_title)

    def accepted(self) -> Counter[str]:
        """How many times each UID was answered with success."""
        with self._lock:
            return Counter(uid for uid, status in self.received if status == 0x0000)

    def sent(self) -> Counter[str]:
        """How many times each UID arrived, whatever the answer."""
        with self._lock:
            return Counter(uid for uid, _ in self.received)


@contextmanager
def recording_scp(port: int, *, ae_title: str = "RECORDER", status: StatusRule | None = None,
                  require_calling_aet: Sequence[str] = (), tls: Any = None) -> Iterator[RecordingPeer]:
    """Run the peer on ``127.0.0.1:port`` until the block ends."""
    peer = RecordingPeer(status or (lambda _uid, _seen: 0x0000))
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = 0
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    if require_calling_aet:
        ae.require_calling_aet = list(require_calling_aet)
    handlers = [(evt.EVT_C_STORE, peer.handle_store), (evt.EVT_ACCEPTED, peer.handle_open)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers, ssl_context=tls)
    try:
        yield peer
    finally:
        server.shutdown()
