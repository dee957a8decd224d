"""DCMTK peers for tests and benchmarks, started on free loopback ports and stopped by PID.

Always by absolute path: a virtual environment with pynetdicom puts
pynetdicom's own ``storescu``/``storescp`` first on PATH. ``TCP_NODELAY=1``
keeps DCMTK from stalling ~40 ms per instance on Nagle's algorithm.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

DCMTK = Path("/usr/bin")


def dcmtk_env() -> dict[str, str]:
    """The environment DCMTK tools run with."""
    return {**os.environ, "TCP_NODELAY": "1"}


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a process we started: SIGTERM by PID, then SIGKILL if it does not go."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)


@contextmanager
def storescp(directory: Path, port: int, ae_title: str = "STORESCP",
             extra: Sequence[str] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """A DCMTK ``storescp`` writing every received instance into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [str(DCMTK / "storescp"), "--aetitle", ae_title, "--output-directory", str(directory),
               "--accept-all", *extra, str(port)]
    log = open(directory.parent / f"storescp-{port}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, env=dcmtk_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        # another process may own the port: then storescp exits at once and must not look ready
        time.sleep(0.05)
        if process.poll() is not None:
            raise RuntimeError(f"storescp exited at start (status {process.returncode}); is port {port} taken?")
        yield process
    finally:
        stop_process(process)
        log.close()


def storescu(port: int, paths: Sequence[Path | str], *, called_aet: str = "ANY-SCP",
             calling_aet: str = "STORESCU", host: str = "127.0.0.1", extra: Sequence[str] = (),
             timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Send files (or folders, recursively) with DCMTK ``storescu``; returns the finished process."""
    command = [str(DCMTK / "storescu"), "-aet", calling_aet, "-aec", called_aet, "--scan-directories",
               "--recurse", *extra, host, str(port), *map(str, paths)]
    return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout)


def acknowledged(storescu_output: str) -> set[str]:
    """The SOP Instance UIDs (file stems) ``storescu -v`` received a success status for."""
    stems, current = set(), None
    for line in storescu_output.splitlines():
        if "Sending file:" in line:
            current = Path(line.split("Sending file:")[1].strip()).stem
        elif "Received Store Response (Success)" in line and current:
            stems.add(current)
    return stems
