"""The fake PACS of ``dicomnode.testing``, under the name the older tests use.

    with recording_scp(port, status=lambda uid, seen: 0xA700 if seen == 1 else 0x0000) as peer:
        ...
        peer.received    # [(SOPInstanceUID, status we answered), ...] in arrival order
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dicomnode.testing import FakePacs, StatusRule

RecordingPeer = FakePacs


@contextmanager
def recording_scp(port: int, *, ae_title: str = "RECORDER", status: StatusRule | None = None,
                  require_calling_aet: Sequence[str] = (), tls: Any = None) -> Iterator[FakePacs]:
    """Run a :class:`~dicomnode.testing.FakePacs` on ``127.0.0.1:port`` until the block ends."""
    with FakePacs(port, ae_title=ae_title, status=status, require_calling_aet=require_calling_aet,
                  tls=tls) as peer:
        yield peer
