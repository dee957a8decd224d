"""The admin endpoint: what it costs the receive path, and how fast /status answers a full node.

1. **Scraped every second.** The same node, in memory, in its own process
   twice: (off) without an admin endpoint, (on) with ``admin_port`` set —
   its metrics counting every instance — while a scraper GETs ``/metrics`` and
   ``/status`` every second, as Prometheus and an open status page would.
   DCMTK ``storescu`` sends the study ``--repeat`` times over one association
   (TCP_NODELAY=1), the two nodes interleaved off on off on … after a warm-up
   round. Target: (on) keeps at least 0.98x the throughput of (off), the
   median of the per-round ratios. The CPU time each node process spends
   per instance (psutil) is reported beside it: on a shared machine it
   shows the cost more steadily than the wall time. And the cost is
   accounted for directly: the CPU the node process spends per scrape (100
   scrapes of both paths, back to back, on the node holding the study) and
   the time the metrics add to each instance's events (in this process), as
   a share of the node's CPU per instance at its measured rate.
2. **/status of a node holding 10,000 instances**, in a node in this process,
   as 100 patients of 100 instances and as 10,000 patients of one: the time
   of a GET over loopback HTTP (client included), for ``/status`` (500
   patients listed at most, the default), ``/metrics`` and the page.
   Target: ``/status`` answers in under 100 ms (the 95th percentile of the
   requests).

    python benchmarks/admin.py --runs 7
    python benchmarks/admin.py --quick          # 60 slices, 2 rounds
    python benchmarks/admin.py --smoke          # 4 slices, 1 round, 200 held instances: the script works
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from holding import holding_node  # noqa: E402
from ingest import STORESCU, WORK, dcmtk_env, free_port, study, wait_for_port  # noqa: E402

NODES = {"off": "node in memory, no admin endpoint", "on": "the same node, admin endpoint scraped every second"}


# --- the nodes (run with --serve off|on PORT ADMIN_PORT) -------------------------------------------


def _serve(kind: str, port: int, admin_port: int) -> None:
    node = holding_node("ADMINBENCH", port=port, admin_port=admin_port if kind == "on" else None)
    node.open(blocking=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    node.close()


class Node:
    """One node process, started once and sent to in every round."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        self.port, self.admin_port = free_port(), free_port()
        self.log = open(work / f"node-{kind}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", kind,
                                         str(self.port), str(self.admin_port)], stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def wait(self) -> None:
        """Until the node listens (and its admin endpoint, when it has one)."""
        wait_for_port(self.port, timeout=60)
        if self.kind == "on":
            wait_for_port(self.admin_port, timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


class Scraper(threading.Thread):
    """GETs /metrics and /status of an admin endpoint every second until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.done = threading.Event()
        self.scrapes = 0

    def run(self) -> None:
        while not self.done.is_set():
            for path in ("/metrics", "/status"):
                with urllib.request.urlopen(self.base + path, timeout=10) as response:
                    response.read()
            self.scrapes += 1
            self.done.wait(1.0)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its threads so far (0 without psutil)."""
    try:
        import psutil
    except ImportError:
        return 0.0
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def scrape_cpu(node: Node, scrapes: int = 100) -> float:
    """CPU seconds the node process spends answering one scrape of /metrics and /status (0 without psutil)."""
    base = f"http://127.0.0.1:{node.admin_port}"
    before = _cpu_seconds(node.process.pid)
    for _ in range(scrapes):
        for path in ("/metrics", "/status"):
            with urllib.request.urlopen(base + path, timeout=10) as response:
                response.read()
    return (_cpu_seconds(node.process.pid) - before) / scrapes


def metrics_per_instance(calls: int = 50_000) -> float:
    """Seconds the metrics add to the events of one stored instance (measured in this process)."""
    from dicomnode.extension.handles import IngestResult, Source

    source = Source("BENCH", "127.0.0.1:1", "c-store", 1)
    result = IngestResult(0, "", "P1", "2.25.1", stored=True, series_instance_uid="2.25.2", modality="CT")
    with holding_node("COUNTING", admin_port=0) as node:
        metrics = node.operations.metrics
        if metrics is None:
            raise RuntimeError("the metrics need prometheus-client")
        timings = {}
        for label in ("with", "without", "with again"):
            if label == "without":
                node.events.remove(metrics)
            elif label == "with again":
                node.events.add(metrics)
            started = time.process_time()
            for _ in range(calls):
                node.events.instance(source, result, 524_288)
            timings[label] = (time.process_time() - started) / calls
    return max(0.0, (timings["with"] + timings["with again"]) / 2 - timings["without"])


def _send(port: int, files: list[Path], repeat: int) -> float:
    command = [STORESCU, "-aet", "BENCH", "-aec", "ADMINBENCH", "127.0.0.1", str(port), *map(str, files * repeat)]
    started = time.perf_counter()
    done = subprocess.run(command, env=dcmtk_env(), capture_output=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or b"E:" in done.stdout + done.stderr:
        raise RuntimeError(f"storescu failed: {(done.stdout + done.stderr).decode(errors='replace')[-2000:]}")
    return elapsed


def scraped(files: list[Path], runs: int, repeat: int, *, scrapes: int = 100,
            calls: int = 50_000) -> dict[str, object]:
    """Throughput of the node with the endpoint off, and on and scraped every second, interleaved;
    ``scrapes`` back-to-back scrapes and ``calls`` instance events account for the endpoint's cost."""
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="admin-", dir=WORK))
    nodes: dict[str, Node] = {}
    times: dict[str, list[float]] = {kind: [] for kind in NODES}
    cpu: dict[str, list[float]] = {kind: [] for kind in NODES}
    scraped_in_rounds = 0
    try:
        for kind in NODES:  # both start at once, then wait
            nodes[kind] = Node(kind, work)
        for node in nodes.values():
            node.wait()
        for round_number in range(runs + 1):
            for kind in NODES:
                scraper = Scraper(nodes[kind].admin_port) if kind == "on" else None
                if scraper is not None:
                    scraper.start()
                before = _cpu_seconds(nodes[kind].process.pid)
                try:
                    elapsed = _send(nodes[kind].port, files, repeat)
                finally:
                    if scraper is not None:
                        scraper.done.set()
                        scraper.join()
                        scraped_in_rounds += scraper.scrapes if round_number else 0
                if round_number:
                    times[kind].append(elapsed)
                    cpu[kind].append(_cpu_seconds(nodes[kind].process.pid) - before)
        per_scrape = scrape_cpu(nodes["on"], scrapes)
    finally:
        for node in nodes.values():
            node.stop()
    ratios = [off / on for off, on in zip(times["off"], times["on"])]
    return {"times": times, "ratios": ratios, "cpu": cpu, "instances": len(files) * repeat,
            "scrapes": scraped_in_rounds, "scrape_cpu": per_scrape, "per_instance": metrics_per_instance(calls)}


def accounted_share(scrape: dict[str, object]) -> float:
    """The admin endpoint's cost as a share of the node's CPU per instance (at the off node's measured rate)."""
    times: dict[str, list[float]] = scrape["times"]  # type: ignore[assignment]
    cpu: dict[str, list[float]] = scrape["cpu"]  # type: ignore[assignment]
    instances: int = scrape["instances"]  # type: ignore[assignment]
    rate = instances / statistics.median(times["off"])
    node_cpu = statistics.median(cpu["off"]) / instances
    if not node_cpu:
        return float("nan")
    return (float(scrape["per_instance"]) + float(scrape["scrape_cpu"]) / rate) / node_cpu  # type: ignore[arg-type]


def held_status(requests: int, instances: int = 10_000) -> dict[str, dict[str, list[float]]]:
    """GET times of /status, /metrics and / of a node holding ``instances`` instances, in two shapes."""
    from dicomnode import AbstractInput
    from dicomnode.dicom.synthetic import synthetic_series

    class Many(AbstractInput):
        minimum_images = 100_000  # never complete

    results: dict[str, dict[str, list[float]]] = {}
    for patients, per_patient in ((instances // 100, 100), (instances, 1)):
        shape = f"{patients} patients x {per_patient}"
        with holding_node("HOLDING", input_class=Many, admin_port=0) as node:
            template = synthetic_series(slices=per_patient, rows=8, columns=8)
            for number in range(patients):
                for dataset in template:
                    dataset.PatientID = f"P{number:05d}"
                    dataset.SOPInstanceUID = f"2.25.{number + 1}{dataset.InstanceNumber:04d}"
                    result = node.ingest(dataset, calling_aet="BENCH")
                    if not result.ok:
                        raise RuntimeError(f"ingest refused an instance: {result.comment}")
            base = f"http://127.0.0.1:{node.operations.admin_port}"
            status = json.loads(urllib.request.urlopen(base + "/status", timeout=30).read())
            if status["patients"]["images"] != patients * per_patient:
                raise RuntimeError(f"the node holds {status['patients']['images']} instances, not "
                                   f"{patients * per_patient}")
            results[shape] = {}
            for path in ("/status", "/metrics", "/"):
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    with urllib.request.urlopen(base + path, timeout=30) as response:
                        response.read()
                    times.append(time.perf_counter() - started)
                results[shape][path] = times
    return results


def _held(status: dict[str, dict[str, list[float]]]) -> int:
    """How many instances the shapes hold (``"100 patients x 100"`` -> 10,000)."""
    patients, _, per_patient = next(iter(status)).partition(" patients x ")
    return int(patients) * int(per_patient)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(scrape: dict[str, object], status: dict[str, dict[str, list[float]]], megabytes: float,
           slices: int, repeat: int) -> str:
    times: dict[str, list[float]] = scrape["times"]  # type: ignore[assignment]
    ratios: list[float] = scrape["ratios"]  # type: ignore[assignment]
    instances: int = scrape["instances"]  # type: ignore[assignment]
    cpu: dict[str, list[float]] = scrape["cpu"]  # type: ignore[assignment]
    lines = [f"{slices}-slice 512x512 CT ({megabytes:.0f} MB) sent {repeat}x over one storescu association "
             f"({instances} C-STOREs per round); {scrape['scrapes']} scrapes of /metrics and /status in the "
             "counted rounds:", "",
             "| node | median (s) | min–max (s) | images/s | throughput vs (off), round by round | "
             "node CPU per 1,000 instances (s) |",
             "|---|---|---|---|---|---|"]
    for kind, values in times.items():
        cell = "1.00" if kind == "off" else (f"{statistics.median(ratios):.3f} "
                                             f"({min(ratios):.3f}–{max(ratios):.3f})")
        per_thousand = statistics.median(cpu[kind]) / instances * 1000 if any(cpu[kind]) else float("nan")
        lines.append(f"| ({kind}) {NODES[kind]} | {statistics.median(values):.3f} | {min(values):.3f}–"
                     f"{max(values):.3f} | {instances / statistics.median(values):.0f} | {cell} | "
                     f"{per_thousand:.3f} |")
    held = _held(status)
    lines += ["", f"Accounted for: a scrape of `/metrics` and `/status` costs the node "
              f"{float(scrape['scrape_cpu']) * 1e3:.2f} ms of CPU (back to back, psutil); the metrics add "  # type: ignore[arg-type]
              f"{float(scrape['per_instance']) * 1e6:.1f} µs to each instance's events; at the (off) node's "  # type: ignore[arg-type]
              f"rate that is {accounted_share(scrape) * 100:.2f} % of its CPU per instance."]
    lines += ["", f"GET over loopback HTTP, a node holding {held:,} instances (ms; client included):", "",
              "| held | path | median | 95th percentile | max |", "|---|---|---|---|---|"]
    for shape, paths in status.items():
        for path, values in paths.items():
            lines.append(f"| {shape} | `{path}` | {statistics.median(values) * 1e3:.1f} | "
                         f"{percentile(values, 0.95) * 1e3:.1f} | {max(values) * 1e3:.1f} |")
    return "\n".join(lines)


def status_p95(status: dict[str, dict[str, list[float]]], shape: str) -> float:
    """The 95th percentile of /status for one shape, in seconds."""
    return percentile(status[shape]["/status"], 0.95)


def shapes(status: dict[str, dict[str, list[float]]]) -> tuple[str, str]:
    """The two shapes measured: patients of 100 instances (studies), and patients of one instance each."""
    first, second = list(status)
    return first, second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted rounds after the warm-up (default 5)")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT (default 300)")
    parser.add_argument("--repeat", type=int, default=4, help="times the study is sent per round (default 4)")
    parser.add_argument("--requests", type=int, default=40, help="GETs per path of the /status part (default 40)")
    parser.add_argument("--quick", action="store_true", help="60 slices, 2 rounds")
    parser.add_argument("--smoke", action="store_true", help="4 slices, 1 round, 200 held instances")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "PORT", "ADMIN_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
        return 0
    if not os.access(STORESCU, os.X_OK):
        raise SystemExit(f"{STORESCU} is missing: apt-get install dcmtk")
    slices, runs = (60, 2) if args.quick else (4, 1) if args.smoke else (args.slices, args.runs)
    files = study(slices)
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    # --smoke checks that the script works: a few scrapes and events account for the cost
    light = {"scrapes": 5, "calls": 2_000} if args.smoke else {}
    scrape = scraped(files, runs, args.repeat, **light)
    status = held_status(3, 200) if args.smoke else held_status(args.requests)
    print(report(scrape, status, megabytes, slices, args.repeat))
    ratio = statistics.median(scrape["ratios"])  # type: ignore[arg-type]
    studies, singles = shapes(status)
    print(f"\nscraped every second: {ratio:.3f}x the throughput (target >= 0.98); /status of {_held(status):,} "
          f"held instances: {status_p95(status, studies) * 1e3:.1f} ms at the 95th percentile as {studies}, "
          f"{status_p95(status, singles) * 1e3:.1f} ms as {singles} (target < 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
