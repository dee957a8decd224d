"""What a peer may cost the node: the limits of the network edge, each with a safe default.

:class:`Limits` is one frozen value the server is started with; the node's
settings of the same names (``docs/configuration.md``) fill it. What a peer
sees when it reaches each limit, and how the node behaves under each kind of
attack, is written up in ``docs/security-and-limits.md``.

>>> Limits().idle_timeout
30.0
>>> Limits(maximum_associations=0)
Traceback (most recent call last):
...
ValueError: maximum_associations must be an integer of at least 1, got 0
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["DEFAULT_LIMITS", "MAXIMUM_ASSOCIATE_REQUEST", "MINIMUM_PDU_SIZE", "Limits"]

#: the longest A-ASSOCIATE-RQ PDU read (its 6-byte header included). No real request comes
#: near it (DCMTK storescu proposing 128 contexts: about 20 KB); DCMTK's own limit is the same.
MAXIMUM_ASSOCIATE_REQUEST = 1024 * 1024

#: the smallest maximum PDU length DICOM allows to announce (PS3.8 D.1), 0 apart
MINIMUM_PDU_SIZE = 4096


def _count(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value!r}")


def _seconds(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86_400:
        raise ValueError(f"{attribute.name} must be a number of seconds above 0 and at most 86400, "
                         f"got {value!r}")


def _pdu_size(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (isinstance(value, bool) or not isinstance(value, int)
            or not (value == 0 or MINIMUM_PDU_SIZE <= value <= 0xFFFFFFFF)):
        raise ValueError(f"{attribute.name} must be 0 (no limit announced) or an integer from "
                         f"{MINIMUM_PDU_SIZE} to {0xFFFFFFFF}, got {value!r}")


def _dataset_size(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
        raise ValueError(f"{attribute.name} must be a number of bytes of at least 1024, got {value!r}")


@attrs.frozen
class Limits:
    """The limits the network edge enforces on every peer (each one a node setting of the same name).

    ``maximum_pdu_size``
        The maximum PDU length the node announces (bytes; 0: none). A peer
        that sends a longer PDU is aborted; with 0, a PDU longer than
        ``maximum_dataset_size`` is.
    ``maximum_dataset_size``
        The largest dataset one C-STORE may carry (bytes, as received). A
        larger one is read and thrown away as it arrives and answered with
        0xA700 (out of resources); the association goes on.
    ``connection_timeout``
        Seconds a new connection has to finish its TLS handshake and send
        its whole A-ASSOCIATE-RQ; it holds no association slot meanwhile.
    ``pdu_timeout``
        Seconds each PDU's bytes have to arrive once its first byte did;
        also how long a write to a peer that does not read may block.
    ``idle_timeout``
        Seconds an association may stay silent before it is aborted.
    ``maximum_associations``
        Associations served at once; one more is rejected (A-ASSOCIATE-RJ,
        transient, local limit exceeded).
    ``maximum_associations_per_address``
        Associations served at once for one calling IP address.
    ``maximum_pending_connections``
        Connections that have not sent their A-ASSOCIATE-RQ yet; when one
        more arrives, the oldest of them is closed.
    ``close_receive_timeout``
        Seconds closing the server lets the instances being received finish
        before their associations are aborted.
    """

    maximum_pdu_size: int = attrs.field(default=4 * 1024 * 1024, validator=_pdu_size)
    maximum_dataset_size: int = attrs.field(default=1024 * 1024 * 1024, validator=_dataset_size)
    connection_timeout: float = attrs.field(default=10.0, validator=_seconds)
    pdu_timeout: float = attrs.field(default=30.0, validator=_seconds)
    idle_timeout: float = attrs.field(default=30.0, validator=_seconds)
    maximum_associations: int = attrs.field(default=32, validator=_count)
    maximum_associations_per_address: int = attrs.field(default=16, validator=_count)
    maximum_pending_connections: int = attrs.field(default=64, validator=_count)
    close_receive_timeout: float = attrs.field(default=5.0, validator=_seconds)

    def longest_pdu(self, pdu_type: int) -> int:
        """The longest PDU body (after the 6-byte header) accepted of this type once associated.

        A P-DATA-TF PDU may be as long as announced; with nothing announced,
        no longer than one dataset and its command set could make it. The
        other PDUs are short, an A-ASSOCIATE-* at most
        :data:`MAXIMUM_ASSOCIATE_REQUEST`.
        """
        if pdu_type == 0x04:
            if self.maximum_pdu_size:
                return self.maximum_pdu_size
            return self.maximum_dataset_size + 64 * 1024
        if pdu_type in (0x05, 0x06, 0x07):  # A-RELEASE-RQ/RP, A-ABORT: 4 bytes each
            return 4
        return MAXIMUM_ASSOCIATE_REQUEST - 6


#: the defaults, for the settings that repeat them
DEFAULT_LIMITS = Limits()
