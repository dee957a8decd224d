"""A real Orthanc PACS for tests: free loopback ports, its own storage, stopped by PID.

    from orthanc import orthanc

    with orthanc(tmp_path, modalities={"NODE": ("NODE", "127.0.0.1", node_port)}) as pacs:
        pacs.upload(path)
        assert pacs.count_instances() == 1
        address = pacs.address          # a dicomnode Address for C-STORE / C-FIND / C-MOVE

Everything Orthanc needs is generated into a JSON file under ``tmp_path``:
authentication off, no plugins (``dicomweb=True`` loads Debian's DICOMweb
plugin, serving ``pacs.dicomweb_url``; ``dicomweb_servers`` names the
DICOMweb servers Orthanc may push to with :meth:`OrthancServer.stow_to`), no job persistence, an association close
delay of 0 s (so C-MOVE sub-associations end at once) and, unlike a stock
Orthanc, C-FIND / C-GET / C-MOVE allowed from any calling AE title. Pass
``config={...}`` to override or add any Orthanc setting, e.g.
``{"DicomAlwaysAllowStore": False}`` to refuse unknown AEs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dcmtk import stop_process

ORTHANC = "/usr/sbin/Orthanc"
#: Debian's orthanc-dicomweb package
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def orthanc_path() -> str | None:
    """Where the Orthanc program is, or None."""
    if os.access(ORTHANC, os.X_OK):
        return ORTHANC
    return shutil.which("Orthanc")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OrthancError(RuntimeError):
    """Orthanc did not start, or a REST call failed (the message carries Orthanc's answer)."""


class OrthancServer:
    """A running Orthanc: its ports, its AE title and a few REST helpers (urllib, JSON)."""

    def __init__(self, *, aet: str, dicom_port: int, http_port: int, directory: Path,
                 process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.aet = aet
        self.host = "127.0.0.1"
        self.dicom_port = dicom_port
        self.http_port = http_port
        self.directory = directory
        self.process = process
        self.log_path = log_path
        self.base_url = f"http://127.0.0.1:{http_port}"
        #: the DICOMweb root (QIDO-RS, WADO-RS, STOW-RS) when the DICOMweb plugin is loaded
        self.dicomweb_url = f"{self.base_url}/dicom-web"
        #: (user, password) the REST helpers authenticate with, when Orthanc asks for them
        self.credentials: tuple[str, str] | None = None

    @property
    def address(self) -> Any:
        """Orthanc's DICOM address as a ``dicomnode.net.Address``."""
        from dicomnode.net import Address

        return Address(self.host, self.dicom_port, self.aet)

    def log(self) -> str:
        """Orthanc's log so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace")

    # -- REST ---------------------------------------------------------------------------------

    def rest(self, method: str, path: str, body: bytes | str | Mapping[str, Any] | list[Any] | None = None,
             *, content_type: str | None = None, timeout: float = 30.0, raw: bool = False) -> Any:
        """Call Orthanc's REST API; return the decoded JSON (or the bytes with ``raw=True``)."""
        data: bytes | None
        headers = {}
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
            headers["Content-Type"] = content_type or "application/dicom"
        elif isinstance(body, str):
            data = body.encode()
            headers["Content-Type"] = content_type or "text/plain"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.credentials is not None:
            import base64

            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise OrthancError(f"{method} {path} -> HTTP {error.code}: {detail}") from None
        if raw:
            return payload
        return json.loads(payload) if payload.strip() else None

    def instances(self) -> list[str]:
        """Orthanc's identifiers of every stored instance."""
        result: list[str] = self.rest("GET", "/instances")
        return result

    def count_instances(self) -> int:
        """How many instances Orthanc stores."""
        return int(self.rest("GET", "/statistics")["CountInstances"])

    def sop_instance_uids(self) -> set[str]:
        """The SOPInstanceUID of every stored instance."""
        expanded = self.rest("GET", "/instances?expand")
        return {item["MainDicomTags"]["SOPInstanceUID"] for item in expanded}

    def upload(self, dicom: Path | str | bytes) -> str:
        """Store a DICOM file (a path or its bytes) through REST; return its Orthanc identifier."""
        data = dicom if isinstance(dicom, bytes) else Path(dicom).read_bytes()
        answer = self.rest("POST", "/instances", data)
        if not isinstance(answer, dict) or "ID" not in answer:
            raise OrthancError(f"Orthanc did not store the upload: {answer!r}")
        return str(answer["ID"])

    def upload_datasets(self, datasets: Any) -> list[str]:
        """Store pydicom datasets through REST (each written with its file meta)."""
        from io import BytesIO

        ids = []
        for dataset in datasets:
            buffer = BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            ids.append(self.upload(buffer.getvalue()))
        return ids

    def tags(self, instance_id: str) -> dict[str, Any]:
        """An instance's tags by keyword (Orthanc's "simplified" form: keyword -> value)."""
        result: dict[str, Any] = self.rest("GET", f"/instances/{instance_id}/simplified-tags")
        return result

    def file(self, instance_id: str) -> bytes:
        """An instance's DICOM file as stored."""
        result: bytes = self.rest("GET", f"/instances/{instance_id}/file", raw=True)
        return result

    def lookup(self, uid: str) -> list[dict[str, Any]]:
        """Which resources (patient/study/series/instance) carry this UID or ID."""
        result: list[dict[str, Any]] = self.rest("POST", "/tools/lookup", uid, content_type="text/plain")
        return result

    def clear(self) -> None:
        """Delete every stored patient (and so every instance)."""
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")

    def stow_to(self, server: str, resources: list[str], *, timeout: float = 60.0) -> Any:
        """Make Orthanc's DICOMweb client send resources by STOW-RS to one of its ``dicomweb_servers``."""
        body = {"Resources": resources, "Synchronous": True}
        return self.rest("POST", f"/dicom-web/servers/{server}/stow", body, timeout=timeout + 5)

    def store_to_modality(self, modality: str, resources: list[str], *, timeout: float = 60.0) -> Any:
        """Make Orthanc C-STORE resources (Orthanc identifiers) to a modality of its configuration."""
        body = {"Resources": resources, "Synchronous": True, "Timeout": int(timeout)}
        return self.rest("POST", f"/modalities/{modality}/store", body, timeout=timeout + 5)


def _configuration(*, aet: str, dicom_port: int, http_port: int, storage: Path,
                   modalities: Mapping[str, tuple[str, str, int]],
                   overrides: Mapping[str, Any], dicomweb: bool = False,
                   dicomweb_servers: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Name": f"test-orthanc-{dicom_port}",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomScpTimeout": 30,
        "DicomScuTimeout": 10,
        "DicomAssociationCloseDelay": 0,
        "UnknownSopClassAccepted": False,
        "SaveJobs": False,
        "ConcurrentJobs": 2,
        "StableAge": 2,
        "DicomModalities": {name: list(entry) for name, entry in modalities.items()},
    }
    if dicomweb:
        config["Plugins"] = [DICOMWEB_PLUGIN]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                              "Servers": {name: dict(entry) for name, entry in (dicomweb_servers or {}).items()}}
    config.update(overrides)
    return config


def _wait_for_rest(server: OrthancServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise OrthancError(f"Orthanc exited with {server.process.returncode} at start:\n{server.log()[-3000:]}")
        try:
            server.rest("GET", "/system", timeout=1.0)
        except (OSError, OrthancError):
            time.sleep(0.05)
            continue
        return
    raise OrthancError(f"Orthanc's REST API did not answer within {timeout} s:\n{server.log()[-3000:]}")


def _wait_for_dicom(server: OrthancServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((server.host, server.dicom_port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise OrthancError(f"Orthanc's DICOM port {server.dicom_port} did not open within {timeout} s")


def _stop(process: subprocess.Popen[bytes], graceful: bool) -> None:
    if graceful:
        stop_process(process)
    elif process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def orthanc(directory: Path, *, aet: str = "ORTHANC",
            modalities: Mapping[str, tuple[str, str, int]] | None = None,
            config: Mapping[str, Any] | None = None, dicomweb: bool = False,
            dicomweb_servers: Mapping[str, Mapping[str, Any]] | None = None, http_port: int | None = None,
            credentials: tuple[str, str] | None = None, start_timeout: float = 30.0, graceful_stop: bool = False) -> Iterator[OrthancServer]:
    """Start Orthanc with its storage under ``directory``; stop it (by PID) when the block ends.

    ``modalities`` maps a name to ``(ae_title, host, port)`` — the nodes Orthanc
    may C-MOVE / C-STORE to. ``config`` overrides or adds Orthanc settings.
    Tests call ``require_peer("orthanc")`` before this (and
    ``require_peer("orthanc-dicomweb")`` with ``dicomweb=True``).
    ``dicomweb_servers`` maps a name to Orthanc's settings of a DICOMweb
    server (``{"Url": ..., "HttpHeaders": {...}}``). ``http_port`` chooses the REST
    (and DICOMweb) port, for a test that sends to it before Orthanc starts;
    ``credentials`` (user, password) switch HTTP authentication on, for that one user.

    Orthanc's own shutdown takes ~3.5 s (its servers poll), so by default it is
    stopped with SIGKILL by PID: its storage is throw-away. ``graceful_stop=True``
    sends SIGTERM and waits. Share one server per module (and ``clear()`` it)
    when many tests need one.
    """
    program = orthanc_path()
    if program is None:
        raise OrthancError("Orthanc is not installed (apt-get install orthanc)")
    directory = Path(directory)
    last_error: OrthancError | None = None
    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        dicom_port, rest_port = _free_port(), http_port or _free_port()
        while rest_port == dicom_port:
            dicom_port = _free_port()
        home = directory / f"orthanc-{dicom_port}"
        storage = home / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        settings = _configuration(aet=aet, dicom_port=dicom_port, http_port=rest_port, storage=storage,
                                  modalities=modalities or {}, overrides=config or {}, dicomweb=dicomweb,
                                  dicomweb_servers=dicomweb_servers)
        if credentials is not None:
            settings.update(AuthenticationEnabled=True, RegisteredUsers={credentials[0]: credentials[1]})
        config_path = home / "orthanc.json"
        config_path.write_text(json.dumps(settings, indent=2))
        log_path = home / "orthanc.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen([program, str(config_path)], env={**os.environ, "TCP_NODELAY": "1"},
                                   stdout=log, stderr=subprocess.STDOUT, cwd=home)
        server = OrthancServer(aet=aet, dicom_port=dicom_port, http_port=rest_port, directory=home,
                               process=process, log_path=log_path)
        server.credentials = credentials
        try:
            _wait_for_rest(server, start_timeout)
            _wait_for_dicom(server, start_timeout)
        except OrthancError as error:
            stop_process(process)
            log.close()
            last_error = error
            continue
        try:
            yield server
        finally:
            _stop(process, graceful_stop)
            log.close()
        return
    assert last_error is not None
    raise last_error
