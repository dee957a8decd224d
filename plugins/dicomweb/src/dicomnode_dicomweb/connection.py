"""How dicomnode reaches a DICOMweb server: its URL, authentication, TLS verification and timeout.

:class:`WebConnection` is the one value the output and the prior-study
input share. It makes a :class:`dicomweb_client.DICOMwebClient` on a
``requests`` session of its own:

- ``token``: a bearer token (``Authorization: Bearer …``);
- ``username`` / ``password``: HTTP basic authentication;
- ``headers``: custom headers sent with every request (an API key);
- ``verify``: TLS verification, on by default (True: the system's CAs; a
  path: a CA bundle; False only when asked for);
- ``client_cert`` / ``client_key``: a client certificate for mutual TLS.

A secret (``token``, ``password``, a header value) is given as text, or as
``{"env": "NAME"}`` to read it from the environment variable NAME when a
request is made. Secrets never appear in a ``repr``, a log line or an
error, and are never written to disk: an outbox entry keeps the names of
their environment variables, or, for secrets given as text, a reference
valid only in the process that made the entry.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from dicomnode.errors import ConfigurationError

if TYPE_CHECKING:
    from dicomweb_client import DICOMwebClient

__all__ = ["Secret", "WebConnection", "resolve_secret"]

# dicomweb-client wraps every request in the retrying package, which logs each failed
# attempt with its traceback even when retries are off; the callers log the failure
# themselves, once, in a line (and retry with their own backoff)
logging.getLogger("retrying").setLevel(logging.ERROR)

#: a secret's text, or ``{"env": "NAME"}``: read from the environment when used
Secret = str | Mapping[str, str]

#: connections whose secrets were given as text, by a random reference, for outbox
#: entries retried by the process that made them (secrets are never written to disk)
_IN_MEMORY: dict[str, WebConnection] = {}
_IN_MEMORY_LOCK = threading.Lock()


def _check_secret(what: str, value: object) -> None:
    if value is None or (isinstance(value, str) and value):
        return
    if isinstance(value, Mapping) and list(value) == ["env"] and isinstance(value["env"], str) and value["env"]:
        return
    raise ConfigurationError(f"{what} must be text, or {{env = \"NAME\"}} to read it from the environment "
                             f"variable NAME, got a {type(value).__name__}")


def resolve_secret(what: str, value: Secret) -> str:
    """The text of a secret; ConfigurationError naming the variable when it comes from an unset one."""
    if isinstance(value, str):
        return value
    name = value["env"]
    text = os.environ.get(name)
    if not text:
        raise ConfigurationError(f"{what} is read from the environment variable {name}, which is not set")
    return text


def _is_env(value: Secret | None) -> bool:
    return isinstance(value, Mapping)


def _check_url(_instance: object, _attribute: object, value: Any) -> None:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"DICOMweb url must be an http:// or https:// URL such as "
                                 f"'https://pacs.example.org/dicom-web', got {value!r}")


def _check_verify(_instance: object, _attribute: object, value: object) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, (str, Path)) and Path(value).is_file():
        return
    raise ConfigurationError(f"DICOMweb verify must be true (the system's CAs), false, or the path of a CA "
                             f"bundle (PEM), got {value!r}")


def _check_file(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (isinstance(value, (str, Path)) and Path(value).is_file()):
        raise ConfigurationError(f"DICOMweb {attribute.name} must be the path of a PEM file, got {value!r}")


def _check_timeout(_instance: object, _attribute: object, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"DICOMweb timeout must be a number of seconds > 0, got {value!r}")


def _check_headers(_instance: object, _attribute: object, value: object) -> None:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"DICOMweb headers must be a table of header name -> value, got a "
                                 f"{type(value).__name__}")
    for name, text in value.items():
        if not isinstance(name, str) or not name or any(c in name for c in ":\r\n "):
            raise ConfigurationError(f"DICOMweb headers: {name!r} is not a header name")
        _check_secret(f"DICOMweb header {name}", text)


@functools.cache
def _tls_adapter_class() -> type:
    from requests.adapters import HTTPAdapter

    class TlsAdapter(HTTPAdapter):
        """Our verification and client certificate on every HTTPS request.

        A session's ``verify`` loses to REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the
        environment (requests merges the environment's bundle over it), so a CA
        given to dicomnode would be ignored where those are set; the adapter
        gets the last word.
        """

        def __init__(self, verify: bool | str, cert: str | tuple[str, str] | None) -> None:
            super().__init__()
            self._verify, self._cert = verify, cert

        def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: bool | str = True,
                 cert: Any = None, proxies: Any = None) -> Any:
            return super().send(request, stream=stream, timeout=timeout, verify=self._verify, cert=self._cert,
                                proxies=proxies)

    return TlsAdapter


def _strip_slash(value: Any) -> Any:
    return value.rstrip("/") if isinstance(value, str) else value


def _verify_text(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _path_text(value: str | Path | None) -> str | None:
    return None if value is None else str(Path(value).resolve())


@attrs.frozen
class WebConnection:
    """A DICOMweb server and how to talk to it (see the module's documentation)."""

    url: str = attrs.field(validator=_check_url, converter=_strip_slash)
    token: Secret | None = attrs.field(default=None, repr=False)
    username: str | None = None
    password: Secret | None = attrs.field(default=None, repr=False)
    headers: Mapping[str, Secret] = attrs.field(factory=dict, repr=False, validator=_check_headers)
    verify: bool | str = attrs.field(default=True, validator=_check_verify, converter=_verify_text)
    client_cert: str | None = attrs.field(default=None, validator=_check_file, converter=_path_text)
    client_key: str | None = attrs.field(default=None, validator=_check_file, converter=_path_text)
    timeout: float = attrs.field(default=30.0, validator=_check_timeout)

    def __attrs_post_init__(self) -> None:
        _check_secret("DICOMweb token", self.token)
        _check_secret("DICOMweb password", self.password)
        if self.username is not None and not (isinstance(self.username, str) and self.username):
            raise ConfigurationError(f"DICOMweb username must be text, got {self.username!r}")
        if (self.username is None) != (self.password is None):
            raise ConfigurationError("DICOMweb basic authentication needs both username and password")
        if self.token is not None and self.username is not None:
            raise ConfigurationError("DICOMweb: give either token (bearer) or username/password (basic), not both")
        if self.client_key is not None and self.client_cert is None:
            raise ConfigurationError("DICOMweb client_key needs client_cert (the certificate of that key)")

    @property
    def host(self) -> str:
        """The server's host and port, for log lines (never the path's query or credentials)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{'' if parts.port is None else f':{parts.port}'}"

    def __str__(self) -> str:
        parts = urlsplit(self.url)
        return f"{self.host}{parts.path}"

    # --- the client -------------------------------------------------------------

    def client(self, callback: Callable[..., Any] | None = None) -> DICOMwebClient:
        """A DICOMweb client on a fresh session with this connection's authentication and TLS settings.

        Its own retries are off: the callers retry with their own backoff.
        ``callback(response)`` sees every response (dicomweb-client's hook).
        Raises ConfigurationError when a secret's environment variable is not set.
        """
        import requests
        from dicomweb_client import DICOMwebClient

        session = requests.Session()
        cert = None if self.client_cert is None else (
            self.client_cert if self.client_key is None else (self.client_cert, self.client_key))
        session.mount("https://", _tls_adapter_class()(self.verify, cert))
        if self.token is not None:
            session.headers["Authorization"] = f"Bearer {resolve_secret('DICOMweb token', self.token)}"
        if self.username is not None and self.password is not None:
            session.auth = (self.username, resolve_secret("DICOMweb password", self.password))
        headers = {name: resolve_secret(f"DICOMweb header {name}", value) for name, value in self.headers.items()}
        # STOW-RS and QIDO-RS answers as JSON (a server may default to XML); WADO-RS asks for its own types
        headers = {"Accept": "application/dicom+json", **headers}
        client = DICOMwebClient(self.url, session=session, headers=headers, timeout=self.timeout,
                                callback=callback)
        client.set_http_retry_params(retry=False)
        return client

    # --- in an outbox entry -------------------------------------------------------

    def to_settings(self) -> dict[str, Any]:
        """JSON for an outbox entry: everything but the secrets given as text (those stay in this process)."""
        given_as_text = any(value is not None and not _is_env(value)
                            for value in (self.token, self.password, *self.headers.values()))
        settings: dict[str, Any] = {"url": self.url, "verify": self.verify, "client_cert": self.client_cert,
                                    "client_key": self.client_key, "timeout": self.timeout,
                                    "username": self.username}
        if given_as_text:
            reference = secrets.token_hex(8)
            with _IN_MEMORY_LOCK:
                _IN_MEMORY[reference] = self
            settings["in_process"] = reference
        else:
            settings.update(token=self.token, password=self.password, headers=dict(self.headers))
        return settings

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], entry: str = "") -> WebConnection:
        """The connection an outbox entry's settings describe; ValueError says what is missing."""
        reference = settings.get("in_process")
        if reference is not None:
            with _IN_MEMORY_LOCK:
                found = _IN_MEMORY.get(str(reference))
            if found is None:
                raise ValueError(
                    f"outbox entry {entry} needs secrets (token, password or headers) of the process that "
                    "stored it; give them as {env = \"NAME\"} so entries can be retried after a restart"
                )
            return found
        try:
            return cls(url=settings["url"], token=settings.get("token"), username=settings.get("username"),
                       password=settings.get("password"), headers=settings.get("headers") or {},
                       verify=settings.get("verify", True), client_cert=settings.get("client_cert"),
                       client_key=settings.get("client_key"), timeout=float(settings.get("timeout", 30.0)))
        except (KeyError, TypeError) as error:
            raise ValueError(f"outbox entry {entry}: its settings are not those of a DICOMweb output "
                             f"({type(error).__name__}: {error})") from None
