"""Where a DICOM node listens: :class:`Address`, and the rule for AE titles."""

from __future__ import annotations

import ipaddress
import re

import attrs

__all__ = ["Address", "check_ae_title"]

# AE titles: up to 16 characters of the Default Character Repertoire, no backslash or control characters
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def _check_ip(_instance: object, _attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"Address.ip must be a host name or IP address, got {value!r}")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$", value):
            raise ValueError(f"Address.ip must be a host name or IP address, got {value!r}") from None


def _check_port(_instance: object, _attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"Address.port must be an integer from 1 to 65535, got {value!r}")


def check_ae_title(value: object, setting: str = "AE title") -> str:
    """Return ``value`` if it is a valid AE title, else raise ValueError saying what is allowed."""
    if not isinstance(value, str) or not _AE_TITLE.match(value) or not value.strip():
        raise ValueError(
            f"{setting} must be 1 to 16 printable ASCII characters without backslash, "
            f"and not only spaces, got {value!r}"
        )
    return value


def _check_ae(_instance: object, _attribute: attrs.Attribute[str], value: object) -> None:
    check_ae_title(value, "Address.ae_title")


@attrs.frozen
class Address:
    """Where a DICOM node listens: IP address (or host name), TCP port and AE title.

    >>> Address("127.0.0.1", 11112, "STORESCP")
    Address(ip='127.0.0.1', port=11112, ae_title='STORESCP')
    """

    ip: str = attrs.field(validator=_check_ip)
    port: int = attrs.field(validator=_check_port)
    ae_title: str = attrs.field(validator=_check_ae)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.ip}:{self.port}"
