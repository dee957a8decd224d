"""StowService: an HTTP endpoint that receives instances by STOW-RS into the node.

Switched on by the node setting ``services = {"stow": {...}}``. Each
``POST {root}studies`` (or ``{root}studies/{StudyInstanceUID}``) with a
``multipart/related; type="application/dicom"`` body is read part by part
as it arrives (python-multipart), and every part goes through the node's
ingest (:meth:`~dicomnode.extension.handles.NodeHandle.ingest`): exactly the
checks, storage and routing a C-STORE gets. After the request the stored
files are made durable as an association's end makes them, the patients
touched are checked for completeness, and the response says per instance
what happened (PS3.18 10.5.3):

==========  ==============================================================
HTTP        when
==========  ==============================================================
200         every instance was stored (ReferencedSOPSequence)
202         some were stored, others failed (FailedSOPSequence)
409         none was stored
400         the body is not a readable multipart/related message
401         no or wrong credentials (``WWW-Authenticate`` says which kind)
404 / 405   another path / another method than POST
413         the request is larger than ``maximum_request_size``
415         not ``multipart/related`` with ``type="application/dicom"``
503         ``maximum_connections`` requests are already being served
==========  ==============================================================

A failed instance's FailureReason is the C-STORE status the node's ingest
gave it (0xA700/0xA701 out of resources, 0xC001-0xC005 cannot understand,
see ``docs/how-a-node-works.md``); an instance of another study than the
one in the request's path gets 0xA900, a part larger than
``maximum_instance_size`` 0xA700, without being ingested.

The HTTP server is uvicorn, on a thread of its own, with TLS when
``tls_certificate`` is set. Authentication is a bearer ``token`` or basic
``username``/``password``; a service listening on an address that is not
loopback refuses to start without one.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from dicomnode.dicom.encoded import split_file
from dicomnode.errors import ConfigurationError
from dicomnode.extension.handles import IngestResult, NodeHandle, Source
from dicomnode.extension.labels import patient_label
from dicomnode.extension.services import Service
from dicomnode_dicomweb.connection import Secret, resolve_secret

__all__ = ["StowService", "is_loopback"]

logger = logging.getLogger("dicomnode.stow")

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: FailureReason of an instance of another study than the request's path names
STATUS_WRONG_STUDY = 0xA900
#: FailureReason of a part larger than maximum_instance_size (out of resources)
STATUS_TOO_LARGE = 0xA700
#: parts of one request received and waiting for the ingest, at most
_BACKLOG = 8

SETTINGS = ("ip", "port", "root", "token", "username", "password", "tls_certificate", "tls_key",
            "maximum_request_size", "maximum_instance_size", "maximum_connections")


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _positive(value: object) -> bool:
    return value > 0  # type: ignore[operator]


class _Part:
    """One part of the multipart body as it arrives."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.header_field = b""
        self.content_type = b""


class StowService(Service):
    """The STOW-RS receiver (see the module's documentation for what it answers).

    Settings (the table of ``services = {"stow": {...}}``):

    ``ip`` (default ``"127.0.0.1"``), ``port`` (default 8080; 0: any free
    port, :attr:`port` says which), ``root`` (default ``"/"``: requests go to
    ``/studies``; ``"/dicom-web/"``: to ``/dicom-web/studies``),
    ``token`` (bearer) or ``username`` and ``password`` (basic; each
    secret text or ``{env = "NAME"}``), ``tls_certificate`` and
    ``tls_key`` (PEM files: HTTPS), ``maximum_request_size`` (bytes,
    default 4 GiB), ``maximum_instance_size`` (bytes, default 1 GiB) and
    ``maximum_connections`` (default 8).
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.reject_unknown(settings, SETTINGS)
        self.ip = self.take(settings, "ip", str, "127.0.0.1", check=bool, allowed="an IP address")
        self.port = self.take(settings, "port", int, 8080, check=lambda p: 0 <= p <= 65535,
                              allowed="a port from 1 to 65535, or 0 for any free port")
        root = self.take(settings, "root", str, "/", check=lambda r: r.startswith("/"),
                         allowed="a path starting with '/', such as '/' or '/dicom-web/'")
        self.root = root if root.endswith("/") else root + "/"
        self._route = re.compile("^" + re.escape(self.root) + r"studies(?:/([0-9.]+))?/?$")
        self._token: Secret | None = self.take(settings, "token", (str, dict), None, check=bool,
                                               allowed="text, or {env = \"NAME\"}")
        self._username = self.take(settings, "username", str, None, check=bool, allowed="text")
        self._password: Secret | None = self.take(settings, "password", (str, dict), None, check=bool,
                                                  allowed="text, or {env = \"NAME\"}")
        if (self._username is None) != (self._password is None):
            raise ConfigurationError("StowService basic authentication needs both 'username' and 'password'")
        if self._token is not None and self._username is not None:
            raise ConfigurationError("StowService: give either 'token' (bearer) or 'username'/'password' "
                                     "(basic), not both")
        for key in ("token", "password"):
            value = settings.get(key)
            if isinstance(value, dict) and (list(value) != ["env"] or not isinstance(value["env"], str)):
                raise ConfigurationError(f"StowService setting {key!r} must be text or {{env = \"NAME\"}}")
        self.tls_certificate = self._file(settings, "tls_certificate")
        self.tls_key = self._file(settings, "tls_key")
        if self.tls_key is not None and self.tls_certificate is None:
            raise ConfigurationError("StowService setting 'tls_key' needs 'tls_certificate'")
        self.maximum_request_size = self.take(settings, "maximum_request_size", int, 4 << 30, check=_positive,
                                              allowed="a number of bytes > 0")
        self.maximum_instance_size = self.take(settings, "maximum_instance_size", int, 1 << 30,
                                               check=_positive, allowed="a number of bytes > 0")
        self.maximum_connections = self.take(settings, "maximum_connections", int, 8, check=_positive,
                                             allowed="a whole number of at least 1")
        if not self.authenticated and not is_loopback(self.ip):
            raise ConfigurationError(
                f"StowService listens on {self.ip}, which is not a loopback address, and has no "
                "authentication: set 'token' (bearer) or 'username' and 'password' (basic), so that not "
                "anyone who reaches the port can store instances in the node"
            )
        self._handle: NodeHandle | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._requests = 0
        self._active = 0
        self._closing = False
        self._lock = threading.Lock()

    def _file(self, settings: Mapping[str, Any], key: str) -> Path | None:
        value = self.take(settings, key, (str, Path), None, check=lambda v: Path(v).is_file(),
                          allowed="the path of a readable PEM file")
        return None if value is None else Path(value)

    @property
    def authenticated(self) -> bool:
        """True when requests must carry a bearer token or basic credentials."""
        return self._token is not None or self._username is not None

    @property
    def url(self) -> str:
        """Where to send STOW-RS requests: the service's DICOMweb root (the real port after start)."""
        scheme = "https" if self.tls_certificate is not None else "http"
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{scheme}://{host}:{self.port}{self.root.rstrip('/')}"

    # --- life cycle --------------------------------------------------------------

    def start(self, handle: NodeHandle) -> None:
        """Bind the port (an error here fails the node's open), then serve on a thread."""
        import uvicorn

        # read now, so an unset environment variable stops the open instead of every request
        self._secrets = self._resolved_secrets()
        self._handle = handle
        self._closing = False
        family = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.ip, self.port))
        except OSError as error:
            sock.close()
            raise OSError(f"the STOW-RS service cannot listen on {self.ip}:{self.port}: {error.strerror}") from None
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            # http="auto": httptools (a dependency) when it imports, h11 otherwise
            self._app, interface="asgi3", proxy_headers=False, log_config=None, log_level="warning",
            access_log=False, lifespan="off",
            limit_concurrency=self.maximum_connections, timeout_keep_alive=5,
            # stop() waits for the requests being served itself; what is left at shutdown is idle
            # connections, and an idle TLS one would hold the shutdown for asyncio's 30 s TLS close
            timeout_graceful_shutdown=1,
            ssl_certfile=None if self.tls_certificate is None else str(self.tls_certificate),
            ssl_keyfile=None if self.tls_key is None else str(self.tls_key),
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name=f"service-{self.name or 'stow'}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise OSError(f"the STOW-RS service on {self.ip}:{self.port} did not start")
            time.sleep(0.01)
        logger.info("STOW-RS service listening on %s/studies%s", self.url,
                    "" if self.authenticated else " (no authentication: loopback only)")

    def stop(self, timeout: float) -> None:
        """Answer new requests 503, let those being served finish within ``timeout``, then stop."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        self._closing = True
        deadline = time.monotonic() + timeout
        while self._active and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._active:
            logger.warning("%d STOW-RS request(s) still running after %g s at close: cut off", self._active,
                           timeout)
        server.should_exit = True
        thread.join(5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)

    def _resolved_secrets(self) -> tuple[bytes | None, bytes | None]:
        token = None if self._token is None else resolve_secret("StowService token", self._token).encode()
        basic = None
        if self._username is not None and self._password is not None:
            password = resolve_secret("StowService password", self._password)
            basic = base64.b64encode(f"{self._username}:{password}".encode())
        return token, basic

    # --- the HTTP application ------------------------------------------------------

    def _authorized(self, headers: Mapping[bytes, bytes]) -> bool:
        if not self.authenticated:
            return True
        given = headers.get(b"authorization", b"")
        scheme, _, credentials = given.partition(b" ")
        token, basic = self._secrets
        if token is not None and scheme.lower() == b"bearer":
            return hmac.compare_digest(credentials.strip(), token)
        if basic is not None and scheme.lower() == b"basic":
            return hmac.compare_digest(credentials.strip(), basic)
        return False

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        match = self._route.match(scope["path"])
        if match is None:
            await _answer(send, 404, {"error": f"not found: STOW-RS is POST {self.root}studies"})
            return
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": "only POST (STOW-RS) is served here"}, [(b"allow", b"POST")])
            return
        headers = dict(scope["headers"])
        if not self._authorized(headers):
            kind = b'Bearer realm="dicomnode"' if self._token is not None else b'Basic realm="dicomnode"'
            await _answer(send, 401, {"error": "authentication required"}, [(b"www-authenticate", kind)])
            return
        boundary = _boundary(headers.get(b"content-type", b"").decode("latin-1"))
        if boundary is None:
            await _answer(send, 415, {"error": 'send multipart/related; type="application/dicom" with a boundary'})
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.maximum_request_size:
            await _answer(send, 413, {"error": f"the request is larger than {self.maximum_request_size} bytes"})
            return
        if self._closing:
            await _answer(send, 503, {"error": "the node is closing"})
            return
        client = scope.get("client") or ("?", 0)
        with self._lock:
            self._requests += 1
            self._active += 1
            request = self._requests
        source = Source("", f"{client[0]}:{client[1]}", "stow", request)
        try:
            await self._receive_parts(receive, send, boundary, match.group(1), source)
        finally:
            with self._lock:
                self._active -= 1

    async def _receive_parts(self, receive: Receive, send: Send, boundary: str, study: str | None,
                             source: Source) -> None:
        from python_multipart.exceptions import MultipartParseError
        from python_multipart.multipart import MultipartParser

        done: list[_Part] = []
        current: list[_Part] = []
        limit = self.maximum_instance_size

        def begin() -> None:
            current.append(_Part())

        def data(buffer: bytes, start: int, end: int) -> None:
            part = current[-1]
            part.size += end - start
            if part.size > limit:
                part.too_large, part.chunks = True, []
            elif not part.too_large:
                part.chunks.append(buffer[start:end])

        def header_field(buffer: bytes, start: int, end: int) -> None:
            current[-1].header_field = buffer[start:end].lower()

        def header_value(buffer: bytes, start: int, end: int) -> None:
            if current[-1].header_field == b"content-type":
                current[-1].content_type = buffer[start:end]

        def end_part() -> None:
            done.append(current.pop())

        parser = MultipartParser(boundary, {"on_part_begin": begin, "on_part_data": data,
                                            "on_header_field": header_field, "on_header_value": header_value,
                                            "on_part_end": end_part})
        outcomes: list[tuple[str, str, IngestResult]] = []
        # parts are ingested on a thread of their own, in order, while the next ones arrive; at most
        # _BACKLOG wait, so a fast sender and a slow disk do not pile the request up in memory
        pool = ThreadPoolExecutor(1, thread_name_prefix=f"stow-{source.association}")
        loop = asyncio.get_running_loop()
        pending: deque[asyncio.Future[tuple[str, str, IngestResult]]] = deque()
        received = 0
        more = True
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    logger.warning("STOW-RS request %d from %s: the client went away after %d instance(s)",
                                   source.association, source.address, len(outcomes))
                    break
                body = message.get("body", b"")
                more = bool(message.get("more_body", False))
                received += len(body)
                if received > self.maximum_request_size:
                    await _answer(send, 413, {"error": f"the request is larger than {self.maximum_request_size} "
                                                       "bytes"})
                    return
                if body:
                    parser.write(body)
                while done:
                    pending.append(loop.run_in_executor(pool, self._ingest, done.pop(0), study, source))
                while len(pending) > _BACKLOG or (pending and pending[0].done()):
                    outcomes.append(await pending.popleft())
            parser.finalize()
        except MultipartParseError as error:
            await _answer(send, 400, {"error": f"the body is not a readable multipart message: {error}"})
            return
        finally:
            # what was handed to the ingest is finished and answered for, whatever ended the request
            outcomes += [await future for future in pending]
            pool.shutdown(wait=False)
            await asyncio.to_thread(self._finish, outcomes, source)
        if not outcomes:
            await _answer(send, 400, {"error": "the request holds no instance"})
            return
        status, response = _response(outcomes)
        await _answer(send, status, response, media=b"application/dicom+json")

    def _ingest(self, part: _Part, study: str | None, source: Source) -> tuple[str, str, IngestResult]:
        """One part through the node's ingest: (SOPClassUID, SOPInstanceUID, what the node did)."""
        assert self._handle is not None
        if part.too_large:
            return "", "", IngestResult(STATUS_TOO_LARGE, f"instance larger than {self.maximum_instance_size} bytes")
        media = part.content_type.split(b";")[0].strip().lower()
        if media and media != b"application/dicom":
            return "", "", IngestResult(0xC000, f"a part of type {media.decode('latin-1')[:40]} is not DICOM")
        encoded = b"".join(part.chunks)
        part.chunks = []
        try:
            meta, _offset = split_file(encoded)
            sop_class = str(meta.get("MediaStorageSOPClassUID", ""))
            sop_instance = str(meta.get("MediaStorageSOPInstanceUID", ""))
        except (InvalidDicomError, ValueError, EOFError, OSError):
            return "", "", IngestResult(0xC001, "the part is not a DICOM file (no preamble and file meta)")
        if study is not None and not _of_study(encoded, study):
            return sop_class, sop_instance, IngestResult(STATUS_WRONG_STUDY, "not of the study in the request's path",
                                                         sop_instance_uid=sop_instance)
        result = self._handle.ingest(encoded, source)
        return sop_class, result.sop_instance_uid or sop_instance, result

    def _finish(self, outcomes: list[tuple[str, str, IngestResult]], source: Source) -> None:
        """As at an association's end: make the files durable, check the patients, one log line."""
        assert self._handle is not None
        paths = [result.path for _, _, result in outcomes if result.path is not None]
        if paths:
            self._handle.sync(paths)
        patients = sorted({result.patient_key for _, _, result in outcomes if result.ok and result.patient_key})
        for key in patients:
            self._handle.check(key)
        refused = [result for _, _, result in outcomes if not result.ok]
        if refused:
            reasons = sorted({f"0x{result.status:04X} {result.comment}" for result in refused})
            logger.warning("STOW-RS request %d from %s: %d of %d instance(s) refused: %s", source.association,
                           source.address, len(refused), len(outcomes), "; ".join(reasons)[:500])
        logger.info("STOW-RS request %d from %s: %d instance(s) of patient(s) %s stored", source.association,
                    source.address, len(outcomes) - len(refused), ", ".join(map(patient_label, patients)) or "none")


def _of_study(encoded: bytes, study: str) -> bool:
    from io import BytesIO

    from pydicom import dcmread

    try:
        header = dcmread(BytesIO(encoded), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    except Exception:  # the ingest says what is wrong with it
        return True
    return str(header.get("StudyInstanceUID", "")) == study


def _boundary(content_type: str) -> str | None:
    """The boundary of a ``multipart/related; type="application/dicom"`` Content-Type, else None."""
    media, _, rest = content_type.partition(";")
    if media.strip().lower() != "multipart/related":
        return None
    parameters = {}
    for item in rest.split(";"):
        name, _, value = item.partition("=")
        parameters[name.strip().lower()] = value.strip().strip('"')
    kind = parameters.get("type", "application/dicom").lower()
    if kind != "application/dicom" or not parameters.get("boundary"):
        return None
    return parameters["boundary"]


def _response(outcomes: list[tuple[str, str, IngestResult]]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the STOW-RS response dataset (DICOM JSON) for the instances of a request."""
    response = Dataset()
    stored, failed = [], []
    for sop_class, sop_instance, result in outcomes:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        if result.ok:
            stored.append(item)
        else:
            item.FailureReason = result.status
            failed.append(item)
    response.ReferencedSOPSequence = stored
    if failed:
        response.FailedSOPSequence = failed
    status = 200 if not failed else 409 if not stored else 202
    return status, response.to_json_dict()


async def _answer(send: Send, status: int, body: Mapping[str, Any], headers: list[tuple[bytes, bytes]] | None = None,
                  *, media: bytes = b"application/json") -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})
