"""End to end: a CT sent by storescu, ground, plus one, built into a new series and sent on.

The plus-one node (NumpyGrinder -> ``volume + 1`` -> NumpyFactory ->
DicomOutput) runs in its own process on a free loopback port. Each round
DCMTK ``/usr/bin/storescu`` (``TCP_NODELAY=1``) sends the 300-slice 512x512
CT in a new shuffled order; the node sends its result to DCMTK ``storescp``
(``TCP_NODELAY=1``, its default 16 KiB maximum PDU), which writes it to a
folder. The latency runs from the moment storescu is started to the
modification time of the last result file storescp wrote.

Measured per round, side by side with three references in the same round
(A B C D, after a warm-up round):

- the node: latency; stages from the node's own log lines (``job started``,
  ``stage times``; the pipeline logs its ``plus one``/``build`` split); peak
  RSS of the node process (VmHWM, reset before each round);
- a bare pynetdicom storage SCP receiving the same storescu send (ingest);
- a naive pydicom loop reading the files and stacking the rescaled slices (grind);
- a bare pynetdicom ``send_c_store`` loop sending the series to a second
  storescp (send).

Every result is checked: 300 instances, each ImagePositionPatient equal to
the input's position of the same rank along the normal (the input arrived
shuffled), and the pixels of three slices equal to the input's plus one.

Targets: median latency < 2.5 s; latency <= 1.5x (bare ingest + naive
grind + bare send) of the same round; peak RSS <= 4x the series size.

    python benchmarks/end_to_end.py --runs 5
    python benchmarks/end_to_end.py --quick           # 40 slices, 2 rounds
    python benchmarks/end_to_end.py --contender "glibc:malloc_arenas=0,release_idle_memory=false" \
        --contender "defaults:" --contender "one arena:malloc_arenas=1"   # nodes only, A B A B
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import ingest  # noqa: E402  (the study on disk, the bare SCP, storescu driving)

WORK = HERE / ".work"
STORESCP = "/usr/bin/storescp"
NODE_AE = "PLUSONE"
DESTINATION_AE = "STORESCP"
STAGES = ("ingest", "wait", "grind", "plus one", "build", "send", "other")
LINE = re.compile(r"^(?P<created>\d+\.\d+) (?P<name>\S+) (?P<message>.*)$")


# --- the node (run with --serve-node) -----------------------------------------------------------


def serve_node(port: int, destination_port: int, slices: int, log_path: Path, data_directory: Path | None,
               lazy: bool, copy: bool, settings: dict[str, Any] | None = None) -> None:
    """Run the plus-one node until SIGTERM, logging every line with its wall-clock time."""
    import attrs
    import numpy as np

    from dicomnode import AbstractInput, AbstractPipeline
    from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT
    from dicomnode.net import Address
    from dicomnode_dicom_output import DicomOutput
    from dicomnode_numpy import NumpyFactory, NumpyGrinder

    destination = Address("127.0.0.1", destination_port, DESTINATION_AE)

    class CT(AbstractInput):
        required_values = {"Modality": "CT"}
        required_tags = ["SeriesInstanceUID", "ImagePositionPatient"]
        enforce_single_series = True
        image_grinder = NumpyGrinder()

        def validate(self) -> bool:
            return self.images >= slices

    class PlusOne(AbstractPipeline):
        ae_title = NODE_AE
        ip = "127.0.0.1"
        input = {"CT": CT}
        maintenance_thread = False
        log_level = "INFO"
        log_format = "%(created).6f %(name)s %(message)s"

        def post_init(self) -> None:
            self.factory = NumpyFactory(pipeline_name="plus-one")

        def process(self, input_container: Any) -> Any:
            started = time.perf_counter()
            volume = input_container["CT"]
            if copy:
                result = attrs.evolve(volume, array=volume.array + 1)
            else:  # in place: a copy costs another volume of memory and its page faults
                result = volume
                np.add(volume.array, 1, out=volume.array)
            added = time.perf_counter()
            header = self.factory.build_series_header(input_container.datasets["CT"],
                                                      DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT)
            series = self.factory.build_series(result, header)
            self.logger.info("process times: plus one %.3f s, build %.3f s", added - started,
                             time.perf_counter() - added)
            return DicomOutput([(destination, series)], attempts=1, timeout=60)

    node = PlusOne(port=port, log_output=log_path, data_directory=data_directory, lazy_storage=lazy,
                   **(settings or {}))
    node.open(blocking=True)  # until SIGTERM


# --- measuring ------------------------------------------------------------------------------------


def _vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> None:
    # "5" resets the peak resident set size (VmHWM) to the current RSS (Linux >= 4.0)
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _storescp(port: int, folder: Path, log: Any, maximum_pdu: int | None) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    pdu = [] if maximum_pdu is None else ["--max-pdu", str(maximum_pdu)]
    return subprocess.Popen([STORESCP, "--aetitle", DESTINATION_AE, "--accept-all", *pdu, "--output-directory",
                             str(folder), str(port)], env=ingest.dcmtk_env(), stdout=log,
                            stderr=subprocess.STDOUT)


def _clear(folder: Path) -> None:
    for entry in os.scandir(folder):
        os.unlink(entry.path)


def _wait_for_files(folder: Path, count: int, timeout: float, node: subprocess.Popen[bytes]) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = os.listdir(folder)
        if len(names) >= count:
            return [folder / name for name in names]
        if node.poll() is not None:
            raise RuntimeError(f"the node exited with code {node.returncode}")
        time.sleep(0.02)
    raise TimeoutError(f"{len(os.listdir(folder))} of {count} result instances arrived within {timeout:g} s")


def _log_lines(path: Path, since: float) -> list[tuple[float, str]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if match and float(match["created"]) >= since:
            lines.append((float(match["created"]), match["message"]))
    return lines


def _number(pattern: str, lines: list[tuple[float, str]]) -> tuple[float, tuple[float, ...]]:
    for created, message in lines:
        match = re.search(pattern, message)
        if match:
            return created, tuple(float(value) for value in match.groups())
    raise LookupError(f"the node logged no line matching {pattern!r}; its lines: {lines[-10:]}")


def _job_finished(log_path: Path, since: float, timeout: float) -> list[tuple[float, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = _log_lines(log_path, since)
        if any(re.search(r"job \S+ (done|failed)", message) for _, message in lines):
            return lines
        time.sleep(0.02)
    raise TimeoutError(f"the node logged no job end within {timeout:g} s")


def stages(lines: list[tuple[float, str]], sent_at: float, latency: float) -> dict[str, float]:
    """Seconds per stage of one job, from the node's log lines (wall-clock ``created`` times)."""
    started, (_, wait) = _number(r"job \S+ started: (\d+) image\(s\), ([\d.]+) s after the last", lines)
    _, (plus_one, build) = _number(r"process times: plus one ([\d.]+) s, build ([\d.]+) s", lines)
    _, (grind, process, outputs) = _number(
        r"stage times: grind ([\d.]+) s, process ([\d.]+) s, outputs ([\d.]+) s", lines)
    result = {
        "ingest": started - wait - sent_at,
        "wait": wait,
        "grind": grind,
        "plus one": plus_one,
        "build": build,
        # process() beyond the two timed steps (creating the output) counts with the send
        "send": outputs + max(0.0, process - plus_one - build),
    }
    result["other"] = latency - sum(result.values())
    return result


def check_result(inputs: list[Path], outputs: list[Path]) -> list[str]:
    """What is wrong with the result series (empty when it is the input plus one, in the right place)."""
    import numpy as np
    from pydicom import dcmread

    def headers(paths: list[Path]) -> list[tuple[Any, Path]]:
        return [(dcmread(path, stop_before_pixels=True), path) for path in paths]

    problems = []
    if len(outputs) != len(inputs):
        problems.append(f"{len(outputs)} result instances for {len(inputs)} inputs")
    # the inputs ranked along the normal (axial: z) are where the results must be, by InstanceNumber
    parents = sorted(headers(inputs), key=lambda item: float(item[0].ImagePositionPatient[2]))
    results = sorted(headers(outputs), key=lambda item: int(item[0].InstanceNumber))
    wrong = 0
    for (parent, _), (made, _) in zip(parents, results):
        expected = [float(v) for v in parent.ImagePositionPatient]
        actual = [float(v) for v in made.ImagePositionPatient]
        if max(abs(a - e) for a, e in zip(actual, expected)) > 1e-3:
            wrong += 1
    if wrong:
        problems.append(f"ImagePositionPatient wrong on {wrong} of {len(results)} result instances")
    if len({str(ds.SeriesInstanceUID) for ds, _ in results}) != 1:
        problems.append("the result is not one series")
    for rank in (0, len(parents) // 2, len(parents) - 1):
        if rank >= len(results):
            break
        source, made = dcmread(parents[rank][1]), dcmread(results[rank][1])
        hu = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
        out = made.pixel_array * float(made.RescaleSlope) + float(made.RescaleIntercept)
        if not np.allclose(out, hu + 1, atol=0.5 * float(made.RescaleSlope)):
            problems.append(f"the pixels of slice {rank + 1} are not the input plus one")
    return problems


class Node:
    """The plus-one node in its own process, sending to ``destination_port``."""

    def __init__(self, work: Path, destination_port: int, slices: int, variant: str, copy: bool = False,
                 profile: Path | None = None,
                 environment: dict[str, str] | None = None, settings: dict[str, Any] | None = None,
                 name: str = "node") -> None:
        self.port = ingest.free_port()
        self.log_path = work / f"{name}.log"
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-node", str(self.port),
                   str(destination_port), str(slices), str(self.log_path)]
        if profile is not None:  # collapsed stacks of every thread, for finding where the time goes
            spy = Path(sys.executable).parent / "py-spy"
            command = [str(spy), "record", "--format", "raw", "--threads", "--rate", "250", "--output",
                       str(profile), "--", *command]
        if variant in ("data", "lazy"):
            command += ["--data-directory", str(work / "node-data")]
        if variant == "lazy":
            command.append("--lazy")
        if copy:
            command.append("--copy")
        if settings:
            command += ["--node-settings", json.dumps(settings)]
        self.console = open(work / f"{name}.console", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self.console, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(environment or {})})
        ingest.wait_for_port(self.port)
        #: the node's own process (py-spy's child when profiling)
        self.pid = self.process.pid
        if profile is not None:
            import psutil

            self.pid = psutil.Process(self.process.pid).children()[0].pid

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.console.close()


def _bare_send(port: int, files: list[Path]) -> float:
    import send

    started = time.perf_counter()
    send._send_pynetdicom(port, files)
    return time.perf_counter() - started


def _naive_grind(files: list[Path]) -> float:
    import numpy as np
    from pydicom import dcmread

    started = time.perf_counter()
    datasets = [dcmread(path) for path in files]
    ordered = sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    volume = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ordered])
    elapsed = time.perf_counter() - started
    del volume, datasets, ordered
    return elapsed


@attrs.frozen
class _Round:
    """One round of a plus-one node: when it was sent, what it took, what it held, what came out wrong."""

    sent_at: float
    latency: float
    peak: int
    rss_before: int
    lines: list[tuple[float, str]]
    problems: list[str]


def _node_round(node: Node, out: Path, files: list[Path], order: list[Path]) -> _Round:
    """Send the series to ``node`` in ``order``; wait for its result in ``out`` and check it."""
    _clear(out)
    before = _vm_kib(node.pid, "VmRSS")
    _reset_peak(node.pid)
    sent_at = time.time()
    ingest.send(node.port, [order])
    made = _wait_for_files(out, len(files), 120.0, node.process)
    lines = _job_finished(node.log_path, sent_at, 120.0)
    latency = max(path.stat().st_mtime for path in made) - sent_at
    peak = _vm_kib(node.pid, "VmHWM") * 1024
    return _Round(sent_at, latency, peak, before, lines, check_result(files, made))


def measure(slices: int, runs: int, variant: str = "memory", *, copy: bool = False,
            destination_pdu: int | None = None, profile: Path | None = None, log: Any = None) -> dict[str, Any]:
    """Run the node and its references ``runs`` rounds after a warm-up; every number of every round.

    ``variant``: the node ``"memory"``, with a data directory (``"data"``) or with
    ``lazy_storage`` too (``"lazy"``); ``copy``: add one into a new array
    instead of in place; ``destination_pdu``: storescp's maximum PDU size.
    """
    say = log or (lambda text: print(text, file=sys.stderr))
    files = ingest.study(slices)
    series_bytes = sum(path.stat().st_size for path in files)
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="end-to-end-", dir=WORK))
    out, bare_out = work / "storescp", work / "storescp-bare"
    scp_log = open(work / "storescp.log", "wb")  # noqa: SIM115 - closed below
    destination_port, bare_port = ingest.free_port(), ingest.free_port()
    peers: list[subprocess.Popen[bytes]] = [_storescp(destination_port, out, scp_log, destination_pdu),
                                            _storescp(bare_port, bare_out, scp_log, destination_pdu)]
    node = receiver = dcmtk = None
    result: dict[str, Any] = {
        "slices": slices, "series_bytes": series_bytes, "variant": variant, "runs": runs, "copy": copy,
        "destination_pdu": destination_pdu,
        "latency": [], "bare ingest": [], "naive grind": [], "bare send": [], "ratio": [],
        "storescp ingest": [], "storescu send": [], "dcmtk ratio": [],
        "peak rss": [], "rss before": [], "problems": [], "stages": {name: [] for name in STAGES},
    }
    try:
        ingest.wait_for_port(destination_port)
        ingest.wait_for_port(bare_port)
        node = Node(work, destination_port, slices, variant, copy, profile)
        receiver = ingest.Receiver("a", work)
        dcmtk = ingest.Receiver("d", work)  # storescp writing every file: the ingest reference
        for round_number in range(runs + 1):
            counted = round_number > 0  # round 0 warms imports, caches and connections
            order = list(files)
            random.Random(round_number).shuffle(order)
            one = _node_round(node, out, files, order)
            latency, peak, problems = one.latency, one.peak, one.problems
            bare_ingest = ingest.send(receiver.port, [order])
            grind = _naive_grind(order)
            _clear(bare_out)
            bare_send = _bare_send(bare_port, order)
            reference = bare_ingest + grind + bare_send
            # the physical reference: DCMTK receiving the series, and DCMTK sending it to the node's destination
            _clear(dcmtk.folder)
            dcmtk_ingest = ingest.send(dcmtk.port, [order])
            _clear(bare_out)
            dcmtk_send = ingest.send(bare_port, [order])
            say(f"  round {round_number}: latency {latency:.2f} s, peak RSS {peak / 2**20:.0f} MiB; "
                f"bare ingest {bare_ingest:.2f} s, naive grind {grind:.2f} s, bare send {bare_send:.2f} s"
                + f"; storescp ingest {dcmtk_ingest:.2f} s, storescu send {dcmtk_send:.2f} s"
                + (f"; PROBLEMS: {problems}" if problems else ""))
            if not counted:
                continue
            result["latency"].append(latency)
            result["bare ingest"].append(bare_ingest)
            result["naive grind"].append(grind)
            result["bare send"].append(bare_send)
            result["ratio"].append(latency / reference)
            result["storescp ingest"].append(dcmtk_ingest)
            result["storescu send"].append(dcmtk_send)
            result["dcmtk ratio"].append(latency / (dcmtk_ingest + dcmtk_send))
            result["peak rss"].append(peak)
            result["rss before"].append(one.rss_before * 1024)
            result["problems"].append(problems)
            for name, seconds in stages(one.lines, one.sent_at, latency).items():
                result["stages"][name].append(seconds)
    finally:
        for started in (receiver, dcmtk):
            if started is not None:
                started.stop()
        if node is not None:
            node.stop()
        for peer in peers:
            if peer.poll() is None:
                os.kill(peer.pid, signal.SIGTERM)
                peer.wait(timeout=30)
        scp_log.close()
        shutil.rmtree(work, ignore_errors=True)
    return result


def parse_contender(text: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``"LABEL:KEY=VALUE,..."``: upper-case keys go into the node's environment, others are node settings.

    A setting's value is read as JSON when it parses (``malloc_arenas=1``,
    ``malloc_arenas=null``), else kept as a string; ``"LABEL:"`` is the node as it is.
    """
    label, _, pairs = text.partition(":")
    environment: dict[str, str] = {}
    settings: dict[str, Any] = {}
    for pair in filter(None, pairs.split(",")):
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"--contender {text!r}: {pair!r} is not KEY=VALUE")
        if key.isupper():
            environment[key] = value
        else:
            try:
                settings[key] = json.loads(value)
            except json.JSONDecodeError:
                settings[key] = value
    return label or text, environment, settings


def compare(slices: int, runs: int, variant: str, contenders: list[str], log: Any = None) -> dict[str, Any]:
    """Several plus-one nodes (environment or settings differing), one round each in turn, A B A B ….

    Every node runs for the whole comparison (its idle memory is its own
    process's); per contender: latency, peak RSS, RSS before the round and the
    stages, from the same shuffled order in the same round. No references.
    """
    say = log or (lambda text: print(text, file=sys.stderr))
    files = ingest.study(slices)
    series_bytes = sum(path.stat().st_size for path in files)
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compare-", dir=WORK))
    out = work / "storescp"
    scp_log = open(work / "storescp.log", "wb")  # noqa: SIM115 - closed below
    destination_port = ingest.free_port()
    scp = _storescp(destination_port, out, scp_log, None)
    parsed = [parse_contender(text) for text in contenders]
    nodes: list[Node] = []
    result: dict[str, Any] = {"slices": slices, "series_bytes": series_bytes, "variant": variant, "runs": runs,
                              "contenders": {}}
    try:
        ingest.wait_for_port(destination_port)
        for number, (label, environment, settings) in enumerate(parsed):
            nodes.append(Node(work, destination_port, slices, variant, environment=environment,
                              settings=settings, name=f"node{number}"))
            result["contenders"][label] = {"latency": [], "peak rss": [], "rss before": [], "problems": [],
                                           "stages": {name: [] for name in STAGES}}
        for round_number in range(runs + 1):
            order = list(files)
            random.Random(round_number).shuffle(order)
            # alternate which contender goes first, so neither always runs on a warmer machine
            turn = list(zip(parsed, nodes))
            if round_number % 2:
                turn.reverse()
            for (label, _, _), node in turn:
                one = _node_round(node, out, files, order)
                latency, peak, problems, before = one.latency, one.peak, one.problems, one.rss_before
                say(f"  round {round_number} {label}: latency {latency:.2f} s, peak RSS {peak / 2**20:.0f} MiB "
                    f"({peak / series_bytes:.2f}x), before {before / 1024:.0f} MiB"
                    + (f"; PROBLEMS: {problems}" if problems else ""))
                if round_number == 0:
                    continue
                entry = result["contenders"][label]
                entry["latency"].append(latency)
                entry["peak rss"].append(peak)
                entry["rss before"].append(before * 1024)
                entry["problems"].append(problems)
                for name, seconds in stages(one.lines, one.sent_at, latency).items():
                    entry["stages"][name].append(seconds)
    finally:
        for node in nodes:
            node.stop()
        if scp.poll() is None:
            os.kill(scp.pid, signal.SIGTERM)
            scp.wait(timeout=30)
        scp_log.close()
        shutil.rmtree(work, ignore_errors=True)
    return result


def compare_report(result: dict[str, Any]) -> str:
    """One row per contender: latency, stages, peak RSS (and its ratio to the series), RSS before."""
    lines = [f"{result['slices']}-slice CT ({result['series_bytes'] / 1e6:.0f} MB), node {result['variant']}, "
             f"contenders interleaved round by round, {result['runs']} rounds after a warm-up; "
             "medians (min–max).", "",
             "| contender | latency (s) | latency / first's, round by round | ingest | grind | build | send "
             "| peak RSS (MiB) | x series | RSS before (MiB) | wrong rounds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    first = next(iter(result["contenders"].values()))["latency"]
    for label, entry in result["contenders"].items():
        paired, paired_spread = _cell([a / b for a, b in zip(entry["latency"], first)])
        latency, spread = _cell(entry["latency"])
        peak, peak_spread = _cell(entry["peak rss"], 2**20, 0)
        ratio = statistics.median(entry["peak rss"]) / result["series_bytes"]
        before = statistics.median(entry["rss before"]) / 2**20
        stage = [_cell(entry["stages"][name])[0] for name in ("ingest", "grind", "build", "send")]
        wrong = sum(1 for problems in entry["problems"] if problems)
        lines.append(f"| {label} | {latency} ({spread}) | {paired} ({paired_spread}) | {' | '.join(stage)} "
                     f"| {peak} ({peak_spread}) "
                     f"| {ratio:.2f} | {before:.0f} | {wrong} |")
    return "\n".join(lines)


# --- reporting ------------------------------------------------------------------------------------


def _cell(values: list[float], scale: float = 1.0, digits: int = 2) -> tuple[str, str]:
    median = statistics.median(values) / scale
    return f"{median:.{digits}f}", f"{min(values) / scale:.{digits}f}–{max(values) / scale:.{digits}f}"


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the scenario's three targets and the geometry check."""
    latency = statistics.median(result["latency"])
    ratio = statistics.median(result["ratio"])
    peak = statistics.median(result["peak rss"]) / result["series_bytes"]
    wrong = sum(1 for problems in result["problems"] if problems)
    physical = statistics.median(result["dcmtk ratio"])
    return [
        ("median latency < 2.5 s", f"{latency:.2f} s", latency < 2.5),
        ("latency <= 1.5x (bare ingest + naive grind + bare send), per round", f"{ratio:.2f}x", ratio <= 1.5),
        ("latency <= 1.6x (storescp ingest + storescu send), per round", f"{physical:.2f}x", physical <= 1.6),
        ("peak RSS <= 4x the series size", f"{peak:.2f}x", peak <= 4.0),
        ("result exact (geometry, pixels) in every shuffled round", f"{wrong} round(s) wrong", wrong == 0),
    ]


def report(result: dict[str, Any]) -> str:
    """The scenario's Markdown tables."""
    megabytes = result["series_bytes"] / 1e6
    lines = [
        f"{result['slices']}-slice 512x512 CT ({megabytes:.0f} MB), sent shuffled; node "
        f"{'in memory' if result['variant'] == 'memory' else 'with data_directory'}"
        f"{' and lazy_storage' if result['variant'] == 'lazy' else ''}; one added "
        f"{'into a new array' if result['copy'] else 'in place'}; storescp's maximum PDU "
        f"{result['destination_pdu'] or 16384} bytes; "
        f"{result['runs']} rounds after a warm-up.",
        "",
        "| contender | median (s) | min–max (s) |",
        "|---|---|---|",
    ]
    for name, label in (("latency", "plus-one node, end to end"), ("bare ingest", "bare pynetdicom SCP ingest"),
                        ("naive grind", "naive pydicom read-and-stack grind"),
                        ("bare send", "bare pynetdicom send loop")):
        median, spread = _cell(result[name])
        lines.append(f"| {label} | {median} | {spread} |")
    sums = [a + b + c for a, b, c in zip(result["bare ingest"], result["naive grind"], result["bare send"])]
    median, spread = _cell(sums)
    lines.append(f"| sum of the three references | {median} | {spread} |")
    for name, label in (("storescp ingest", "DCMTK storescp ingest (files written)"),
                        ("storescu send", "DCMTK storescu send (to storescp)")):
        median, spread = _cell(result[name])
        lines.append(f"| {label} | {median} | {spread} |")
    median, spread = _cell(result["ratio"])
    physical, physical_spread = _cell(result["dcmtk ratio"])
    lines += ["", f"Latency / sum of the three references, round by round: median {median}x ({spread}).",
              f"Latency / (storescp ingest + storescu send), round by round: median {physical}x "
              f"({physical_spread}).", "",
              "Stages of the node's job (from its log lines):", "",
              "| " + " | ".join(STAGES) + " |", "|" + "---|" * len(STAGES),
              "| " + " | ".join(_cell(result["stages"][name])[0] for name in STAGES) + " |", ""]
    peak, spread = _cell(result["peak rss"], 2**20, 0)
    before = statistics.median(result["rss before"]) / 2**20
    lines += [f"Peak RSS of the node: {peak} MiB ({spread}; {before:.0f} MiB before each round), "
              f"{statistics.median(result['peak rss']) / result['series_bytes']:.2f}x the series.", "",
              "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if met else '**no**'} |" for name, value, met in targets(result)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted rounds after the warm-up (default 5)")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT (default 300)")
    parser.add_argument("--quick", action="store_true", help="40 slices, 2 rounds")
    parser.add_argument("--variant", choices=("memory", "data", "lazy"), default="memory",
                        help="the node in memory (default), with data_directory, or with lazy_storage too")
    parser.add_argument("--copy", action="store_true", help="add one into a new array instead of in place")
    parser.add_argument("--destination-pdu", type=int, metavar="BYTES",
                        help="storescp's maximum PDU size (default: storescp's own, 16 KiB)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run the node under py-spy record and write its collapsed stacks to FILE")
    parser.add_argument("--contender", action="append", metavar="LABEL:KEY=VALUE,...",
                        help="compare plus-one nodes only, interleaved round by round: upper-case keys are "
                             "environment variables of the node (MALLOC_ARENA_MAX=1, with malloc_arenas=null), others node settings "
                             "(malloc_arenas=null); give it twice or more")
    parser.add_argument("--node-settings", help=argparse.SUPPRESS)
    parser.add_argument("--serve-node", nargs=4, metavar=("PORT", "DEST", "SLICES", "LOG"), help=argparse.SUPPRESS)
    parser.add_argument("--data-directory", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lazy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_node:
        port, destination, slices, log_path = args.serve_node
        serve_node(int(port), int(destination), int(slices), Path(log_path), args.data_directory, args.lazy,
                   args.copy, json.loads(args.node_settings) if args.node_settings else None)
        return 0
    for program in (ingest.STORESCU, STORESCP):
        if not os.access(program, os.X_OK):
            raise SystemExit(f"{program} is missing: apt-get install dcmtk")
    slices, runs = (40, 2) if args.quick else (args.slices, args.runs)
    if args.contender:
        print(compare_report(compare(slices, runs, args.variant, args.contender)))
        return 0
    print(report(measure(slices, runs, args.variant, copy=args.copy, destination_pdu=args.destination_pdu,
                         profile=args.profile)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
