"""Send: a 300-slice 512x512 CT to DCMTK storescp from four senders, side by side.

Senders, one association per run, all to the same ``storescp --ignore``
(receives every byte, writes nothing, ``TCP_NODELAY=1``):

(a) ``dicomnode.net.send_datasets`` with the file paths;
(b) the same with our TCP_NODELAY switched off (the socket as pynetdicom leaves it);
(c) DCMTK ``storescu`` (``TCP_NODELAY=1``);
(d) a bare pynetdicom loop: ``AE.associate`` + ``send_c_store(path)`` per file, defaults;
(e) ``DicomOutput`` (dicom-output plugin) with the file paths: what a pipeline's output does;
(f) ``DicomOutput`` with the datasets already in memory (read before timing), as ``process`` returns them.

The senders run interleaved a b c d a b c d … after a warm-up round; the
figures are medians (with min–max) of the counted rounds, and ratios are
against storescu.

    python benchmarks/send.py --runs 5
    python benchmarks/send.py --quick          # 40 slices, 3 runs: a smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest import free_port, study, wait_for_port

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
WORK = HERE / ".work"
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
SENDERS = {
    "a": "dicomnode send_datasets",
    "b": "dicomnode send_datasets, Nagle left on",
    "c": "DCMTK storescu",
    "d": "bare pynetdicom send_c_store loop",
    "e": "DicomOutput, files",
    "f": "DicomOutput, datasets in memory",
}


# --- the senders --------------------------------------------------------------------------------


def _send_dicomnode(port: int, files: list[Path], nodelay: bool) -> None:
    from dicomnode.net import Address, send_datasets, transport

    original = transport.set_tcp_nodelay
    if not nodelay:  # the benchmark's only switch: our EVT_CONN_OPEN handler then does nothing
        transport.set_tcp_nodelay = lambda sock: None
    try:
        result = send_datasets(Address("127.0.0.1", port, "STORESCP"), files, timeout=60)
    finally:
        transport.set_tcp_nodelay = original
    if not result.ok:
        raise RuntimeError(f"send_datasets failed: {result}")


def _send_storescu(port: int, files: list[Path]) -> None:
    command = [STORESCU, "-aec", "STORESCP", "127.0.0.1", str(port), *map(str, files)]
    process = subprocess.run(command, env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True,
                             text=True, timeout=600)
    if process.returncode != 0:
        raise RuntimeError(f"storescu failed: {process.stderr[-2000:]}")


#: responses the bare pynetdicom loop lost (its reactor took them: see transport.parked_reactor)
LOST_RESPONSES: list[str] = []


def _send_pynetdicom(port: int, files: list[Path]) -> None:
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title="BARE")
    ae.dimse_timeout = 10  # a lost response costs this long; then the file is sent again
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    remaining = list(files)
    while remaining:
        assoc = ae.associate("127.0.0.1", port, ae_title="STORESCP")
        if not assoc.is_established:
            raise RuntimeError("pynetdicom could not associate")
        try:
            while remaining:
                status = assoc.send_c_store(remaining[0])
                if not status:
                    LOST_RESPONSES.append(remaining[0].name)
                    break
                if status.Status != 0:
                    raise RuntimeError(f"pynetdicom C-STORE of {remaining[0]} failed: {status}")
                remaining.pop(0)
        finally:
            if assoc.is_established:
                assoc.release()


def _send_dicom_output(port: int, items: list[Any]) -> None:
    from dicomnode.net import Address
    from dicomnode_dicom_output import DicomOutput

    output = DicomOutput([(Address("127.0.0.1", port, "STORESCP"), items)], attempts=1, timeout=60)
    if not output.send():
        raise RuntimeError(f"DicomOutput failed: {output.report}")


def _in_memory(files: list[Path], kinds: list[str]) -> list[Any]:
    """The datasets of (f), read once before any timing."""
    if "f" not in kinds:
        return []
    from pydicom import dcmread

    return [dcmread(path) for path in files]


def _timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(files: list[Path], runs: int, kinds: list[str]) -> dict[str, list[float]]:
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="send-", dir=WORK))
    port = free_port()
    log = open(work / "storescp.log", "wb")  # noqa: SIM115 - closed below
    scp = subprocess.Popen([STORESCP, "--aetitle", "STORESCP", "--accept-all", "--ignore", str(port)],
                           env={**os.environ, "TCP_NODELAY": "1"}, stdout=log, stderr=subprocess.STDOUT)
    senders: dict[str, Callable[[], None]] = {
        "a": lambda: _send_dicomnode(port, files, nodelay=True),
        "b": lambda: _send_dicomnode(port, files, nodelay=False),
        "c": lambda: _send_storescu(port, files),
        "d": lambda: _send_pynetdicom(port, files),
        "e": lambda: _send_dicom_output(port, list(files)),
        "f": lambda: _send_dicom_output(port, datasets),
    }
    datasets = _in_memory(files, kinds)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        wait_for_port(port)
        for round_number in range(runs + 1):  # round 0 warms up caches and imports
            for kind in kinds:
                elapsed = _timed(senders[kind])
                if round_number:
                    times[kind].append(elapsed)
                print(f"  round {round_number} {kind}: {elapsed:.2f} s", file=sys.stderr)
    finally:
        if scp.poll() is None:
            scp.terminate()
            scp.wait(timeout=10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return times


def report(times: dict[str, list[float]], slices: int, size: int) -> str:
    reference = statistics.median(times["c"]) if "c" in times else None
    lines = ["| sender | median (s) | min–max (s) | instances/s | MB/s | time vs storescu |",
             "|---|---|---|---|---|---|"]
    for kind, values in times.items():
        median = statistics.median(values)
        ratio = f"{median / reference:.2f}" if reference else "–"
        lines.append(f"| ({kind}) {SENDERS[kind]} | {median:.2f} | {min(values):.2f}–{max(values):.2f} | "
                     f"{slices / median:.0f} | {size / median / 1e6:.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted rounds (after one warm-up)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="40 slices, 3 runs")
    parser.add_argument("--senders", default="abcdef", help="which senders, e.g. 'ac'")
    args = parser.parse_args()
    if args.quick:
        args.slices, args.runs = 40, 3
    files = study(args.slices)
    size = sum(path.stat().st_size for path in files)
    print(f"{len(files)} files, {size / 1e6:.0f} MB; {args.runs} counted rounds after a warm-up",
          file=sys.stderr)
    times = measure(files, args.runs, list(args.senders))
    print(report(times, len(files), size))
    if LOST_RESPONSES:
        print(f"\n(d) lost {len(LOST_RESPONSES)} C-STORE response(s) to pynetdicom's reactor race; "
              "each cost its 10 s timeout and a new association")
    return 0


if __name__ == "__main__":
    sys.exit(main())
