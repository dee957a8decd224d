"""Idle polling: the CPU an open but idle accepted association costs, per DUL sleep, and in a node.

A pynetdicom server in its own process sets each accepted association's
DUL sleep to the delay under test; ``node`` is a whole dicomnode node
instead, whose associations wait for data (``dicomnode.net.adapter``), and
``baseline`` the same node imported from ``--baseline`` sources (another
checkout's ``core/src``: before and after side by side). This process opens
one association, sends nothing for ``--seconds`` and reads the server
process's CPU time (psutil) over that window. The server's CPU time over
the same window with no association open is the floor. Contenders are
interleaved round by round; medians are reported.

    python benchmarks/idle_polling.py --delays 0.001,node,baseline --baseline ../before/core/src
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

from ingest import free_port

VERIFICATION = "1.2.840.10008.1.1"


def serve(port: int, delay: float) -> None:
    """Run a Verification SCP whose accepted associations poll every ``delay`` seconds; 0: a dicomnode node."""
    from pynetdicom import AE, evt

    if delay <= 0:
        _serve_node(port)
        return

    def polling(event: evt.Event) -> None:
        event.assoc.dul._run_loop_delay = delay

    ae = AE(ae_title="IDLE")
    ae.add_supported_context(VERIFICATION)
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_CONN_OPEN, polling)])


def _serve_node(port: int) -> None:
    from holding import holding_node

    holding_node("IDLE", port=port).open()


def _cpu(process: object) -> float:
    times = process.cpu_times()  # type: ignore[attr-defined]
    return float(times.user + times.system)


def measure(delay: float, seconds: float, baseline: str | None = None) -> tuple[float, float]:
    """CPU seconds of the server over ``seconds``: (no association, one idle association)."""
    import psutil
    from pynetdicom import AE

    port = free_port()
    env = {**os.environ, "PYTHONPATH": baseline} if baseline else None
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), repr(delay)], env=env)
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
    parser.add_argument("--delays", default="0.001,0.0002,0.00005,node",
                        help="comma-separated contenders: DUL sleeps in seconds (bare pynetdicom), node "
                             "(a dicomnode node), baseline (the node from --baseline)")
    parser.add_argument("--baseline", metavar="SOURCES", help="where the baseline node imports dicomnode from")
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=2.0, help="idle window (default 2)")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), float(args.serve[1]))
        return 0
    contenders = args.delays.split(",")
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(args.runs):
        for name in contenders:
            delay = 0.0 if name in ("node", "baseline", "wait") else float(name)
            samples[name].append(measure(delay, args.seconds, args.baseline if name == "baseline" else None))
    print(f"CPU of the server over {args.seconds:g} s, median of {args.runs} round(s), % of one core\n")
    print("| server | no association | one idle association |")
    print("|---|---|---|")
    for name in contenders:
        floor = statistics.median(s[0] for s in samples[name]) / args.seconds * 100
        idle = statistics.median(s[1] for s in samples[name]) / args.seconds * 100
        names = {"node": "dicomnode node", "wait": "dicomnode node", "baseline": "dicomnode node (--baseline)"}
        label = names[name] if name in names else f"pynetdicom, DUL sleep {float(name) * 1e6:g} µs"
        print(f"| {label} | {floor:.1f} % | {idle:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
