"""Scale-out: the executor ``dask`` (plugin dicomnode-dask) against ``threads``, side by side in one run.

Three measurements, each with its contenders interleaved round by round
after a warm-up round (the first job on a Dask worker imports and sets up
the pipeline there):

- throughput: 8 patients whose ``process()`` spins the CPU for about 1 s
  (pure Python, calibrated on this machine) through a node with ``threads``
  and one job at a time, with ``dask`` on an embedded cluster of 1 worker and
  of 2 workers, the node handing over two jobs per worker
  (``processing_workers`` 2 and 4: one runs, the next waits on the worker). Targets: 2 workers >= 1.7x the throughput of 1 worker, and
  >= 1.7x ``threads``;
- overhead: one job on a 300-slice 512x512 CT ground by NumpyGrinder (the
  volume and the 300 datasets as read from their files), the executor's
  ``run`` timed alone for ``threads`` and ``dask`` (1 worker, loopback): the
  defaults (the inputs through shared memory, a segment kept from one job
  to the next), ``pixel_data = false`` (a pipeline that takes the volume),
  the same with a new segment for every job (``shared_memory_keep = 0``),
  and both through Dask's socket (``shared_memory = false``). Target:
  ``dask`` - ``threads`` <= 0.15 s for the volume;
- a killed worker: the 8 patients on 2 workers, once as they are and once
  with the worker of the first job SIGKILLed half-way through it. Target:
  only that job runs again (9 runs of ``process()`` for 8 jobs); the time it
  costs is reported.

Beside the throughput rounds, the same spins run in bare worker processes (a
pool of 1, a pool of 2) without a node or Dask: the machine's own ceiling
for two CPU-bound processes, which on a shared virtual machine is not 2x.

The pipelines are module-level classes of this file: the workers import them
by name (the embedded cluster's worker processes get this process's
``sys.path``).

    python benchmarks/scale_out.py --runs 3
    python benchmarks/scale_out.py --runs 1 --slices 40     # quick
    python benchmarks/scale_out.py --runs 5 --only overhead  # one of the measurements
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from dicomnode.extension.containers import InputContainer  # noqa: E402
from dicomnode.extension.executors import Job  # noqa: E402
from dicomnode.extension.grinders import ListGrinder  # noqa: E402
from dicomnode.extension.inputs import AbstractInput  # noqa: E402
from dicomnode.extension.outputs import NoOutput, PipelineOutput  # noqa: E402
from dicomnode.server.nodes import AbstractPipeline  # noqa: E402
from dicomnode_numpy import NumpyGrinder  # noqa: E402

PATIENTS = 8
#: iterations of the spin loop that take about a second here (set by calibrate(), read by the workers)
SPIN = "DICOMNODE_BENCH_SPIN"
#: folder where each run of process() leaves a line (read by the killed-worker measurement)
RECORD = "DICOMNODE_BENCH_RECORD"
#: slices the overhead measurement's volume input waits for
SLICES = "DICOMNODE_BENCH_SLICES"


def spin(iterations: int) -> int:
    total = 0
    for number in range(iterations):
        total += number & 7
    return total


def calibrate(seconds: float = 1.0) -> int:
    """Iterations of :func:`spin` that take ``seconds`` on this machine (best of three)."""
    probe = 2_000_000
    best = min(_timed(lambda: spin(probe)) for _ in range(3))
    return int(probe * seconds / best)


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


class Pair(AbstractInput):
    """Two tiny CT images: the patient's job is all CPU, no data."""

    required_values = {"Modality": "CT"}
    image_grinder = ListGrinder()

    def validate(self) -> bool:
        return self.images >= 2


class Spin(AbstractPipeline):
    """``process()`` spins the CPU for about a second and notes where it ran."""

    ae_title = "SPIN"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": Pair}
    maintenance_thread = False
    log_level = "WARNING"

    def process(self, input_container: InputContainer) -> PipelineOutput:
        folder = os.environ.get(RECORD)
        if folder:
            with open(Path(folder) / f"{input_container.patient_key}.jsonl", "a", encoding="utf-8") as stream:
                stream.write(json.dumps({"pid": os.getpid(), "time": time.time()}) + "\n")
        spin(int(os.environ[SPIN]))
        return NoOutput()


class WholeCT(AbstractInput):
    """The whole series, ground into a numpy volume."""

    required_values = {"Modality": "CT"}
    image_grinder = NumpyGrinder()

    def validate(self) -> bool:
        return self.images >= int(os.environ.get(SLICES, "300"))


class Touch(AbstractPipeline):
    """``process()`` reads one voxel of the volume: the job is the crossing, nothing else."""

    ae_title = "TOUCH"
    input = {"CT": WholeCT}
    maintenance_thread = False
    log_level = "WARNING"

    def process(self, input_container: InputContainer) -> PipelineOutput:
        float(input_container["CT"].array[0, 0, 0])
        return NoOutput()


# --- throughput and the killed worker ------------------------------------------------------------


def _tiny(patient: str) -> list[Any]:
    from dicomnode.dicom.synthetic import synthetic_series

    return synthetic_series(patient_id=patient, slices=2, rows=4, columns=4)


def batch(node: AbstractPipeline, tag: str, *, kill_first: bool = False,
          record: Path | None = None) -> tuple[float, list[str]]:
    """Run 8 patients' jobs through an open node; seconds from the first submission to the last job done."""
    patients = [f"{tag}-{number}-{uuid.uuid4().hex[:6]}" for number in range(PATIENTS)]
    images = {patient: _tiny(patient) for patient in patients}
    started = time.perf_counter()
    for patient in patients:
        for image in images[patient]:
            node.tree.add_image(patient, image, None, "BENCH")
        node.check_ready([patient])
    if kill_first:
        assert record is not None
        _kill_first_worker(record, patients)
    if not node.wait_for_jobs(600):
        raise RuntimeError(f"the jobs of {tag} did not finish in 600 s")
    return time.perf_counter() - started, patients


def _kill_first_worker(record: Path, patients: Sequence[str]) -> None:
    """SIGKILL the worker process that runs the first job to start, half-way through that job."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = [(patient, json.loads(line)) for patient in patients if (record / f"{patient}.jsonl").exists()
                 for line in (record / f"{patient}.jsonl").read_text().splitlines()]
        if lines:
            _, first = min(lines, key=lambda item: item[1]["time"])
            time.sleep(max(0.0, first["time"] + 0.5 - time.time()))
            os.kill(int(first["pid"]), signal.SIGKILL)
            return
        time.sleep(0.01)
    raise RuntimeError("no job started within 60 s")


def runs_of(record: Path, patients: Sequence[str]) -> int:
    """How many times ``process()`` started for these patients."""
    return sum(len((record / f"{patient}.jsonl").read_text().splitlines()) for patient in patients
               if (record / f"{patient}.jsonl").exists())


def throughput(runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Threads (one job at a time), dask with 1 worker, dask with 2 workers; then 2 workers with a kill."""
    record = Path(tempfile.mkdtemp(prefix="scale-out-"))
    os.environ[RECORD] = str(record)
    os.environ[SPIN] = str(calibrate())
    one_job = _timed(lambda: spin(int(os.environ[SPIN])))
    log(f"  process() spins {os.environ[SPIN]} iterations: {one_job:.2f} s here")
    nodes = {
        "threads, one job at a time": Spin(processing_workers=1),
        "dask, 1 worker": Spin(executor="dask", processing_workers=2, executor_settings={"n_workers": 1}),
        # two jobs handed over per worker, for 1 worker and for 2 alike: while a worker runs one, the next
        # waits on it, so a worker never idles while the node collects a result and hands over the next job
        "dask, 2 workers": Spin(executor="dask", processing_workers=4, executor_settings={"n_workers": 2}),
    }
    times: dict[str, list[float]] = {name: [] for name in nodes}
    ceiling: dict[str, list[float]] = {name: [] for name in BARE}
    kill: dict[str, list[float]] = {"as they are": [], "one worker killed": []}
    extra_runs: list[int] = []
    try:
        for node in nodes.values():
            node.open(blocking=False)
        two = nodes["dask, 2 workers"]
        for round_number in range(runs + 1):
            for name, node in nodes.items():
                seconds, _ = batch(node, f"r{round_number}")
                if round_number:
                    times[name].append(seconds)
                log(f"  round {round_number} {name}: {seconds:.2f} s")
            for name, processes in BARE.items():
                seconds = bare(processes, int(os.environ[SPIN]))
                if round_number:
                    ceiling[name].append(seconds)
                log(f"  round {round_number} {name}: {seconds:.2f} s")
            if round_number:
                calm, _ = batch(two, f"k{round_number}")
                killed, patients = batch(two, f"k{round_number}", kill_first=True, record=record)
                kill["as they are"].append(calm)
                kill["one worker killed"].append(killed)
                extra_runs.append(runs_of(record, patients) - PATIENTS)
                log(f"  round {round_number} kill: {calm:.2f} s as they are, {killed:.2f} s with one worker "
                    f"killed, {extra_runs[-1]} extra run(s)")
    finally:
        for node in nodes.values():
            node.close()
    return {"times": times, "ceiling": ceiling, "kill": kill, "extra_runs": extra_runs, "one_job": one_job}


#: the machine's own ceiling: the same 8 spins in bare worker processes, without a node or Dask
BARE = {"bare processes, 1 at a time": 1, "bare processes, 2 at once": 2}


def bare(processes: int, iterations: int) -> float:
    """Seconds for PATIENTS spins of ``iterations`` on a pool of ``processes`` started beforehand."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(spin, [1000] * processes)  # the processes are up
        return _timed(lambda: pool.map(spin, [iterations] * PATIENTS, chunksize=1))


# --- overhead on a CT volume ---------------------------------------------------------------------


#: the Dask contenders of the overhead measurement: the defaults (shared memory, each segment kept for the next
#: job), with pixel_data = false (a volume pipeline), with every segment new (the first job after a quiet
#: half-minute), and through Dask's socket
#: (name, the key of its figure, its executor settings)
OVERHEAD_CONTENDERS: list[tuple[str, str, dict[str, object]]] = [
    ("dask, 1 worker", "overhead", {}),
    ("dask, 1 worker, pixel_data = false", "overhead_volume", {"pixel_data": False}),
    ("dask, 1 worker, pixel_data = false, shared_memory_keep = 0", "overhead_volume_new_segment",
     {"pixel_data": False, "shared_memory_keep": 0}),
    ("dask, 1 worker, shared_memory = false", "overhead_socket", {"shared_memory": False}),
    ("dask, 1 worker, shared_memory = false, pixel_data = false", "overhead_socket_volume",
     {"shared_memory": False, "pixel_data": False}),
]


def overhead(runs: int, slices: int, log: Callable[[str], None]) -> dict[str, list[float]]:
    """executor.run(job) for threads and dask (1 worker) on the same ground 300-slice CT."""
    import ingest
    from pydicom import dcmread

    from dicomnode.server.pipeline_tree import PipelineTree

    os.environ[SLICES] = str(slices)
    files = ingest.study(slices)
    tree = PipelineTree(Touch.input)
    for path in files:
        dataset = dcmread(path)
        tree.add_image("BENCH", dataset, None, "BENCH")
    [patient] = tree.take_ready(None, None)
    container = patient.get_input_container()
    nodes = {"threads": Touch()}
    for name, _, settings in OVERHEAD_CONTENDERS:
        nodes[name] = Touch(executor="dask", executor_settings={"n_workers": 1, **settings})
    times: dict[str, list[float]] = {name: [] for name in nodes}
    try:
        for node in nodes.values():
            node.runner._start_executor()
        for round_number in range(runs + 1):
            for name, node in nodes.items():
                job = Job(f"bench-{round_number}", "BENCH", container, identity=node.identity)
                seconds = _timed(lambda node=node, job=job: node.runner.executor.run(job))  # type: ignore[misc]
                if round_number:
                    times[name].append(seconds)
                log(f"  round {round_number} {name}: {seconds:.3f} s")
    finally:
        for node in nodes.values():
            node.runner.close(30)
    return times


def tcp_floor(size: int) -> float:
    """Seconds to send ``size`` bytes over a loopback TCP socket to a thread that reads them (best of 3)."""
    import socket
    import threading

    payload = memoryview(bytearray(size))
    server = socket.create_server(("127.0.0.1", 0))

    def read() -> None:
        connection, _ = server.accept()
        buffer = memoryview(bytearray(size))
        got = 0
        while got < size:
            got += connection.recv_into(buffer[got:], min(1 << 22, size - got))
        connection.sendall(b"k")
        connection.close()

    best = float("inf")
    try:
        for _ in range(3):
            reader = threading.Thread(target=read)
            reader.start()
            with socket.create_connection(server.getsockname()) as sender:
                started = time.perf_counter()
                sender.sendall(payload)
                sender.recv(1)
                best = min(best, time.perf_counter() - started)
            reader.join()
    finally:
        server.close()
    return best


def measure(runs: int, slices: int, log: Callable[[str], None] = print, only: str = "") -> dict[str, Any]:
    """Every measurement, or ``only`` one of them ("throughput": with the killed worker, or "overhead")."""
    result: dict[str, Any] = {}
    if only in ("", "throughput"):
        result.update(throughput(runs, log))
    if only in ("", "overhead"):
        result["overhead"] = overhead(runs, slices, log)
        result["slices"] = slices
        result["tcp_floor"] = tcp_floor(slices * 512 * 512 * 2)
    return result


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def figures(result: dict[str, Any]) -> dict[str, float]:
    """The ratios and differences the targets are about, medians of round-by-round values."""
    numbers: dict[str, float] = {}
    if "times" in result:
        times = result["times"]
        threads, one, two = (times[name] for name in ("threads, one job at a time", "dask, 1 worker",
                                                      "dask, 2 workers"))
        kill = result["kill"]
        numbers |= {
            "two_over_one": _median([a / b for a, b in zip(one, two, strict=True)]),
            "two_over_threads": _median([a / b for a, b in zip(threads, two, strict=True)]),
            "kill_cost": _median([k - c for k, c in zip(kill["one worker killed"], kill["as they are"],
                                                        strict=True)]),
            "machine_two_over_one": _median([a / b for a, b in zip(*result["ceiling"].values(), strict=True)])
            if result.get("ceiling") else 0.0,
            "extra_runs": max(result["extra_runs"]),
        }
    if "overhead" not in result:
        return numbers
    over = result["overhead"]
    return numbers | {key: _median([d - t for d, t in zip(over[name], over["threads"], strict=True)])
                      for name, key, _ in OVERHEAD_CONTENDERS if name in over}


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    numbers = figures(result)
    found: list[tuple[str, str, bool]] = []
    if "two_over_one" in numbers:
        found += [
            ("2 Dask workers >= 1.7x the throughput of 1 Dask worker", f"{numbers['two_over_one']:.2f}x "
             f"(2 bare processes: {numbers['machine_two_over_one']:.2f}x 1)", numbers["two_over_one"] >= 1.7),
            ("2 Dask workers >= 1.7x the throughput of threads, one job at a time",
             f"{numbers['two_over_threads']:.2f}x", numbers["two_over_threads"] >= 1.7),
            ("a killed worker reruns only its own job", f"{numbers['extra_runs']} extra run(s), "
             f"{numbers['kill_cost']:.2f} s longer", numbers["extra_runs"] <= 1),
        ]
    if "overhead" in numbers:
        found += [
            (f"dask - threads <= 0.15 s for one job on a {result['slices']}-slice 512x512 CT volume "
             "(pixel_data = false: process() takes the volume)",
             f"{numbers['overhead_volume']:.3f} s (every segment new: {numbers['overhead_volume_new_segment']:.3f} s; "
             f"shared_memory = false: {numbers['overhead_socket_volume']:.3f} s)", numbers["overhead_volume"] <= 0.15),
            ("the same, the datasets' pixel data travelling too (pixel_data = true, the default)",
             f"{numbers['overhead']:.3f} s (shared_memory = false: {numbers['overhead_socket']:.3f} s)",
             numbers["overhead"] <= 0.15),
        ]
    return found


def report(result: dict[str, Any]) -> str:

    lines: list[str] = []
    if "times" in result:
        lines += _throughput_report(result)
    if "overhead" in result:
        lines += ([""] if lines else []) + _overhead_report(result)
    return "\n".join(lines)


def _throughput_report(result: dict[str, Any]) -> list[str]:
    from results import ratio_cell, spread

    times = result["times"]
    threads = times["threads, one job at a time"]
    lines = [f"{PATIENTS} patients, `process()` spinning the CPU {result['one_job']:.2f} s each "
             "(embedded clusters, one thread per worker; 2 cores):", "",
             "| executor | median (s) | min–max (s) | throughput vs threads, round by round |", "|---|---|---|---|"]
    lines += [f"| {name} | {' | '.join(spread(values, digits=2))} | "
              f"{ratio_cell([t / v for t, v in zip(threads, values, strict=True)])} |" for name, values in times.items()]
    if result.get("ceiling"):
        one = result["ceiling"]["bare processes, 1 at a time"]
        lines += ["", "The machine's own ceiling, in the same rounds: the same spins in bare worker processes "
                  "(no node, no Dask):", "", "| processes | median (s) | min–max (s) | throughput vs 1 process, "
                  "round by round |", "|---|---|---|---|"]
        lines += [f"| {name} | {' | '.join(spread(values, digits=2))} | "
                  f"{ratio_cell([a / b for a, b in zip(one, values, strict=True)])} |"
                  for name, values in result["ceiling"].items()]
    kill = result["kill"]
    lines += ["", f"{PATIENTS} patients on 2 Dask workers, the worker of the first job SIGKILLed half-way through "
              "it (the embedded cluster's nanny starts it again):", "",
              "| run | median (s) | min–max (s) |", "|---|---|---|"]
    lines += [f"| {name} | {' | '.join(spread(values, digits=2))} |" for name, values in kill.items()]
    lines += ["", f"Extra runs of `process()` per killed round: {', '.join(map(str, result['extra_runs']))}."]
    return lines


def _overhead_report(result: dict[str, Any]) -> list[str]:
    from results import spread

    over = result["overhead"]
    lines = [f"One job on a {result['slices']}-slice 512x512 CT (NumpyGrinder volume and the datasets): "
              "the executor's `run` alone:", "", "| executor | median (s) | min–max (s) |", "|---|---|---|"]
    lines += [f"| {name} | {' | '.join(spread(values))} |" for name, values in over.items()]
    lines += ["", f"Sending {result['slices'] * 512 * 512 * 2 / 1e6:.0f} MB over a bare loopback TCP socket "
              f"here (the floor of any crossing through a socket): {result['tcp_floor']:.3f} s."]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="counted rounds after the warm-up")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT of the overhead measurement")
    parser.add_argument("--only", choices=("throughput", "overhead"), default="",
                        help="one measurement (throughput includes the killed worker)")
    args = parser.parse_args()
    import scale_out  # the pipelines by this module's name, not __main__'s: the workers import them so

    result = scale_out.measure(args.runs, args.slices, log=lambda text: print(text, file=sys.stderr, flush=True),
                               only=args.only)
    print(report(result))
    for name, measured, met in targets(result):
        print(f"- {'met' if met else 'MISSED'}: {name}: {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
