"""The network: the only package that touches pynetdicom.

Public names, for pipelines and plugins::

    from dicomnode.net import Address, echo, find, move, get, send_datasets, TlsSettings

The node's server and the boundary it feeds::

    from dicomnode.net import DicomServer, Handoff, InstanceSink, Limits, Peer, ReceivedInstance

Every use of pynetdicom's internals is in :mod:`dicomnode.net.adapter`;
the other modules are the package's own, and nothing outside
``dicomnode.net`` imports them.
"""

from dicomnode.net.address import Address, check_ae_title
from dicomnode.net.client import MoveResult, QueryLevel, StorageHandler, echo, find, get, move
from dicomnode.net.limits import Limits
from dicomnode.net.sending import FailedInstance, SendResult, send_datasets
from dicomnode.net.server import DicomServer
from dicomnode.net.sink import Handoff, InstanceSink, Peer, ReceivedInstance
from dicomnode.net.tls import TlsSettings

__all__ = [
    "Address",
    "DicomServer",
    "FailedInstance",
    "Handoff",
    "InstanceSink",
    "Limits",
    "MoveResult",
    "Peer",
    "QueryLevel",
    "ReceivedInstance",
    "SendResult",
    "StorageHandler",
    "TlsSettings",
    "check_ae_title",
    "echo",
    "find",
    "get",
    "move",
    "send_datasets",
]
