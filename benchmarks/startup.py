"""Start-up cost: `dicomnode plugins` and `import dicomnode`, with whatever plugins are installed.

Measured side by side in one run, interleaved, against a bare interpreter
start (`python -c pass`) and `import pydicom` as references. Prints a
Markdown table; ``--runs N`` sets the counted runs (after one warm-up).

    python benchmarks/startup.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _dicomnode_command() -> list[str]:
    script = Path(sys.executable).parent / "dicomnode"
    return [str(script)] if script.exists() else [shutil.which("dicomnode") or "dicomnode"]


SCENARIOS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import pydicom": [sys.executable, "-c", "import pydicom"],
    "import dicomnode": [sys.executable, "-c", "import dicomnode"],
    "dicomnode plugins": [*_dicomnode_command(), "plugins"],
}


def measure(runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    for round_number in range(runs + 1):
        for name, command in SCENARIOS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            elapsed = time.perf_counter() - start
            if round_number > 0:  # the first round warms the file cache
                times[name].append(elapsed)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="counted runs per scenario (default 10)")
    args = parser.parse_args()
    times = measure(args.runs)
    listing = subprocess.run([*_dicomnode_command(), "plugins", "--json"], capture_output=True, text=True,
                             check=True).stdout
    plugins = len(json.loads(listing))
    print(f"Start-up, {args.runs} interleaved runs after a warm-up, {plugins} plugins installed "
          f"(Python {sys.version.split()[0]}):\n")
    print("| command | median (s) | min–max (s) |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| `{name}` | {statistics.median(values):.3f} | {min(values):.3f}–{max(values):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
