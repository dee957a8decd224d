"""Memory: the peak RSS of a node holding 4 patients x 300 CT slices, eager vs ``lazy_storage``.

Four synthetic patients, each a 300-slice 512x512 CT (630 MB together), are
sent by four concurrent DCMTK ``storescu`` clients (``TCP_NODELAY=1``), one per
patient, into a node whose input accepts everything and never validates, so
the node ends holding all 1,200 images. Contenders, each a fresh node process
per round, interleaved a b c a b c … after a warm-up round:

(a) in memory (no ``data_directory``): every dataset held decoded;
(b) ``data_directory``, eager: each instance written to disk and held in memory too;
(c) ``data_directory`` with ``lazy_storage``: each instance written to disk and
    held as a LazyDataset that reads its file only when used.

Measured: the node's peak RSS (VmHWM) over the whole reception, its RSS when
all are held, the RSS right after start, and the wall time of the send.

    python benchmarks/memory.py --runs 5
    python benchmarks/memory.py --quick            # 4 x 40 slices, 2 rounds
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
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import ingest  # noqa: E402  (storescu driving, ports)

DATA = HERE / ".data"
WORK = HERE / ".work"
PATIENTS = 4
CONTENDERS = {
    "a": "node in memory",
    "b": "node with data_directory, eager",
    "c": "node with data_directory and lazy_storage",
}


def serve(kind: str, port: int, folder: Path) -> None:
    """Run contender ``kind`` on ``port`` until SIGTERM."""
    from holding import holding_node

    data = None if kind == "a" else folder
    node = holding_node("HOLDING", port=port, data_directory=data, lazy_storage=kind == "c")
    node.open(blocking=True)  # until SIGTERM


def study(slices: int) -> list[list[Path]]:
    """The four patients on disk (made once, then reused), one list of files per patient."""
    from dicomnode.dicom.synthetic import synthetic_series, write_series

    groups = []
    for number in range(1, PATIENTS + 1):
        folder = DATA / f"patients-{PATIENTS}x{slices}x512" / f"patient-{number}"
        files = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
        if len(files) != slices:
            shutil.rmtree(folder, ignore_errors=True)
            series = synthetic_series(slices=slices, rows=512, columns=512, patient_id=f"HOLD{number:03d}",
                                      patient_name=f"Holding^{number}")
            files = sorted(write_series(series, folder))
        groups.append(files)
    return groups


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")


def one_run(kind: str, groups: list[list[Path]], work: Path) -> dict[str, float]:
    """Start contender ``kind`` afresh, send the four patients, measure, stop it."""
    port = ingest.free_port()
    folder = Path(tempfile.mkdtemp(prefix=f"memory-{kind}-", dir=work))
    log = open(folder.with_suffix(".log"), "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", kind, str(port),
                                str(folder)], stdout=log, stderr=subprocess.STDOUT)
    try:
        ingest.wait_for_port(port)
        time.sleep(0.2)  # let the start settle before taking the baseline
        started = _vm_kib(process.pid, "VmRSS")
        seconds = ingest.send(port, groups)
        holding = _vm_kib(process.pid, "VmRSS")
        peak = _vm_kib(process.pid, "VmHWM")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {"peak": peak * 1024, "holding": holding * 1024, "started": started * 1024, "seconds": seconds}


def measure(slices: int, runs: int, kinds: str = "abc", log: Any = None) -> dict[str, Any]:
    """Every contender ``runs`` times after a warm-up round, interleaved; every number of every round."""
    say = log or (lambda text: print(text, file=sys.stderr))
    groups = study(slices)
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="memory-", dir=WORK))
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    try:
        for round_number in range(runs + 1):
            for kind in kinds:
                outcome = one_run(kind, groups, work)
                say(f"  round {round_number} ({kind}): peak {outcome['peak'] / 2**20:.0f} MiB, holding "
                    f"{outcome['holding'] / 2**20:.0f} MiB, {outcome['seconds']:.2f} s")
                if round_number:  # round 0 warms the page cache
                    results[kind].append(outcome)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    study_bytes = sum(path.stat().st_size for files in groups for path in files)
    return {"slices": slices, "runs": runs, "study_bytes": study_bytes, "results": results}


def report(measured: dict[str, Any]) -> str:
    """The scenario's Markdown table."""
    results = measured["results"]
    study_mb = measured["study_bytes"] / 1e6
    eager = statistics.median(r["peak"] for r in results["a"]) if "a" in results else None
    lines = [f"{PATIENTS} patients x {measured['slices']} slices of 512x512 ({study_mb:.0f} MB), four concurrent "
             f"storescu clients; a fresh node per round; {measured['runs']} rounds after a warm-up.", "",
             "| contender | peak RSS (MiB) | min–max (MiB) | RSS holding all (MiB) | RSS at start (MiB) "
             "| peak / study size | in-memory peak / this | send (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, runs in results.items():
        peaks = [r["peak"] for r in runs]
        peak = statistics.median(peaks)
        ratio = f"{eager / peak:.1f}" if eager else "–"
        lines.append(
            f"| ({kind}) {CONTENDERS[kind]} | {peak / 2**20:.0f} | {min(peaks) / 2**20:.0f}–{max(peaks) / 2**20:.0f} "
            f"| {statistics.median(r['holding'] for r in runs) / 2**20:.0f} "
            f"| {statistics.median(r['started'] for r in runs) / 2**20:.0f} "
            f"| {peak / measured['study_bytes']:.2f} | {ratio} "
            f"| {statistics.median(r['seconds'] for r in runs):.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted rounds after the warm-up (default 5)")
    parser.add_argument("--slices", type=int, default=300, help="slices per patient (default 300)")
    parser.add_argument("--quick", action="store_true", help="40 slices per patient, 2 rounds")
    parser.add_argument("--contenders", default="abc", help="which contenders (default abc)")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), Path(args.serve[2]))
        return 0
    slices, runs = (40, 2) if args.quick else (args.slices, args.runs)
    print(report(measure(slices, runs, args.contenders)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
