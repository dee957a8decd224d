"""A real Dask cluster for tests: a ``dask scheduler`` and ``dask worker`` processes on loopback, stopped by PID.

The workers run without Dask's nanny (one process each instead of two, half
the start-up time): a worker that dies, or that ends because it lost its
scheduler (as a ``dask worker`` does with or without a nanny), is started
again by :meth:`DaskCluster.supervise`, as the service manager of a real
deployment would. The workers import the test pipelines from ``tests/support``
and record what they do in files under ``record_dir`` (see
:mod:`dask_pipelines`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from conftest import free_port
from dcmtk import stop_process, wait_for_port

SUPPORT = Path(__file__).resolve().parent
DASK = Path(sys.executable).parent / "dask"


class DaskCluster:
    """A scheduler and ``workers`` workers of one thread each, on 127.0.0.1."""

    def __init__(self, folder: Path, record_dir: Path, *, workers: int = 2, tls: Sequence[str] = (),
                 protocol: str = "tcp", worker_options: Sequence[Sequence[str]] = ()) -> None:
        self.folder = folder
        self.record_dir = record_dir
        self.port = free_port()
        self.protocol = protocol
        self.tls = list(tls)
        self.worker_count = workers
        self.worker_options = [list(options) for options in worker_options] or [[] for _ in range(workers)]
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[object] = []
        folder.mkdir(parents=True, exist_ok=True)
        record_dir.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return f"{self.protocol}://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        path = os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return {**os.environ, "PYTHONPATH": path, "DICOMNODE_DASK_RECORD": str(self.record_dir)}

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        return subprocess.Popen(command, env=self._env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)

    def start(self, timeout: float = 90.0) -> DaskCluster:
        """Start the scheduler and the workers together, and wait until every worker has joined."""
        self.start_scheduler(wait=False)
        self.workers = [self._worker(number) for number in range(self.worker_count)]
        self.wait_for_workers(self.worker_count, timeout)
        return self

    def _worker(self, number: int) -> subprocess.Popen[bytes]:
        return self._spawn(f"worker-{number}", [
            str(DASK), "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
            "--no-dashboard", "--no-nanny", "--death-timeout", "600", *self.tls, *self.worker_options[number]])

    def supervise(self) -> int:
        """Start again each ``dask worker`` that has ended, as systemd or Kubernetes would; return how many.

        A ``dask worker`` ends when it loses its scheduler (its nanny restarts
        only a worker process that dies under it).
        """
        restarted = 0
        for number, process in enumerate(self.workers):
            if process.poll() is not None:
                self.workers[number] = self._worker(number)
                restarted += 1
        return restarted

    def start_scheduler(self, wait: bool = True) -> None:
        """A scheduler on the cluster's address (again, after :meth:`kill_scheduler`)."""
        self.scheduler = self._spawn("scheduler", [
            str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard",
            "--protocol", self.protocol, *self.tls])
        if wait:
            wait_for_port(self.port, timeout=60)

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler, as a crash would."""
        assert self.scheduler is not None
        os.kill(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait(10)

    def worker_pids(self) -> list[int]:
        """The PIDs of the running worker processes (the processes that run ``process``)."""
        return [worker.pid for worker in self.workers if worker.poll() is None]

    def connected_workers(self) -> int:
        """How many workers the scheduler knows now (0 when it cannot be asked)."""
        from distributed import Client

        try:
            with Client(self.address, timeout=5, security=self.security(), set_as_default=False) as client:
                return len(client.scheduler_info(n_workers=-1)["workers"])
        except Exception:
            return 0

    def wait_for_workers(self, count: int, timeout: float = 90.0) -> None:
        """Block until ``count`` workers are connected to the scheduler."""
        deadline = time.monotonic() + timeout
        wait_for_port(self.port, timeout=timeout)
        while self.connected_workers() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Dask worker(s) did not join {self.address} in {timeout} s; logs in "
                                   f"{self.folder}")
            time.sleep(0.2)

    def security(self) -> object:
        if not self.tls:
            return None
        from distributed.security import Security

        options = dict(zip(self.tls[::2], self.tls[1::2], strict=True))
        return Security(tls_ca_file=options["--tls-ca-file"], tls_client_cert=options["--tls-cert"],
                        tls_client_key=options["--tls-key"], require_encryption=True)

    def stop(self) -> None:
        """Stop the workers and the scheduler, by PID."""
        for worker in self.workers:
            stop_process(worker)
        if self.scheduler is not None:
            stop_process(self.scheduler)
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]
