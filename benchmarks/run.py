"""The benchmark suite: every scenario side by side with its peers; writes RESULTS.md and ratios.png.

Generates its own data under ``benchmarks/.data/`` (synthetic 512x512 CT
series, nothing downloaded) and runs each scenario's own script functions:
start-up, ingest (one client and four), small images (many 64x64 instances
over one association), restart with a backlog, end to end, conversion, building,
send, memory, segmentation, the admin endpoint, scale-out (needs dicomnode-dask),
DICOMweb (needs dicomnode-dicomweb and Orthanc's DICOMweb plugin). Within a scenario
the contenders run interleaved (A B A B …) after a warm-up round; the figures
are medians with min–max, and ratios are taken round by round. The results
replace the generated blocks of ``benchmarks/RESULTS.md`` (the notes around
them are kept) and the chart ``benchmarks/ratios.png``; ``--quick`` and ``--smoke`` write to
``benchmarks/.work/`` instead, so a short run never replaces the full one.

    python benchmarks/run.py                  # 300 slices, 5 counted rounds (about 15 minutes)
    python benchmarks/run.py --quick          # smaller series, 2 rounds (a few minutes)
    python benchmarks/run.py --only end-to-end,ingest --runs 7
    python benchmarks/run.py --smoke          # tiny series, 1 round: the suite works
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from results import (  # noqa: E402
    Headline,
    Section,
    Target,
    chart,
    machine,
    paired,
    ratio_cell,
    remember,
    spread,
    update_results,
)


@dataclass(frozen=True)
class Mode:
    """How big and how often: the series sizes and the counted rounds of one run of the suite."""

    name: str
    slices: int  #: slices of the CT (ingest, end to end, send) and per patient (memory)
    runs: int  #: counted rounds after the warm-up
    fixed_size: bool  #: run the scenarios whose scripts fix the size at 300 slices
    lazy_count: int  #: slices of the LazyDataset study
    lazy_size: int  #: their rows and columns


MODES = {
    "full": Mode("full", slices=300, runs=5, fixed_size=True, lazy_count=2000, lazy_size=512),
    "quick": Mode("quick", slices=100, runs=2, fixed_size=True, lazy_count=500, lazy_size=512),
    "smoke": Mode("smoke", slices=6, runs=1, fixed_size=False, lazy_count=20, lazy_size=64),
}


def say(text: str) -> None:
    """Progress on stderr (the report goes to RESULTS.md and stdout)."""
    print(text, file=sys.stderr, flush=True)


# --- the scenarios -----------------------------------------------------------------------------------


def startup(mode: Mode) -> Section:
    """`import dicomnode` and `dicomnode plugins` against a bare interpreter and `import pydicom`."""
    import startup as script

    times = script.measure(max(2, mode.runs * 2))
    rows = ["| command | median (s) | min–max (s) |", "|---|---|---|"]
    rows += [f"| `{name}` | {' | '.join(spread(values))} |" for name, values in times.items()]
    plugins = statistics.median(times["dicomnode plugins"])
    return Section(
        "startup", "Start-up", "\n".join(rows),
        [Target("`dicomnode plugins` < 0.5 s with every plugin", f"{plugins:.3f} s", plugins < 0.5)],
        [Headline("start-up: 0.5 s budget / `dicomnode plugins`", 0.5 / plugins, 1.0)],
    )


def ingest(mode: Mode) -> Section:
    """storescu into a bare pynetdicom SCP, our node (in memory, data_directory, lazy, 2 receiving processes),
    storescp, Orthanc; 1 and 4 clients."""
    import ingest as script

    files = script.study(mode.slices)
    kinds = list("abcdflp") + (["e"] if os.access(script.ORTHANC, os.X_OK) else [])
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    lines, targets, headlines, by_clients = [], [], [], {}
    for clients in (1, 4):
        say(f"  ingest, {clients} client(s)")
        times = script.measure(files, mode.runs, clients, kinds)
        by_clients[clients] = times
        lines += ["", f"{'One storescu association' if clients == 1 else f'{clients} concurrent storescu clients'} "
                  f"({len(files)} slices, {megabytes:.0f} MB):", "",
                  "| receiver | median (s) | min–max (s) | images/s | throughput vs (a), round by round |",
                  "|---|---|---|---|---|"]
        for kind, values in times.items():
            ratio = ratio_cell(paired(times["a"], values))
            lines.append(f"| ({kind}) {script.RECEIVERS[kind]} | {' | '.join(spread(values))} | "
                         f"{len(files) / statistics.median(values):.0f} | {ratio} |")
    one = by_clients[1]
    memory = statistics.median(paired(one["a"], one["b"]))
    data = statistics.median(paired(one["a"], one["c"]))
    four = statistics.median(by_clients[1]["b"]) / statistics.median(by_clients[4]["b"])
    four_data = statistics.median(by_clients[1]["c"]) / statistics.median(by_clients[4]["c"])
    four_processes = statistics.median(by_clients[1]["p"]) / statistics.median(by_clients[4]["p"])
    # what DCMTK's receiver gets from the same cores with a process per association, in the same rounds
    four_fork = statistics.median(by_clients[1]["f"]) / statistics.median(by_clients[4]["f"])
    # the same four clients against the best one-client figure of a node that receives in its own process
    four_vs_one_process = (min(statistics.median(by_clients[1][kind]) for kind in "cl")
                           / statistics.median(by_clients[4]["p"]))
    targets += [
        Target("in memory >= 0.9x the bare pynetdicom SCP's throughput", f"{memory:.3f}x", memory >= 0.9),
        Target("data_directory >= 0.75x the bare pynetdicom SCP's throughput", f"{data:.3f}x", data >= 0.75),
        Target("4 clients at least as fast as one client per instance (node in memory)", f"{four:.2f}x",
               four >= 1.0),
        Target("4 clients on 2 cores >= 1.5x one client's throughput (data_directory, receiving in the node's "
               "process)", f"{four_data:.2f}x", four_data >= 1.5),
        Target("4 clients on 2 cores >= 1.5x one client's throughput (2 receiving processes)",
               f"{four_processes:.2f}x (DCMTK storescp --fork, a process per association, in the same rounds: "
               f"{four_fork:.2f}x)", four_processes >= 1.5),
        Target("4 clients into 2 receiving processes >= 1.5x one client into the node's own process "
               "(the faster of data_directory and lazy_storage)", f"{four_vs_one_process:.2f}x",
               four_vs_one_process >= 1.5),
    ]
    headlines += [Headline("ingest in memory vs bare pynetdicom SCP", memory, 0.9),
                  Headline("ingest with data_directory vs bare SCP", data, 0.75),
                  Headline("ingest 4 clients vs 1 client (node)", four, 1.0),
                  Headline("ingest 4 clients vs 1 client (data_directory)", four_data, 1.5),
                  Headline("ingest 4 clients vs 1 client (2 receiving processes)", four_processes, 1.5),
                  Headline("ingest 4 clients vs 1 client (DCMTK storescp --fork, same rounds)", four_fork),
                  Headline("ingest in memory vs DCMTK storescp", statistics.median(paired(one["d"], one["b"])))]
    return Section("ingest", "Ingest", "\n".join(lines).strip(), targets, headlines)


def cores(mode: Mode) -> Section:
    """Many senders on 1 core and on 2: what each receiver gets from a second core, with 4 clients and with 1.

    Everything (the receivers, their processes, the storescu clients) runs on
    the first N CPUs; the receivers write to a tmpfs where there is one, so
    that the disk, which does not grow with cores, is left out.
    """
    import ingest as script

    files = script.study(mode.slices)
    kinds = ["f", "l", "p"]
    shm = Path("/dev/shm")
    script.FOLDER = shm / f"dicomnode-bench-{os.getpid()}" if shm.is_dir() else None
    everything = sorted(os.sched_getaffinity(0))
    by_cpus: dict[int, dict[int, dict[str, list[float]]]] = {}
    try:
        for count in sorted({1, min(2, len(everything))}):
            os.sched_setaffinity(0, everything[:count])  # inherited by every process started below
            for clients in (1, 4):
                say(f"  cores: {count} CPU(s), {clients} client(s)")
                by_cpus.setdefault(count, {})[clients] = script.measure(files, mode.runs, clients, kinds)
    finally:
        os.sched_setaffinity(0, everything)
        if script.FOLDER is not None:
            shutil.rmtree(script.FOLDER, ignore_errors=True)
        script.FOLDER = None
    where = "a tmpfs" if shm.is_dir() else "the disk"
    lines = [f"{len(files)} slices into {where}, medians of {mode.runs} rounds (s); the ratios are throughputs.", "",
             "| receiver | 1 CPU, 1 client | 1 CPU, 4 clients | 2 CPUs, 1 client | 2 CPUs, 4 clients | "
             "4 clients: 2 CPUs vs 1 | 2 CPUs: 4 clients vs 1 |", "|---|---|---|---|---|---|---|"]
    gains: dict[str, float] = {}
    for kind in kinds:
        cells = [statistics.median(by_cpus[count][clients][kind]) for count in sorted(by_cpus) for clients in (1, 4)]
        two = max(by_cpus)
        gain = statistics.median(by_cpus[1][4][kind]) / statistics.median(by_cpus[two][4][kind])
        four = statistics.median(by_cpus[two][1][kind]) / statistics.median(by_cpus[two][4][kind])
        gains[kind] = gain
        lines.append(f"| ({kind}) {script.RECEIVERS[kind]} | " + " | ".join(f"{cell:.3f}" for cell in cells)
                     + f" | {gain:.2f}x | {four:.2f}x |")
    targets = [Target("4 clients: 2 receiving processes gain from a second core (2 CPUs vs 1 >= 1.5x)",
                      f"{gains['p']:.2f}x (one process: {gains['l']:.2f}x; DCMTK storescp --fork: "
                      f"{gains['f']:.2f}x)", gains["p"] >= 1.5)]
    headlines = [Headline("4 clients, 2 CPUs vs 1 (2 receiving processes)", gains["p"], 1.5),
                 Headline("4 clients, 2 CPUs vs 1 (node in one process)", gains["l"]),
                 Headline("4 clients, 2 CPUs vs 1 (DCMTK storescp --fork)", gains["f"])]
    return Section("cores", "Many senders on more cores", "\n".join(lines), targets, headlines)


#: one-file associations opened at once (associations), by mode
ASSOCIATIONS = {"full": 40, "quick": 20, "smoke": 4}


def associations(mode: Mode) -> Section:
    """A burst of associations of one image each (a modality that opens one per image): the receivers' CPU each.

    Each storescu proposes its ~120 storage contexts, as DCMTK's does by
    default: the association request is most of the receiver's work here.
    """
    import ingest as script

    count = ASSOCIATIONS[mode.name]
    files = script.study(max(mode.slices, count))[:count]
    kinds = list("bcd")
    say(f"  associations: {count} at once, one image each")
    times = script.measure(files, mode.runs, count, kinds)
    cpu = {kind: statistics.median(script.CPU[f"{kind}{count}"]) / count * 1000 for kind in kinds}
    lines = [f"{count} storescu clients at once, each one association with one 512x512 CT image; medians of "
             f"{mode.runs} rounds.", "",
             "| receiver | all answered, median (s) | min–max (s) | receiver CPU per association (ms) | "
             "throughput vs storescp, round by round |", "|---|---|---|---|---|"]
    for kind, values in times.items():
        lines.append(f"| ({kind}) {script.RECEIVERS[kind]} | {' | '.join(spread(values))} | {cpu[kind]:.1f} | "
                     f"{ratio_cell(paired(times['d'], values))} |")
    memory = statistics.median(paired(times["d"], times["b"]))
    return Section("associations", "Many short associations", "\n".join(lines), [],
                   [Headline("one-image associations in memory vs DCMTK storescp", memory)])


#: small 64x64 CT instances sent (small images) and held (restart), by mode
SMALL_COUNT = {"full": 20000, "quick": 4000, "smoke": 100}


def small_images(mode: Mode) -> Section:
    """Many small instances over one association: our node in memory and with data_directory, storescp."""
    import ingest as script

    count, runs = SMALL_COUNT[mode.name], min(mode.runs, 3)
    study = script.small_study(count)
    say(f"  small images, {count} instances")
    times = script.measure(study, runs, 1, list("bcd"))
    lines = [f"One storescu association, {count} 64x64 CT instances ({count // script.SMALL_SLICES or 1} "
             "patients):", "",
             "| receiver | median (s) | min–max (s) | images/s | throughput vs storescp, round by round |",
             "|---|---|---|---|---|"]
    for kind, values in times.items():
        lines.append(f"| ({kind}) {script.RECEIVERS[kind]} | {' | '.join(spread(values))} | "
                     f"{count / statistics.median(values):.0f} | {ratio_cell(paired(times['d'], values))} |")
    memory = statistics.median(paired(times["d"], times["b"]))
    data = statistics.median(paired(times["d"], times["c"]))
    return Section(
        "small", "Small images", "\n".join(lines),
        [Target("small images in memory >= 0.5x storescp's throughput", f"{memory:.2f}x", memory >= 0.5),
         Target("small images with data_directory >= 0.5x storescp's throughput", f"{data:.2f}x", data >= 0.5)],
        [Headline("small images in memory vs DCMTK storescp", memory, 0.5),
         Headline("small images with data_directory vs DCMTK storescp", data, 0.5)],
    )


def restart(mode: Mode) -> Section:
    """A node holding many incomplete instances restarted: seconds until it answers C-ECHO, against storescp."""
    import restart as script

    count, runs = SMALL_COUNT[mode.name], min(mode.runs, 3)
    say(f"  restart with {count} held instances")
    caches = [script.bytecode("c")]  # whether the node's modules had bytecode caches changes the figure most
    times, memory, behind = script.measure(count, runs, ["c", "d"], warm_up=mode.name != "smoke")
    answer = statistics.median(times["c"])
    return Section(
        "restart", "Restart with a backlog", script.report(count, times, memory, behind, caches),
        [Target(f"the node answers C-ECHO within 1 s holding {count} instances", f"{answer:.2f} s", answer <= 1.0)],
        [Headline("restart: 1 s budget / time to C-ECHO", 1.0 / answer, 1.0)],
    )


def end_to_end(mode: Mode) -> Section:
    """The plus-one node, in memory and with lazy_storage, against bare ingest + naive grind + bare send."""
    import end_to_end as script

    parts, targets, headlines = [], [], []
    for variant in ("memory", "lazy"):
        say(f"  end to end, node {variant}")
        result = script.measure(mode.slices, mode.runs, variant, log=say)
        parts.append(script.report(result))
        label = "in memory" if variant == "memory" else "lazy_storage"
        for name, measured, met in script.targets(result):
            targets.append(Target(f"{name} (node {label})", measured, met))
        latency = statistics.median(result["latency"])
        headlines += [
            Headline(f"end to end ({label}): 2.5 s / latency", 2.5 / latency, 1.0),
            Headline(f"end to end ({label}): references / latency", 1 / statistics.median(result["ratio"]),
                     1 / 1.5),
            Headline(f"end to end ({label}): 1.6x (storescp ingest + storescu send) / latency",
                     1 / statistics.median(result["dcmtk ratio"]), 1 / 1.6),
            Headline(f"end to end ({label}): 4x series / peak RSS",
                     4 * result["series_bytes"] / statistics.median(result["peak rss"]), 1.0),
        ]
    return Section("end-to-end", "End to end", "\n\n".join(parts), targets, headlines)


def conversion(mode: Mode) -> Section:
    """NiftiGrinder vs dcm2niix vs dicom2nifti; NumpyGrinder vs a naive loop (300 slices, fixed)."""
    import conversion as script

    script.WORK.mkdir(parents=True, exist_ok=True)
    paths = script.series()
    nifti = script.timed({"NiftiGrinder": script.run_nifti_grinder, "dcm2niix -z n": script.run_dcm2niix,
                          "dicom2nifti": script.run_dicom2nifti}, paths, mode.runs)
    numpy = script.timed({"NumpyGrinder": script.run_numpy_grinder, "naive loop": script.run_naive}, paths,
                         mode.runs)
    script.small_files()
    many = script.timed(script.SMALL_FILES_SCENARIOS, [], mode.runs)
    with contextlib.redirect_stdout(io.StringIO()):
        memory = script.memory(paths)
    lines = [f"{len(paths)}-slice 512x512 CT to an uncompressed `.nii`:", "",
             "| contender | median (s) | min–max (s) | dcm2niix time / this, round by round |", "|---|---|---|---|"]
    lines += [f"| {name} | {' | '.join(spread(values))} | {ratio_cell(paired(nifti['dcm2niix -z n'], values))} |"
              for name, values in nifti.items()]
    lines += ["", "2,000-file 128x128 MR series (40 slices x 50 volumes) to an uncompressed `.nii`, "
              "NiftiGrinder reading each file as a `LazyDataset`:", "",
              "| contender | median (s) | min–max (s) | dcm2niix time / this, round by round |", "|---|---|---|---|"]
    lines += [f"| {name} | {' | '.join(spread(values))} | {ratio_cell(paired(many['dcm2niix -z n'], values))} |"
              for name, values in many.items()]
    lines += ["", "To a numpy volume (read + grind):", "",
              "| contender | median (s) | min–max (s) | naive time / this, round by round |", "|---|---|---|---|"]
    lines += [f"| {name} | {' | '.join(spread(values))} | {ratio_cell(paired(numpy['naive loop'], values))} |"
              for name, values in numpy.items()]
    lines += ["", "Peak memory allocated while grinding (tracemalloc):", "",
              "| scenario | peak (MiB) | peak / volume size |", "|---|---|---|"]
    lines += [f"| {name} | {mib:.0f} | {ratio:.2f} |" for name, mib, ratio in memory]
    to_dcm2niix = statistics.median(paired(nifti["NiftiGrinder"], nifti["dcm2niix -z n"]))
    over_dicom2nifti = statistics.median(paired(nifti["dicom2nifti"], nifti["NiftiGrinder"]))
    grinder_peak = memory[0][2]
    small = statistics.median(paired(many["NiftiGrinder"], many["dcm2niix -z n"]))
    return Section(
        "conversion", "Conversion", "\n".join(lines),
        [Target("NiftiGrinder within 2.0x of dcm2niix's time", f"{to_dcm2niix:.2f}x", to_dcm2niix <= 2.0),
         Target("NiftiGrinder at least 4x faster than dicom2nifti", f"{over_dicom2nifti:.1f}x",
                over_dicom2nifti >= 4.0),
         Target("NiftiGrinder over 2,000 small files at most 1.0x dcm2niix's time", f"{small:.2f}x", small <= 1.0),
         Target("NumpyGrinder peak memory <= 1.5x the volume", f"{grinder_peak:.2f}x", grinder_peak <= 1.5)],
        [Headline("NiftiGrinder vs dcm2niix", 1 / to_dcm2niix, 0.5),
         Headline("NiftiGrinder vs dcm2niix, 2,000 small files", 1 / small, 1.0),
         Headline("NiftiGrinder vs dicom2nifti", over_dicom2nifti, 4.0),
         Headline("NumpyGrinder vs naive loop", statistics.median(paired(numpy["naive loop"], numpy["NumpyGrinder"]))),
         Headline("NumpyGrinder: 1.5x volume / peak memory", 1.5 / grinder_peak, 1.0)],
    )


def building(mode: Mode) -> Section:
    """NumpyFactory vs a pydicom template loop (each run a fresh process), and series headers vs deepcopy."""
    import build_header
    import building as script

    runs: dict[str, list[dict[str, float]]] = {name: [] for name in script.CONTENDERS}
    for round_number in range(mode.runs + 1):
        for name in script.CONTENDERS:
            output = subprocess.run([sys.executable, script.__file__, "--one", name], check=True,
                                    capture_output=True, text=True).stdout
            if round_number:
                runs[name].append(json.loads(output))
    loop_name, factory_name = script.CONTENDERS
    seconds = {name: [run["seconds"] for run in values] for name, values in runs.items()}
    output_mib = script.SLICES * script.SIZE * script.SIZE * 2 / 2**20
    lines = [f"A {script.SLICES}-slice {script.SIZE}x{script.SIZE} float32 volume written as a CT series in memory "
             f"(pixel data {output_mib:.0f} MiB):", "",
             "| contender | median (s) | min–max (s) | loop time / this, round by round | peak growth (MiB) "
             "| peak / output |", "|---|---|---|---|---|---|"]
    for name, values in runs.items():
        peak = statistics.median(run["peak_growth_mib"] for run in values)
        lines.append(f"| {name} | {' | '.join(spread(seconds[name], digits=2))} | "
                     f"{ratio_cell(paired(seconds[loop_name], seconds[name]))} | {peak:.0f} | "
                     f"{peak / output_mib:.2f} |")
    speed = statistics.median(paired(seconds[loop_name], seconds[factory_name]))
    peak = statistics.median(run["peak_growth_mib"] for run in runs[factory_name]) / output_mib
    with tempfile.TemporaryDirectory(prefix="dicomnode-bench-") as directory:
        times, elements = build_header.measure(build_header.make_parents(Path(directory)), mode.runs)
    reference = times["pydicom deepcopy loop"]
    lines += ["", f"Headers of {build_header.SLICES} derived instances (no pixel data):", "",
              "| contender | median (ms) | min–max (ms) | elements | deepcopy time / this, round by round |",
              "|---|---|---|---|---|"]
    lines += [f"| {name} | {' | '.join(spread(values, 1e-3, 1))} | {elements[name]} | "
              f"{ratio_cell(paired(reference, values))} |" for name, values in times.items()]
    header_name = next(name for name in times if name != "pydicom deepcopy loop")
    return Section(
        "building", "Building", "\n".join(lines),
        [Target("NumpyFactory no slower than the plain pydicom loop", f"{speed:.2f}x", speed >= 1.0),
         Target("NumpyFactory peak memory <= 2x the output", f"{peak:.2f}x", peak <= 2.0)],
        [Headline("NumpyFactory vs pydicom template loop", speed, 1.0),
         Headline("series headers vs deepcopy loop", statistics.median(paired(reference, times[header_name])))],
    )


def send(mode: Mode) -> Section:
    """DicomOutput and send_datasets vs DCMTK storescu vs a bare pynetdicom loop, to storescp."""
    import send as script

    files = script.study(mode.slices)
    kinds = list("acdef")
    times = script.measure(files, mode.runs, kinds)
    lines = [f"{len(files)} slices to `storescp --ignore` (16 KiB maximum PDU):", "",
             "| sender | median (s) | min–max (s) | storescu time / this | bare loop time / this |",
             "|---|---|---|---|---|"]
    lines += [f"| ({kind}) {script.SENDERS[kind]} | {' | '.join(spread(values, digits=2))} | "
              f"{ratio_cell(paired(times['c'], values))} | {ratio_cell(paired(times['d'], values))} |"
              for kind, values in times.items()]
    if script.LOST_RESPONSES:
        lines += ["", f"The bare pynetdicom loop lost {len(script.LOST_RESPONSES)} C-STORE response(s) to "
                  "pynetdicom's reactor race (each costs its 10 s timeout)."]
    over_bare = statistics.median(paired(times["d"], times["e"]))
    to_storescu = statistics.median(paired(times["e"], times["c"]))
    return Section(
        "send", "Send", "\n".join(lines),
        [Target("DicomOutput at least as fast as the bare pynetdicom loop", f"{over_bare:.1f}x", over_bare >= 1.0),
         Target("DicomOutput within 3x of storescu", f"{to_storescu:.2f}x", to_storescu <= 3.0)],
        [Headline("DicomOutput vs bare pynetdicom loop", over_bare, 1.0),
         Headline("DicomOutput vs DCMTK storescu", 1 / to_storescu, 1 / 3)],
    )


def memory(mode: Mode) -> Section:
    """A node holding 4 patients, eager vs lazy_storage; 2,000 LazyDatasets vs dcmread."""
    import lazy_memory
    import memory as script

    measured = script.measure(mode.slices, mode.runs, log=say)
    results = measured["results"]
    eager = statistics.median(r["peak"] for r in results["a"])
    lazy = statistics.median(r["peak"] for r in results["c"])
    lines = [script.report(measured)]
    directory = lazy_memory.DATA / f"{mode.lazy_count}x{mode.lazy_size}"
    lazy_memory.make_study(directory, mode.lazy_count, mode.lazy_size)
    held: dict[str, list[dict[str, float]]] = {name: [] for name in lazy_memory.CONTENDERS}
    for round_number in range(mode.runs + 1):
        for name in lazy_memory.CONTENDERS:
            outcome = lazy_memory.measure(name, directory)
            if round_number:
                held[name].append(outcome)
    lines += ["", f"{mode.lazy_count} slices of {mode.lazy_size}x{mode.lazy_size} read and all kept, each contender "
              "in a fresh process:", "",
              "| contender | RSS holding all (MiB) | min–max (MiB) | RSS before reading (MiB) | held by Python (MiB) "
              "| time (s) |", "|---|---|---|---|---|---|"]
    for name, label in lazy_memory.CONTENDERS.items():
        values = held[name]
        rss = [r["rss_mib"] for r in values]
        lines.append(f"| {label} | {' | '.join(spread(rss, digits=0))} | "
                     f"{statistics.median(r['before_mib'] for r in values):.0f} | "
                     f"{statistics.median(r['traced_mib'] for r in values):.2f} | "
                     f"{statistics.median(r['seconds'] for r in values):.2f} |")
    names = list(lazy_memory.CONTENDERS)
    dcmread_rss = statistics.median(r["rss_mib"] for r in held[names[0]])
    lazy_rss = statistics.median(r["rss_mib"] for r in held[names[-1]])
    return Section(
        "memory", "Memory", "\n".join(lines), [],
        [Headline("4 patients held: eager peak / lazy_storage peak", eager / lazy),
         Headline(f"{mode.lazy_count} slices held: dcmread RSS / LazyDataset RSS", dcmread_rss / lazy_rss)],
    )


def dicomweb(mode: Mode) -> Section:
    """STOW-RS against C-STORE with the same Orthanc: our outputs sending, our node receiving."""
    import dicomweb as script

    files = script.study(mode.slices)
    times = script.measure(files, mode.runs, log=say)
    by_round = script.ratios(times)
    send_ratio = statistics.median(by_round["send"])
    receive_ratio = statistics.median(by_round["receive"])
    return Section(
        "dicomweb", "DICOMweb", script.report(times, len(files)),
        [Target("DicomWebOutput (STOW-RS) to Orthanc within 1.5x DicomOutput (C-STORE) to it",
                f"{send_ratio:.2f}x", send_ratio <= 1.5),
         Target("receiving the CT by STOW-RS within 1.5x receiving it by C-STORE, from Orthanc",
                f"{receive_ratio:.2f}x", receive_ratio <= 1.5)],
        [Headline("DicomWebOutput vs DicomOutput, to Orthanc", 1 / send_ratio, 1 / 1.5),
         Headline("STOW-RS vs C-STORE receiving, from Orthanc", 1 / receive_ratio, 1 / 1.5)],
    )


def seg(mode: Mode) -> Section:
    """SegFactory vs highdicom used directly: a 300-slice 512x512 binary mask as one SEG (fixed size)."""
    import seg as script

    results = script.measure(mode.runs)
    plain_name, factory_name = script.CONTENDERS
    seconds = {name: [r["seconds"] for r in runs] for name, runs in results.items()}
    ours = statistics.median(seconds[factory_name])
    first = statistics.median(r["first_seconds"] for r in results[factory_name])
    peak = statistics.median(r["peak_growth_mib"] / r["mask_mib"] for r in results[factory_name])
    against = statistics.median(paired(seconds[plain_name], seconds[factory_name]))
    return Section(
        "seg", "Segmentation", script.report(results),
        [Target("SegFactory <= 1.0 s for a 300x512x512 binary mask (a build after the process's first)",
                f"{ours:.2f} s (first build in a process: {first:.2f} s)", ours <= 1.0),
         Target("SegFactory peak memory <= 2x the mask", f"{peak:.2f}x", peak <= 2.0)],
        [Headline("SegFactory: 1.0 s / time", 1.0 / ours, 1.0),
         Headline("SegFactory: 2x mask / peak memory", 2.0 / peak, 1.0),
         Headline("SegFactory vs highdicom directly", against)],
    )


def admin(mode: Mode) -> Section:
    """The admin endpoint scraped every second vs none (node in memory); /status of a node holding 10,000 instances."""
    import admin as script

    files = script.study(mode.slices)
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    say("  admin endpoint scraped every second")
    light = {"scrapes": 5, "calls": 2_000} if mode.name == "smoke" else {}
    scrape = script.scraped(files, mode.runs, repeat=4, **light)
    say("  /status of held instances")
    status = script.held_status(40 if mode.name != "smoke" else 5, 10_000 if mode.name != "smoke" else 1_000)
    ratio = statistics.median(scrape["ratios"])  # type: ignore[arg-type]
    studies, singles = script.shapes(status)
    p95, p95_singles = script.status_p95(status, studies), script.status_p95(status, singles)
    held = f"{script._held(status):,}"
    return Section(
        "admin", "Admin endpoint", script.report(scrape, status, megabytes, len(files), 4),
        [Target("admin endpoint scraped every second keeps >= 0.98x the ingest throughput", f"{ratio:.3f}x "
                f"(its CPU accounted for: {script.accounted_share(scrape) * 100:.2f} % of the node's)", ratio >= 0.98),
         Target(f"/status with {held} held instances ({studies}) < 100 ms (95th percentile)", f"{p95 * 1e3:.1f} ms",
                p95 < 0.1),
         Target(f"/status with {held} held instances ({singles}) < 100 ms (95th percentile)",
                f"{p95_singles * 1e3:.1f} ms", p95_singles < 0.1)],
        [Headline("admin endpoint scraped every second: ingest vs none", ratio, 0.98),
         Headline(f"/status of {held} held ({studies}): 100 ms / p95", 0.1 / p95, 1.0)],
    )


def scale_out(mode: Mode) -> Section:
    """The executor dask (embedded clusters) against threads: 8 CPU-bound jobs, one CT job, a killed worker."""
    import scale_out as script

    result = script.measure(mode.runs, mode.slices, log=say)
    numbers = script.figures(result)
    return Section(
        "scale-out", "Scale-out", script.report(result),
        [Target(name, measured, met) for name, measured, met in script.targets(result)],
        [Headline("scale-out: 2 Dask workers vs 1 (throughput)", numbers["two_over_one"], 1.7),
         Headline("scale-out: 2 Dask workers vs threads, 1 job at a time", numbers["two_over_threads"], 1.7),
         Headline("scale-out: 0.15 s budget / dask overhead on a CT volume",
                  0.15 / max(numbers["overhead_volume"], 1e-3), 1.0)],
    )


SCENARIOS: dict[str, Callable[[Mode], Section]] = {
    "startup": startup,
    "ingest": ingest,
    "cores": cores,
    "associations": associations,
    "small": small_images,
    "restart": restart,
    "end-to-end": end_to_end,
    "conversion": conversion,
    "building": building,
    "send": send,
    "memory": memory,
    "seg": seg,
    "admin": admin,
    "scale-out": scale_out,
    "dicomweb": dicomweb,
}
#: scenarios whose scripts fix the series at 300 slices (left out of --smoke)
FIXED_SIZE = {"conversion", "building", "seg"}


# --- the run ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="100-slice series, 2 counted rounds (a few minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny series, 1 round: checks that the suite runs")
    parser.add_argument("--runs", type=int, help="counted rounds after the warm-up (default 5; quick 2)")
    parser.add_argument("--only", help=f"comma-separated scenarios out of: {', '.join(SCENARIOS)}")
    parser.add_argument("--output", type=Path, help="the results file (default benchmarks/RESULTS.md; "
                        "benchmarks/.work/RESULTS-<mode>.md for --quick and --smoke)")
    args = parser.parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: every scenario's finally stops the peers it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    mode = MODES["quick" if args.quick else "smoke" if args.smoke else "full"]
    if args.runs is not None:
        if args.runs < 1:
            parser.error(f"--runs must be at least 1, got {args.runs}")
        mode = Mode(mode.name, mode.slices, args.runs, mode.fixed_size, mode.lazy_count, mode.lazy_size)
    names = list(SCENARIOS) if not args.only else [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; the scenarios are {', '.join(SCENARIOS)}")
    if not mode.fixed_size:
        names = [name for name in names if name not in FIXED_SIZE]
    for program in ("/usr/bin/storescu", "/usr/bin/storescp"):
        if not os.access(program, os.X_OK):
            raise SystemExit(f"{program} is missing: install DCMTK (apt-get install dcmtk)")
    full = mode.name == "full"
    output = args.output or (HERE / "RESULTS.md" if full else HERE / ".work" / f"RESULTS-{mode.name}.md")
    image = output.parent / ("ratios.png" if full else f"ratios-{mode.name}.png")
    if not full:
        say(f"{mode.name} run: {mode.slices}-slice series and {mode.runs} counted round(s) — fewer than the "
            f"5 rounds of 300 slices the targets are set for; results go to {output}")
    sections = []
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        say(f"{name} …")
        began = time.perf_counter()
        try:
            sections.append(SCENARIOS[name](mode))
        except Exception as error:  # one broken scenario must not cost the others' results
            failed.append(f"{name}: {type(error).__name__}: {error}")
            say(f"{name} FAILED after {time.perf_counter() - began:.0f} s: {error}")
            continue
        say(f"{name}: {time.perf_counter() - began:.0f} s")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/run.py" + ("" if full else f" --{mode.name}") + (f" --only {args.only}" if args.only else "")
    header = "\n".join([
        f"Last run: `{command}` on {stamp}: {mode.slices}-slice series, "
        f"{mode.runs} counted round(s) after a warm-up, contenders interleaved, medians with min–max, ratios "
        f"round by round; the suite took {(time.perf_counter() - started) / 60:.1f} min.",
        "", machine()])
    everything = remember(output.with_suffix(".json"), sections, f"{stamp}, {mode.name} run", list(SCENARIOS))
    drawn = chart(everything, image, f"dicomnode benchmarks: the latest figures of each scenario ({stamp})")
    output.parent.mkdir(parents=True, exist_ok=True)
    update_results(output, sections, everything, header, os.path.relpath(image, output.parent) if drawn else None)
    print(header)
    for section in sections:
        print(f"\n## {section.title}\n\n{section.body}")
    missed = [f"{section.title}: {target.name} ({target.measured})" for section in sections
              for target in section.targets if not target.met]
    print("\nTargets missed:" + "".join(f"\n- {line}" for line in missed) if missed else "\nEvery target met.")
    say(f"wrote {output}" + (f" and {image}" if drawn else " (no chart: matplotlib is not installed)"))
    if failed:
        print("\nScenarios that failed (their earlier figures are kept):" + "".join(f"\n- {line}" for line in failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
