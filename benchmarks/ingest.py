"""Ingest: a 300-slice 512x512 CT sent by DCMTK storescu into four receivers, side by side.

Receivers, each in its own process on a free loopback port:

(a) a bare pynetdicom storage SCP, maximum PDU size 0, whose handler returns 0x0000;
(b) a dicomnode node whose one input accepts everything and never validates, in memory;
(c) the same node with ``data_directory`` (each instance written before success returns);
(d) DCMTK ``storescp`` writing to a folder;
(e) Orthanc storing every instance (``--receivers abcde``; HTTP off, no plugins);
(f) DCMTK ``storescp --fork``: a process per association, what a C receiver gets from more cores;
(l) the node with ``data_directory`` and ``lazy_storage`` (headers in memory, pixels read back when used);
(p) the same with ``receiving_processes = 2`` (associations served by two receiving processes;
    ``q``: four).

The same files are sent with ``/usr/bin/storescu`` (``TCP_NODELAY=1``), one
association per run, the receivers interleaved a b c d a b c d … after a
warm-up round; the figures are medians of the counted rounds. A second
scenario sends the same study as 4 concurrent storescu clients (a quarter of
the files each). Targets: (b)/(a) >= 0.9 and (c)/(a) >= 0.75 in throughput.

    python benchmarks/ingest.py --runs 5
    python benchmarks/ingest.py --quick          # 40 slices, 3 runs: a smoke test
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
WORK = HERE / ".work"
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
RECEIVERS = {
    "a": "bare pynetdicom SCP",
    "b": "dicomnode, in memory",
    "c": "dicomnode, data_directory",
    "d": "DCMTK storescp",
    "e": "Orthanc",
    "f": "DCMTK storescp --fork (a process per association)",
    "l": "dicomnode, data_directory, lazy_storage",
    "p": "dicomnode, data_directory, lazy_storage, 2 receiving processes",
    "q": "dicomnode, data_directory, lazy_storage, 4 receiving processes",
    # with --baseline SOURCES: the same nodes from other sources (another checkout's core/src), side by side
    "B": "dicomnode from --baseline, in memory",
    "C": "dicomnode from --baseline, data_directory",
}
#: where the receivers write (--folder); None: benchmarks/.work
FOLDER: Path | None = None
#: the sources the B and C receivers import dicomnode from (--baseline)
BASELINE: list[str] = []
ORTHANC = "/usr/sbin/Orthanc"


# --- the receivers (run with --serve KIND PORT FOLDER) ------------------------------------------


def _serve_pynetdicom(port: int) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage

    def on_store(_event: object) -> int:
        return 0x0000

    ae = AE(ae_title="BARE")
    ae.maximum_pdu_size = 0
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    _wait_for_signal()
    server.shutdown()


def _serve_node(port: int, folder: Path | None, *, lazy: bool = False, processes: int = 0) -> None:
    from dicomnode import AbstractInput, AbstractPipeline, NoOutput

    class Everything(AbstractInput):
        def validate(self) -> bool:
            return False  # never complete: the benchmark measures receiving only

    class IngestNode(AbstractPipeline):
        ae_title = "INGEST"
        ip = "127.0.0.1"
        input = {"images": Everything}
        data_directory = str(folder) if folder is not None else None
        lazy_storage = lazy
        receiving_processes = processes
        maintenance_thread = False
        log_level = "WARNING"

        def process(self, input_container: object) -> NoOutput:
            return NoOutput()

    IngestNode.port = port
    node = IngestNode()
    node.open(blocking=False)
    if folder is not None and hasattr(node, "wait_for_restore"):  # a node that restores behind the listen
        threading.Thread(target=_report_restore, args=(node,), daemon=True).start()
    _wait_for_signal()
    node.close()


def _report_restore(node: Any) -> None:
    """Print when the restore behind the listen ended: ``RESTORED <seconds> <instances>`` (benchmarks/restart.py)."""
    node.wait_for_restore()
    restore = node._restore
    seconds, count = (restore.seconds, restore.restored) if restore is not None else (0.0, 0)
    print(f"RESTORED {seconds:.3f} {count}", flush=True)


def _wait_for_signal() -> None:
    stop = {"now": False}

    def handle(*_args: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    while not stop["now"]:
        time.sleep(0.2)


def serve(kind: str, port: int, folder: Path) -> None:
    """Run receiver ``kind`` on ``port`` until SIGTERM."""
    if kind == "a":
        _serve_pynetdicom(port)
    elif kind in "bB":
        _serve_node(port, None)
    elif kind in "cC":
        _serve_node(port, folder)
    elif kind == "l":
        _serve_node(port, folder, lazy=True)
    elif kind == "p":
        _serve_node(port, folder, lazy=True, processes=2)
    elif kind == "q":
        _serve_node(port, folder, lazy=True, processes=4)
    else:
        raise SystemExit(f"unknown receiver {kind!r}")


# --- the driver ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no receiver on port {port}")


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


class Receiver:
    """One receiver process, started once and sent to in every round."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.folder = work / f"receiver-{kind}"
        self.folder.mkdir(parents=True, exist_ok=True)
        if kind in "df":
            command = [STORESCP, *(["--fork"] if kind == "f" else []), "--aetitle", "STORESCP",
                       "--output-directory", str(self.folder), "--accept-all", str(self.port)]
        elif kind == "e":
            command = [ORTHANC, str(_orthanc_configuration(self.folder, self.port))]
        else:
            command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, str(self.port),
                       str(self.folder)]
        env = dcmtk_env()
        if kind in "BC":
            if not BASELINE:
                raise SystemExit(f"receiver {kind} needs --baseline SOURCES")
            env["PYTHONPATH"] = os.pathsep.join(BASELINE)
        self.log = open(work / f"receiver-{kind}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def _orthanc_configuration(folder: Path, port: int) -> Path:
    """An Orthanc storing to ``folder``: DICOM on ``port``, no HTTP, no plugins, every store accepted."""
    import json

    settings = {
        "Name": f"ingest-{port}", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"), "Plugins": [], "HttpServerEnabled": False,
        "DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": port, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True, "DicomCheckModalityHost": False, "UnknownSopClassAccepted": False,
        # every round stores the same instances again, as a fresh receiver would
        "OverwriteInstances": True, "SaveJobs": False, "StorageCompression": False,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(settings, indent=2))
    return path


def _storescu(port: int, files: list[Path]) -> list[str]:
    """storescu's command line for a group: its files, or every file under its one folder (``+sd +r``)."""
    command = [STORESCU, "-aet", "BENCH", "-aec", "ANY"]
    if len(files) == 1 and files[0].is_dir():  # tens of thousands of paths would not fit on a command line
        return [*command, "+sd", "+r", "127.0.0.1", str(port), str(files[0])]
    return [*command, "127.0.0.1", str(port), *map(str, files)]


def send(port: int, groups: list[list[Path]]) -> float:
    """Send each group (files, or one folder) with its own storescu, all at once; the wall time until all are done."""
    start = time.perf_counter()
    processes = [subprocess.Popen(_storescu(port, files), env=dcmtk_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for files in groups]
    outputs = [process.communicate()[0] for process in processes]
    elapsed = time.perf_counter() - start
    for process, output in zip(processes, outputs):
        if process.returncode != 0 or b"E:" in output:
            raise RuntimeError(f"storescu failed on port {port}: {output.decode(errors='replace')[-2000:]}")
    return elapsed


def study(slices: int) -> list[Path]:
    """The benchmark study on disk (made once, then reused)."""
    from dicomnode.dicom.synthetic import synthetic_series, write_series

    folder = DATA / f"ct-{slices}x512"
    files = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
    if len(files) == slices:
        return files
    shutil.rmtree(folder, ignore_errors=True)
    write_series(synthetic_series(slices=slices, rows=512, columns=512, patient_id="BENCH"), folder)
    return sorted(folder.glob("*.dcm"))


#: the small-image study: 64x64 CT slices, this many per patient, the patients spread over 4 folders
SMALL_SLICES = 100
SMALL_PARTS = 4


def small_study(count: int) -> Path:
    """``count`` 64x64 CT instances (``count // 100`` patients of 100 slices), made once, then reused.

    The patients are spread over ``part-0`` … ``part-3`` (a quarter each), so that
    one storescu can send the folder and four can each send a part.
    """
    from dicomnode.dicom.synthetic import synthetic_series, write_series

    folder = DATA / f"small-{count}x64"
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.dcm")) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    patients = max(1, count // SMALL_SLICES)
    for number in range(patients):
        slices = count // patients + (1 if number < count % patients else 0)
        write_series(synthetic_series(slices=slices, rows=64, columns=64, patient_id=f"SMALL{number:05d}",
                                      patient_name=f"Small^{number}"),
                     folder / f"part-{number % SMALL_PARTS}")
    return folder


def groups_of(study: list[Path] | Path, clients: int) -> list[list[Path]]:
    """What each of ``clients`` storescu processes sends: a share of the files, or one part folder each."""
    if isinstance(study, Path):
        parts = sorted(study.glob("part-*"))
        if clients == 1:
            return [[study]]
        if clients != len(parts):
            raise ValueError(f"a small study is sent by 1 or {len(parts)} clients, not {clients}")
        return [[part] for part in parts]
    return [study[i::clients] for i in range(clients)]


def _cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """User + system CPU time of a receiver process so far (less disturbed by other load than wall time)."""
    import psutil

    parent = psutil.Process(process.pid)
    total = 0.0
    for each in (parent, *parent.children(recursive=True)):  # a node's receiving processes too
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        # children_*: the ended children it waited for (storescp --fork's process per association)
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _senders_cpu() -> float:
    """User + system CPU of this process's ended children: the storescu clients (receivers end only at stop)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: receiver and client count ("b4") -> CPU seconds of its process per counted send of the latest
#: measure() of them (measure() starts each of its keys anew)
CPU: dict[str, list[float]] = {}
#: the same, for the storescu clients' CPU
SENDERS: dict[str, list[float]] = {}


def measure(files: list[Path] | Path, runs: int, clients: int, kinds: list[str]) -> dict[str, list[float]]:
    """Wall seconds of each receiver per counted round; ``files`` is a list, or a small study's folder."""
    place = FOLDER or WORK
    place.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ingest-", dir=place))
    groups = groups_of(files, clients)
    receivers = {}
    try:
        for kind in kinds:
            receivers[kind] = Receiver(kind, work)
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for kind in kinds:  # a scenario measured before with the same key must not count here
            CPU[f"{kind}{clients}"], SENDERS[f"{kind}{clients}"] = [], []
        for round_number in range(runs + 1):
            for kind in kinds:
                try:
                    cpu_before, senders_before = _cpu_seconds(receivers[kind].process), _senders_cpu()
                    elapsed = send(receivers[kind].port, groups)
                    cpu = _cpu_seconds(receivers[kind].process) - cpu_before
                    senders = _senders_cpu() - senders_before
                except RuntimeError as error:  # say which receiver, and what it logged
                    receivers[kind].log.flush()
                    logged = (work / f"receiver-{kind}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"({kind}) {RECEIVERS[kind]}, round {round_number}, {clients} "
                                       f"client(s): {error}\n--- its log ---\n{logged}") from error
                if round_number > 0:  # round 0 warms caches, imports and connections
                    times[kind].append(elapsed)
                    CPU[f"{kind}{clients}"].append(cpu)
                    SENDERS[f"{kind}{clients}"].append(senders)
        return times
    finally:
        for receiver in receivers.values():
            receiver.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(title: str, times: dict[str, list[float]], megabytes: float, images: int, clients: int = 1) -> str:
    lines = [f"{title}\n",
             "| receiver | median (s) | min–max (s) | images/s | MB/s | throughput vs (a), medians | "
             "vs (a), fastest runs | receiver CPU (s), median | storescu clients' CPU (s), median |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = statistics.median(times["a"]) if "a" in times else None
    fastest = min(times["a"]) if "a" in times else None
    for kind, values in times.items():
        median = statistics.median(values)
        ratio = f"{base / median:.2f}" if base else "–"
        # on a shared machine the fastest run is the one least disturbed by other load
        best = f"{fastest / min(values):.2f}" if fastest else "–"
        cpu, senders = CPU.get(f"{kind}{clients}"), SENDERS.get(f"{kind}{clients}")
        cpu_text = f"{statistics.median(cpu):.3f}" if cpu else "–"
        senders_text = f"{statistics.median(senders):.3f}" if senders else "–"
        lines.append(f"| ({kind}) {RECEIVERS[kind]} | {median:.3f} | {min(values):.3f}–{max(values):.3f} | "
                     f"{images / median:.0f} | {megabytes / median:.0f} | {ratio} | {best} | {cpu_text} | "
                     f"{senders_text} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted rounds after the warm-up (default 5)")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT (default 300)")
    parser.add_argument("--quick", action="store_true", help="40 slices, 3 rounds")
    parser.add_argument("--small", type=int, metavar="COUNT",
                        help="send COUNT 64x64 CT instances (COUNT/100 patients) instead of the CT")
    parser.add_argument("--clients", default="1,4", help="client counts to run (default 1,4)")
    parser.add_argument("--receivers", default="abcd", help="which receivers (default abcd; e: Orthanc)")
    parser.add_argument("--baseline", metavar="SOURCES",
                        help="receivers B and C import dicomnode from these folders (os.pathsep-separated, "
                             "e.g. another checkout's core/src): before and after side by side")
    parser.add_argument("--folder", type=Path, metavar="PATH",
                        help="where the receivers write (default benchmarks/.work); e.g. a tmpfs such as /dev/shm "
                             "to measure the receive path without the disk")
    parser.add_argument("--cpus", type=int, metavar="N",
                        help="run everything (receivers, their processes, storescu) on the first N CPUs only: "
                             "how ingest scales with cores, on one machine")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        BASELINE[:] = args.baseline.split(os.pathsep)
    global FOLDER
    FOLDER = args.folder
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), Path(args.serve[2]))
        return 0
    for program in (STORESCU, STORESCP):
        if not os.access(program, os.X_OK):
            raise SystemExit(f"{program} is missing: apt-get install dcmtk")
    slices, runs = (40, 3) if args.quick else (args.slices, args.runs)
    kinds = list(args.receivers)
    cpus = sorted(os.sched_getaffinity(0))
    if args.cpus:
        if not 1 <= args.cpus <= len(cpus):
            raise SystemExit(f"--cpus must be 1 to {len(cpus)} here, got {args.cpus}")
        cpus = cpus[:args.cpus]
        os.sched_setaffinity(0, cpus)  # every process started from here inherits it
    if args.small:
        sent: list[Path] | Path = small_study(args.small)
        paths = list(sent.rglob("*.dcm"))
        what = f"{len(paths)} 64x64 CT instances of {max(1, args.small // SMALL_SLICES)} patients"
    else:
        sent = paths = study(slices)
        what = f"a {slices}-slice 512x512 CT"
    megabytes = sum(path.stat().st_size for path in paths) / 1e6
    print(f"Ingest of {what} ({megabytes:.0f} MB), {runs} interleaved rounds after a "
          f"warm-up, medians; Python {sys.version.split()[0]}, {len(cpus)} of {os.cpu_count()} CPUs\n")
    for clients in (int(text) for text in args.clients.split(",")):
        times = measure(sent, runs, clients, kinds)
        title = "One storescu association" if clients == 1 else f"{clients} concurrent storescu clients"
        print(report(title, times, megabytes, len(paths), clients))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
