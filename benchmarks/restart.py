"""Restart with a backlog: how long a node holding many incomplete instances takes to answer C-ECHO again.

A node with ``data_directory`` (the ingest benchmark's receiver (c), whose
input never completes) is sent ``COUNT`` 64x64 CT instances (100 per
patient) by DCMTK ``storescu`` and stopped; then, each round, the same node
is started again on the same data directory and timed from the start of its
process to its first successful DCMTK ``echoscu``, with its resident memory
once it answers (and, for a node that restores behind the listen, how long
its restore took and its memory after). DCMTK ``storescp`` started on a folder holding the same
files is the reference (a process start and a listening socket: the floor).
With ``--baseline SOURCES`` the node from those sources (another checkout's
``core/src``) restarts on a copy of the same data directory, interleaved.
``--python PATH`` runs the nodes with another interpreter (a virtual
environment with only the core installed, say); the backlog is still
written by this one.

Most of a restart is importing: whether the modules have bytecode caches
(``__pycache__``) changes it more than anything else. ``pip install``
writes them for what it installs, ``uv pip install`` does not unless told
(``--compile-bytecode``), and with ``PYTHONDONTWRITEBYTECODE`` set nothing
writes them on import. The report says which of the node's packages have
them.

    python benchmarks/restart.py --count 20000 --runs 3
    python benchmarks/restart.py --count 20000 --runs 3 --python /path/to/core-only-venv/bin/python
    python benchmarks/restart.py --count 200 --runs 1     # a smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import ingest  # noqa: E402

ECHOSCU = "/usr/bin/echoscu"
#: the interpreter the nodes run with (--python)
NODE_PYTHON: list[str] = [sys.executable]
CONTENDERS = {
    "c": "dicomnode, data_directory",
    "C": "dicomnode from --baseline, data_directory",
    "d": "DCMTK storescp",
}


def _echo(port: int) -> bool:
    done = subprocess.run([ECHOSCU, "-to", "1", "-aec", "ANY", "127.0.0.1", str(port)], env=ingest.dcmtk_env(),
                          capture_output=True, timeout=10)
    return done.returncode == 0


def _rss_mib(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def _command(kind: str, port: int, folder: Path) -> tuple[list[str], dict[str, str]]:
    env = ingest.dcmtk_env()
    if kind == "d":
        return [ingest.STORESCP, "--aetitle", "STORESCP", "--output-directory", str(folder), "--accept-all",
                str(port)], env
    if kind == "C":
        env["PYTHONPATH"] = os.pathsep.join(ingest.BASELINE)
    return [NODE_PYTHON[0], str(HERE / "ingest.py"), "--serve", kind, str(port), str(folder)], env


def restart_once(kind: str, folder: Path, log: Path, timeout: float = 300.0
                 ) -> tuple[float, float, tuple[float, float] | None]:
    """Start ``kind`` on ``folder``; seconds until it answers C-ECHO, its RSS (MiB) then, and for a node
    that restores behind the listen the seconds its restore took and its RSS after. Stopped after."""
    port = ingest.free_port()
    command, env = _command(kind, port, folder)
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as output:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not _echo(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"({kind}) never answered C-ECHO; see {log}")
                time.sleep(0.02)
            elapsed = time.perf_counter() - start
            rss = _rss_mib(process.pid)
            return elapsed, rss, (_restored(log, offset, process, deadline) if kind == "c" else None)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()


def _restored(log: Path, offset: int, process: subprocess.Popen[bytes], deadline: float) -> tuple[float, float]:
    """Wait for the node's ``RESTORED <seconds> <instances>`` line; its restore's seconds and its RSS then."""
    while time.monotonic() < deadline and process.poll() is None:
        with open(log, "rb") as stream:
            stream.seek(offset)
            for line in stream.read().decode(errors="replace").splitlines():
                if line.startswith("RESTORED "):
                    return float(line.split()[1]), _rss_mib(process.pid)
        time.sleep(0.05)
    raise RuntimeError(f"the node never reported the end of its restore; see {log}")


def backlog(count: int, work: Path, kinds: list[str]) -> dict[str, Path]:
    """A data directory per contender holding ``count`` received, incomplete instances."""
    study = ingest.small_study(count)
    first = work / "node"
    receiver = ingest.Receiver("c", work)
    try:
        ingest.send(receiver.port, ingest.groups_of(study, 1))
    finally:
        receiver.stop()
    shutil.move(str(receiver.folder), first)
    folders = {}
    for kind in kinds:
        folder = work / f"data-{kind}"
        if kind == "d":
            shutil.copytree(study, folder)
        else:
            shutil.copytree(first, folder)
        folders[kind] = folder
    return folders


def measure(count: int, runs: int, kinds: list[str], *, warm_up: bool = True
            ) -> tuple[dict[str, list[float]], dict[str, list[float]], list[tuple[float, float]]]:
    """Seconds to the first C-ECHO and RSS (MiB) of each contender per counted round (after a warm-up round),
    and the seconds and RSS after of each counted restore behind the listen (contender c)."""
    ingest.WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="restart-", dir=ingest.WORK))
    try:
        folders = backlog(count, work, kinds)
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        memory: dict[str, list[float]] = {kind: [] for kind in kinds}
        behind: list[tuple[float, float]] = []
        first = 0 if warm_up else 1
        for round_number in range(first, runs + 1):
            for kind in kinds:
                elapsed, rss, restored = restart_once(kind, folders[kind], work / f"{kind}.log")
                if round_number > 0:
                    times[kind].append(elapsed)
                    memory[kind].append(rss)
                    if restored is not None:
                        behind.append(restored)
        return times, memory, behind
    finally:
        shutil.rmtree(work, ignore_errors=True)


_CACHED = """
import importlib.util, os, sys
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    folder = os.path.dirname(spec.origin) if spec is not None and spec.origin else None
    sources = cached = 0
    for root, _dirs, files in os.walk(folder) if folder else ():
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(root, file)
                sources += 1
                cache = importlib.util.cache_from_source(path)
                cached += os.path.exists(cache) and os.stat(cache).st_mtime >= os.stat(path).st_mtime
    print(name, cached, sources)
"""


def bytecode(kind: str) -> str:
    """Which of the packages a node of ``kind`` imports have bytecode caches, as one line."""
    command, env = _command(kind, 0, Path())
    done = subprocess.run([command[0], "-c", _CACHED, "dicomnode", "pydicom", "pynetdicom", "numpy"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    parts = []
    for line in done.stdout.splitlines():
        name, cached, sources = line.split()
        if int(sources):
            parts.append(f"{name} {int(cached)}/{int(sources)}")
    writes = "no" if env.get("PYTHONDONTWRITEBYTECODE") or sys.flags.dont_write_bytecode else "yes"
    return f"({kind}) {command[0]}: modules with a current bytecode cache: {', '.join(parts)}; " \
           f"imports write caches: {writes}"


def report(count: int, times: dict[str, list[float]], memory: dict[str, list[float]],
           behind: list[tuple[float, float]] | None = None, caches: list[str] | None = None) -> str:
    lines = [f"Restart with {count} held 64x64 CT instances: start to the first C-ECHO answered", "",
             "| contender | median (s) | min–max (s) | RSS then (MiB), median |", "|---|---|---|---|"]
    for kind, values in times.items():
        lines.append(f"| ({kind}) {CONTENDERS[kind]} | {statistics.median(values):.3f} | "
                     f"{min(values):.3f}–{max(values):.3f} | {statistics.median(memory[kind]):.0f} |")
    if behind:
        seconds = [item[0] for item in behind]
        lines += ["", f"(c) restores behind the listen in {statistics.median(seconds):.2f} s (median; "
                      f"{min(seconds):.2f}–{max(seconds):.2f}), RSS then "
                      f"{statistics.median(item[1] for item in behind):.0f} MiB"]
    if caches:
        lines += ["", *caches]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="instances held (default 20000)")
    parser.add_argument("--runs", type=int, default=3, help="counted rounds after the warm-up (default 3)")
    parser.add_argument("--contenders", default="cd", help="which (default cd; C needs --baseline)")
    parser.add_argument("--baseline", metavar="SOURCES", help="contender C imports dicomnode from these folders")
    parser.add_argument("--python", metavar="PATH", help="the interpreter the nodes run with (default: this one)")
    args = parser.parse_args()
    if args.python:
        NODE_PYTHON[:] = [args.python]
    if args.baseline:
        ingest.BASELINE[:] = [str(Path(p).resolve()) for p in args.baseline.split(os.pathsep) if p]
    for program in (ingest.STORESCU, ingest.STORESCP, ECHOSCU):
        if not os.access(program, os.X_OK):
            raise SystemExit(f"{program} is missing: apt-get install dcmtk")
    caches = [bytecode(kind) for kind in args.contenders if kind != "d"]
    times, memory, behind = measure(args.count, args.runs, list(args.contenders))
    print(report(args.count, times, memory, behind, caches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
