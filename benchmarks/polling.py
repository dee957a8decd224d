"""How much of a pynetdicom transfer is its reactors' polling: 1 ms sleeps as shipped vs shortened.

pynetdicom runs two polling loops per association: the DUL reactor
(``DULServiceProvider.run_reactor``) sleeps ``_run_loop_delay`` (1 ms)
whenever it finds nothing to do, and the acceptor's association reactor
(``Association._run_reactor``) sleeps 1 ms before each look for a complete
DIMSE message. A C-STORE exchange waits on both, once per instance. This
script measures what those sleeps cost by running the same transfers with
pynetdicom as shipped and with both delays cut to ``--delay`` (default
50 µs), interleaved A B A B after a warm-up round:

- ingest: DCMTK ``storescu`` (``TCP_NODELAY=1``) into a bare pynetdicom SCP,
  and into a dicomnode node in memory (each in its own process);
- send: dicomnode ``send_datasets`` of the same files to DCMTK ``storescp``
  (which since this measurement shortens the DUL's sleep itself while it
  sends; "shipped" here restores pynetdicom's 1 ms).

This is a measurement, not a setting dicomnode makes: shorter sleeps spin a
CPU while an association is open.

    python benchmarks/polling.py --runs 5
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

import ingest  # noqa: E402

WORK = HERE / ".work"


def shorten_polling(delay: float) -> None:
    """Make both of pynetdicom's reactors sleep ``delay`` seconds instead of 1 ms (this process only)."""
    import types

    from pynetdicom import association, dul

    real_sleep = time.sleep
    # the association reactor calls time.sleep(0.001) by literal: scale it through a stand-in module
    association.time = types.SimpleNamespace(**{  # type: ignore[attr-defined]
        name: getattr(time, name) for name in dir(time) if not name.startswith("__")})
    association.time.sleep = lambda seconds: real_sleep(delay if seconds == 0.001 else seconds)
    original_init = dul.DULServiceProvider.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._run_loop_delay = delay

    dul.DULServiceProvider.__init__ = init  # type: ignore[method-assign]
    from dicomnode.dicom import transport

    # the node and send_datasets set their own sleep on the associations they use
    transport.POLL_DELAY = transport.ACCEPTED_POLL_DELAY = delay


def serve(kind: str, port: int, folder: Path, delay: float | None) -> None:
    """Run receiver ``kind`` (``a`` bare SCP, ``b`` node in memory) with shortened polling if ``delay``."""
    if delay is not None:
        shorten_polling(delay)
    ingest.serve(kind, port, folder)


class Receiver(ingest.Receiver):
    """An ingest receiver whose process polls as shipped or with ``delay``."""

    def __init__(self, kind: str, work: Path, delay: float | None) -> None:
        self.kind = kind
        self.port = ingest.free_port()
        self.folder = work / f"receiver-{kind}-{'fast' if delay else 'shipped'}"
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, str(self.port), str(self.folder)]
        if delay is not None:
            command += ["--delay", str(delay)]
        self.log = open(self.folder.with_suffix(".log"), "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        ingest.wait_for_port(self.port)


def _send_child(port: int, files: list[Path], delay: float | None) -> float:
    """send_datasets in a fresh process (so the patch applies to it alone); its wall time."""
    command = [sys.executable, str(Path(__file__).resolve()), "--send", str(port), *map(str, files)]
    if delay is not None:
        command += ["--delay", str(delay)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _send(port: int, files: list[Path]) -> None:
    from dicomnode.dicom.dimse import Address, send_datasets

    send_datasets(Address("127.0.0.1", port, "STORESCP"), files[:2], timeout=60)  # imports, first association
    started = time.perf_counter()
    result = send_datasets(Address("127.0.0.1", port, "STORESCP"), files, timeout=60)
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"send_datasets failed: {result}")
    print(f"{elapsed:.6f}")


def measure(slices: int, runs: int, delay: float) -> dict[str, list[float]]:
    """Every transfer, shipped and shortened, ``runs`` rounds after a warm-up."""
    files = ingest.study(slices)
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="polling-", dir=WORK))
    receivers = {}
    log = open(work / "storescp.log", "wb")  # noqa: SIM115 - closed below
    scp_port = ingest.free_port()
    scp = subprocess.Popen([ingest.STORESCP, "--aetitle", "STORESCP", "--accept-all", "--ignore", str(scp_port)],
                           env=ingest.dcmtk_env(), stdout=log, stderr=subprocess.STDOUT)
    times: dict[str, list[float]] = {}
    try:
        for kind in ("a", "b"):
            for label, value in (("shipped", None), ("shortened", delay)):
                receivers[f"ingest ({kind}) {ingest.RECEIVERS[kind]}, {label}"] = Receiver(kind, work, value)
        ingest.wait_for_port(scp_port)
        times = {name: [] for name in receivers}
        times.update({"send_datasets to storescp, shipped": [], "send_datasets to storescp, shortened": []})
        for round_number in range(runs + 1):
            for name, receiver in receivers.items():
                elapsed = ingest.send(receiver.port, [files])
                if round_number:
                    times[name].append(elapsed)
            for label, value in (("shipped", None), ("shortened", delay)):
                elapsed = _send_child(scp_port, files, value)
                if round_number:
                    times[f"send_datasets to storescp, {label}"].append(elapsed)
            print(f"  round {round_number} done", file=sys.stderr)
    finally:
        for receiver in receivers.values():
            receiver.stop()
        if scp.poll() is None:
            os.kill(scp.pid, signal.SIGTERM)
            scp.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return times


def report(times: dict[str, list[float]], delay: float) -> str:
    """A Markdown table: each transfer as shipped and shortened, and the time the sleeps cost."""
    lines = ["| transfer | median (s) | min–max (s) | shipped / shortened |", "|---|---|---|---|"]
    for name, values in times.items():
        ratio = "–"
        if name.endswith("shortened"):
            shipped = times[name.replace("shortened", "shipped")]
            ratio = f"{statistics.median(a / b for a, b in zip(shipped, values)):.2f}"
        lines.append(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f}–{max(values):.3f} | {ratio} |")
    return f"Polling sleeps of 1 ms (shipped) vs {delay * 1e6:.0f} µs (shortened):\n\n" + "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted rounds after the warm-up (default 5)")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT (default 300)")
    parser.add_argument("--delay", type=float, help="the shortened sleep in seconds (default 0.00005)")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--send", nargs="+", metavar="PORT FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), Path(args.serve[2]), args.delay)
        return 0
    if args.send:
        from dicomnode.dicom import transport

        # send_datasets shortens the DUL's sleep itself; "shipped" puts pynetdicom's 1 ms back
        transport.POLL_DELAY = 0.001 if args.delay is None else args.delay
        if args.delay is not None:
            shorten_polling(args.delay)
        _send(int(args.send[0]), [Path(name) for name in args.send[1:]])
        return 0
    delay = args.delay if args.delay is not None else 0.00005
    print(report(measure(args.slices, args.runs, delay), delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
