"""Idle polling: the CPU an open but idle accepted association costs, per DUL sleep.

A pynetdicom server in its own process sets each accepted association's
DUL sleep to the delay under test, or (delay ``wait``, 0 here) lets them wait for
data as the node does (``dicomnode.net.waking``); this process opens one
association, sends nothing for ``--seconds`` and reads the server process's
CPU time (psutil) over that window. The server's CPU time over the same
window with no association open is the floor. Delays are interleaved
round by round; medians are reported.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time

from ingest import free_port

VERIFICATION = "1.2.840.10008.1.1"


def serve(port: int, delay: float) -> None:
    """Run a Verification SCP whose accepted associations poll every ``delay`` seconds."""
    from pynetdicom import AE, evt

    from dicomnode.net.waking import wake_on_data, wake_on_message

    def waiting(event: evt.Event) -> None:
        wake_on_data(event.assoc)
        wake_on_message(event.assoc)

    def polling(event: evt.Event) -> None:
        event.assoc.dul._run_loop_delay = delay

    ae = AE(ae_title="IDLE")
    ae.add_supported_context(VERIFICATION)
    handler = waiting if delay <= 0 else polling
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_CONN_OPEN, handler)])


def _cpu(process: object) -> float:
    times = process.cpu_times()  # type: ignore[attr-defined]
    return float(times.user + times.system)


def measure(delay: float, seconds: float) -> tuple[float, float]:
    """CPU seconds of the server over ``seconds``: (no association, one idle association)."""
    import psutil
    from pynetdicom import AE

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), repr(delay)])
    try:
        process = psutil.Process(server.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        before = _cpu(process)
        time.sleep(seconds)
        floor = _cpu(process) - before
        ae = AE(ae_title="CLIENT")
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate("127.0.0.1", port, ae_title="IDLE")
        time.sleep(0.5)
        before = _cpu(process)
        time.sleep(seconds)
        idle = _cpu(process) - before
        assoc.release()
        return floor, idle
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0.001,0.0002,0.00005,wait",
                        help="comma-separated DUL sleeps in seconds, or wait (the node's waiting)")
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=2.0, help="idle window (default 2)")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), float(args.serve[1]))
        return 0
    delays = [0.0 if value == "wait" else float(value) for value in args.delays.split(",")]
    samples: dict[float, list[tuple[float, float]]] = {delay: [] for delay in delays}
    for _ in range(args.runs):
        for delay in delays:
            samples[delay].append(measure(delay, args.seconds))
    print(f"CPU of the server over {args.seconds:g} s, median of {args.runs} round(s), % of one core\n")
    print("| DUL sleep | no association | one idle association |")
    print("|---|---|---|")
    for delay in delays:
        floor = statistics.median(s[0] for s in samples[delay]) / args.seconds * 100
        idle = statistics.median(s[1] for s in samples[delay]) / args.seconds * 100
        label = "waits for data (the node)" if delay <= 0 else f"{delay * 1e6:g} µs"
        print(f"| {label} | {floor:.1f} % | {idle:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
