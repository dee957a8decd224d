"""Memory of holding a large study: LazyDataset against eagerly read datasets.

The job: hold 2,000 CT slices of 512x512 (16-bit, about 1 GB of pixel data on
disk) so that a pipeline can sort them and use them later. Each contender runs
in a fresh process that reads every file, keeps all 2,000 datasets in a list
or tree, and reports its resident set size (RSS) while holding them. The
RSS of the same process before reading (Python, pydicom and dicomnode
imported) is reported too; RSS growth alone would mislead, because the
allocator reuses memory freed during the imports. So a second, traced run of
each contender reports what Python allocated and still holds (tracemalloc):
the exact cost of what is kept.

- ``pydicom dcmread``: ``[dcmread(path) for path in paths]`` — the plain way.
- ``pydicom defer_size``: ``dcmread(path, defer_size="1 KB")`` — pydicom's
  own deferred reading, which keeps headers and re-reads large values.
- ``dicomnode LazyDataset``: ``DicomTree(LazyDataset(path) for path in
  paths)`` — every file is read once to sort it, then unloaded.

Contenders are interleaved (A B C A B C …) after a warm-up round; the table
gives medians with min–max and the ratio to the plain way.

    python benchmarks/lazy_memory.py --runs 5
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "lazy_memory"

CONTENDERS = {
    "eager": "pydicom dcmread",
    "defer": "pydicom defer_size",
    "lazy": "dicomnode LazyDataset",
}


def make_study(directory: Path, count: int, size: int) -> list[Path]:
    """``count`` slices of ``size`` x ``size`` in ``directory`` (reused when already there)."""
    marker = directory / f"complete-{count}-{size}"
    if marker.exists():
        return sorted(directory.glob("*.dcm"))
    from pydicom.uid import generate_uid

    from dicomnode.dicom.synthetic import synthetic_series

    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*"):
        old.unlink()
    template = synthetic_series(slices=1, rows=size, columns=size, patient_id="BENCH")[0]
    paths = []
    for index in range(count):
        uid = generate_uid()
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = uid
        template.InstanceNumber = index + 1
        template.ImagePositionPatient = [0, 0, index]
        path = directory / f"{index:05d}.dcm"
        template.save_as(path, enforce_file_format=True)
        paths.append(path)
    marker.touch()
    return paths


def child(mode: str, directory: Path, trace: bool) -> None:
    """Hold every file of ``directory`` the ``mode`` way; print RSS and time (or traced bytes) as JSON."""
    import tracemalloc

    import psutil
    from pydicom import dcmread

    from dicomnode.dicom.lazy import LazyDataset
    from dicomnode.dicom.tree import DicomTree

    paths = sorted(directory.glob("*.dcm"))
    process = psutil.Process()
    gc.collect()
    if trace:
        tracemalloc.start()
    before = process.memory_info().rss
    start = time.perf_counter()
    held: object
    if mode == "eager":
        held = [dcmread(path) for path in paths]
    elif mode == "defer":
        held = [dcmread(path, defer_size="1 KB") for path in paths]
    elif mode == "lazy":
        held = DicomTree(LazyDataset(path) for path in paths)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    elapsed = time.perf_counter() - start
    gc.collect()
    holding = process.memory_info().rss
    assert len(held) == len(paths)  # type: ignore[arg-type]
    if trace:
        print(json.dumps({"mode": mode, "traced_mib": tracemalloc.get_traced_memory()[0] / 2**20}))
        return
    print(json.dumps({"mode": mode, "rss_mib": holding / 2**20, "before_mib": before / 2**20,
                      "seconds": elapsed}))


def measure(mode: str, directory: Path) -> dict[str, float]:
    """One untraced run (RSS, time) and one traced run (bytes held) of ``mode``, each in a new process."""
    outcome: dict[str, float] = {}
    for extra in ([], ["--trace"]):
        result = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--directory", str(directory), *extra],
            capture_output=True, text=True, check=True,
        )
        outcome.update(json.loads(result.stdout))
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured rounds after the warm-up (default 5)")
    parser.add_argument("--count", type=int, default=2000, help="number of slices (default 2000)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of a slice (default 512)")
    parser.add_argument("--child", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--directory", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.directory, args.trace)
        return 0
    directory = DATA / f"{args.count}x{args.size}"
    make_study(directory, args.count, args.size)
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in CONTENDERS}
    for round_number in range(args.runs + 1):
        for mode in CONTENDERS:
            outcome = measure(mode, directory)
            if round_number:  # round 0 warms the page cache
                results[mode].append(outcome)
            print(f"round {round_number} {mode}: RSS {outcome['rss_mib']:.1f} MiB, held "
                  f"{outcome['traced_mib']:.2f} MiB, {outcome['seconds']:.2f} s", file=sys.stderr)
    eager = statistics.median(r["rss_mib"] for r in results["eager"])
    before = statistics.median(r["before_mib"] for mode in CONTENDERS for r in results[mode])
    print(f"\n{args.count} slices of {args.size}x{args.size}, {args.runs} runs; process RSS while "
          f"holding all (before reading: {before:.0f} MiB)\n")
    eager_held = statistics.median(r["traced_mib"] for r in results["eager"])
    print("| contender | RSS median (MiB) | min–max (MiB) | dcmread / contender (RSS) "
          "| held by Python (MiB) | dcmread / contender (held) | time median (s) | time min–max (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, name in CONTENDERS.items():
        rss = [r["rss_mib"] for r in results[mode]]
        held = statistics.median(r["traced_mib"] for r in results[mode])
        seconds = [r["seconds"] for r in results[mode]]
        print(f"| {name} | {statistics.median(rss):.0f} | {min(rss):.0f}–{max(rss):.0f} | "
              f"{eager / statistics.median(rss):.1f} | {held:.2f} | {eager_held / held:.0f} | "
              f"{statistics.median(seconds):.2f} | {min(seconds):.2f}–{max(seconds):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
