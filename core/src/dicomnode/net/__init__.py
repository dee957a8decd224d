"""The network: the only package that touches pynetdicom.

Public names, for pipelines and plugins::

    from dicomnode.net import Address, echo, find, move, get, send_datasets

The modules below are the package's own; nothing outside ``dicomnode.net``
imports them.
"""

from dicomnode.net.address import Address, check_ae_title
from dicomnode.net.client import MoveResult, QueryLevel, StorageHandler, echo, find, get, move
from dicomnode.net.sending import FailedInstance, SendResult, send_datasets

__all__ = [
    "Address",
    "FailedInstance",
    "MoveResult",
    "QueryLevel",
    "SendResult",
    "StorageHandler",
    "check_ae_title",
    "echo",
    "find",
    "get",
    "move",
    "send_datasets",
]
