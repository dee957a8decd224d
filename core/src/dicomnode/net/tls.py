"""DICOM TLS settings: one value for the node's server, the client helpers and DicomOutput.

A :class:`TlsSettings` names PEM files; it makes the ``ssl.SSLContext`` of
either side, and it can be written to JSON (an outbox entry keeps it, so a
send is retried over TLS after a restart)::

    server = TlsSettings(certificate="node.crt", key="node.key", ca="modalities-ca.crt")
    server.server_context()     # only TLS; clients must show a certificate signed by the CA

    client = TlsSettings(ca="pacs-ca.crt", certificate="node.crt", key="node.key")
    send_datasets(pacs, paths, tls=client)   # verify the PACS, show ours when asked

The helpers that take ``tls=`` accept an ``ssl.SSLContext`` as well.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import attrs

from dicomnode.errors import ConfigurationError

__all__ = ["TlsSettings", "client_context"]


def _path(value: object) -> Path | None:
    return None if value is None or value == "" else Path(value)  # type: ignore[arg-type]


def _readable(_instance: object, attribute: attrs.Attribute[Any], value: Path | None) -> None:
    if value is not None and not value.is_file():
        raise ConfigurationError(f"TLS {attribute.name} must name a readable PEM file, got {str(value)!r}")


@attrs.frozen
class TlsSettings:
    """DICOM TLS from PEM files.

    ``certificate`` / ``key``
        Our certificate and its private key (the key may be in the
        certificate file). A server needs them; a client shows them when
        the peer asks for a client certificate.
    ``ca``
        CA certificates. A server requires a client certificate signed by
        one of them; a client verifies the peer against them (None: the
        system's CAs).
    ``check_hostname``
        Whether a client checks the peer's certificate names the host it
        connects to.
    """

    certificate: Path | None = attrs.field(default=None, converter=_path, validator=_readable)
    key: Path | None = attrs.field(default=None, converter=_path, validator=_readable)
    ca: Path | None = attrs.field(default=None, converter=_path, validator=_readable)
    check_hostname: bool = attrs.field(default=True, converter=bool)

    def __attrs_post_init__(self) -> None:
        if self.key is not None and self.certificate is None:
            raise ConfigurationError("TLS key needs certificate (the certificate of that key)")

    def server_context(self) -> ssl.SSLContext:
        """The context of a node that speaks only TLS; with ``ca`` it requires client certificates."""
        if self.certificate is None:
            raise ConfigurationError("a TLS server needs a certificate (tls_certificate)")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.certificate, self.key)
            if self.ca is not None:
                context.load_verify_locations(cafile=self.ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as error:
            raise ConfigurationError(f"cannot use the TLS certificate, key or CA: {error}") from error
        return context

    def client_context(self) -> ssl.SSLContext:
        """The context of our side of an association we request: verify the peer, show ours if asked."""
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                                 cafile=None if self.ca is None else str(self.ca))
            context.check_hostname = self.check_hostname
            if self.certificate is not None:
                context.load_cert_chain(self.certificate, self.key)
        except (OSError, ssl.SSLError) as error:
            raise ConfigurationError(f"cannot use the TLS certificate, key or CA: {error}") from error
        return context

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values (absolute paths)."""
        return {
            "certificate": None if self.certificate is None else str(self.certificate.resolve()),
            "key": None if self.key is None else str(self.key.resolve()),
            "ca": None if self.ca is None else str(self.ca.resolve()),
            "check_hostname": self.check_hostname,
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TlsSettings:
        """The settings :meth:`to_json` wrote."""
        return cls(values.get("certificate"), values.get("key"), values.get("ca"),
                   bool(values.get("check_hostname", True)))


def client_context(tls: TlsSettings | ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The client context of ``tls``: itself when it is one already."""
    if isinstance(tls, TlsSettings):
        return tls.client_context()
    return tls
