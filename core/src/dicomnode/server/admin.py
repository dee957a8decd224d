"""The admin endpoint: a small HTTP server beside the node for people and monitoring.

=============  =================================================================
``GET /``        the status page: HTML that refreshes itself, no JavaScript
``GET /status``  the status as JSON (:mod:`dicomnode.server.status`); ``?limit=N`` patients
``GET /metrics`` Prometheus text (:mod:`dicomnode.server.metrics`)
``GET /healthz`` 200 when the node listens and has restored its data, else 503
=============  =================================================================

It serves only GET and HEAD, with the standard library's
``ThreadingHTTPServer`` on its own threads, so a slow client never holds up
the node. It listens on ``admin_ip``:``admin_port``, by default on the
loopback address only; on any other address it needs ``admin_token``, and
then every path but ``/healthz`` asks for it, either as
``Authorization: Bearer TOKEN`` (Prometheus, curl) or as the password of
HTTP Basic authentication with any user name (a browser asks for it).
Put a reverse proxy with TLS in front of it when it is reached over a
network.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from dicomnode.errors import ConfigurationError

if TYPE_CHECKING:
    from dicomnode.server.operations import Operations

__all__ = ["STOP_TIMEOUT", "AdminServer"]

logger = logging.getLogger("dicomnode.admin")

#: seconds a client may take to send its request (a stalled client must not keep a thread forever)
_REQUEST_TIMEOUT = 10.0
#: the longest closing the endpoint takes (a part of the node's bounded shutdown)
STOP_TIMEOUT = 5.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # a restarted node must get its port back at once, as the DICOM server does
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], operations: Operations, token: str | None) -> None:
        self.operations = operations
        self.token = token
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _REQUEST_TIMEOUT
    server_version = "dicomnode-admin"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _authorised(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        given = ""
        if scheme.lower() == "bearer":
            given = credentials.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                given = ""
        return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))

    def _answer(self, *, head: bool) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        operations = self.server.operations
        try:
            if path == "/healthz":
                healthy, detail = operations.health()
                self._send(200 if healthy else 503, _json(detail), "application/json", head)
                return
            if path not in ("/", "/index.html", "/status", "/metrics"):
                self._send(404, _json({"error": f"no such page {path!r}; there are /, /status, /metrics and "
                                                "/healthz"}), "application/json", head)
                return
            if not self._authorised():
                self._send(401, _json({"error": "this page needs the admin token (admin_token): "
                                                "'Authorization: Bearer TOKEN', or TOKEN as the password"}),
                           "application/json", head, {"WWW-Authenticate": 'Basic realm="dicomnode", charset="UTF-8"'})
                return
            if path == "/status":
                limit = _limit(parse_qs(url.query))
                self._send(200, _json(operations.status(limit=limit)), "application/json", head)
            elif path == "/metrics":
                exposition = operations.metrics_text()
                if exposition is None:
                    self._send(503, _json({"error": operations.metrics_unavailable()}), "application/json", head)
                else:
                    body, content_type = exposition
                    self._send(200, body, content_type, head)
            else:
                self._send(200, operations.page().encode("utf-8"), "text/html; charset=utf-8", head)
        except ValueError as error:
            self._send(400, _json({"error": str(error)}), "application/json", head)
        except Exception:  # a bug here must not end the admin thread, nor leak a traceback to the client
            logger.exception("the admin endpoint failed on %s", path)
            self._send(500, _json({"error": "internal error; the node's log has the details"}), "application/json",
                       head)

    def _send(self, code: int, body: bytes, content_type: str, head: bool,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _json(document: Any) -> bytes:
    # compact: a status of hundreds of patients is read by programs (``dicomnode status`` prints it for people)
    return (json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def _limit(query: dict[str, list[str]]) -> int:
    from dicomnode.server.status import DEFAULT_LIMIT

    values = query.get("limit")
    if not values:
        return DEFAULT_LIMIT
    try:
        limit = int(values[-1])
    except ValueError:
        limit = -1
    if limit < 0:
        raise ValueError(f"limit must be a whole number of patients (0 or more), got {values[-1]!r}")
    return limit


class AdminServer:
    """The admin endpoint's HTTP server on its own threads (see the module docstring)."""

    def __init__(self, operations: Operations, ip: str, port: int, token: str | None) -> None:
        self.operations = operations
        self.ip = ip
        self.requested_port = port
        self.token = token
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the real one when ``admin_port`` is 0)."""
        return int(self._server.server_address[1]) if self._server is not None else self.requested_port

    @property
    def url(self) -> str:
        """Its address as an http URL."""
        host = "127.0.0.1" if self.ip in ("0.0.0.0", "") else self.ip
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Listen and serve on a daemon thread; ConfigurationError naming the address when it cannot."""
        try:
            self._server = _Server((self.ip, self.requested_port), self.operations, self.token)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"cannot serve the admin endpoint on {self.ip}:{self.requested_port}: the address is already "
                    "in use (another node or program listens there); choose another 'admin_port' (0: any free "
                    "port)") from error
            raise ConfigurationError(f"cannot serve the admin endpoint on {self.ip}:{self.requested_port}: "
                                     f"{error.strerror or error}") from error
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="dicomnode-admin", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving (requests being answered finish on their own threads)."""
        server, self._server = self._server, None
        if server is None:
            return
        started = time.monotonic()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(max(0.0, STOP_TIMEOUT - (time.monotonic() - started)))
            self._thread = None
