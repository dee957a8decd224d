"""The node's receive path: how accepted associations poll, and how received instances are held."""

from __future__ import annotations

from node import RecordingNode
from pynetdicom import AE

from dicomnode.dicom.transport import ACCEPTED_POLL_DELAY

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def test_an_accepted_association_polls_more_often_than_every_millisecond() -> None:
    with RecordingNode() as node:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(CT_IMAGE_STORAGE)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="TESTNODE")
        try:
            assert assoc.is_established
            server = node._server
            assert server is not None
            accepted = server.active_associations
            assert len(accepted) == 1
            assert accepted[0].dul._run_loop_delay == ACCEPTED_POLL_DELAY < 0.001
        finally:
            assoc.release()
