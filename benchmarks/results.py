"""Writing the suite's results: the machine, the generated blocks of RESULTS.md, the ratio chart.

``RESULTS.md`` mixes generated blocks and prose. :func:`update_results`
replaces only what lies between ``<!-- begin generated: KEY -->`` and
``<!-- end generated: KEY -->``; everything else (the notes under each
scenario) is kept as it is. A scenario whose block is missing is appended
as a new section at the end.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass
class Target:
    """A target of an issue: what it asks, what this run measured, and whether that meets it."""

    name: str
    measured: str
    met: bool


@dataclass
class Headline:
    """A bar of the chart: how many times better than the reference we are (higher is better).

    ``goal`` is the target on the same scale (e.g. 0.9 for "at least 0.9x the
    throughput"), or None when the issue sets none.
    """

    label: str
    value: float
    goal: float | None = None


@dataclass
class Section:
    """One scenario's results: a generated Markdown block, its targets and its chart bars."""

    key: str
    title: str
    body: str
    targets: list[Target] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)


# --- numbers ----------------------------------------------------------------------------------------


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> tuple[str, str]:
    """The median and the min–max of ``values`` divided by ``scale``, formatted."""
    return (f"{statistics.median(values) / scale:.{digits}f}",
            f"{min(values) / scale:.{digits}f}–{max(values) / scale:.{digits}f}")


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """The ratio of each round's pair (the rounds of both lists ran interleaved)."""
    return [a / b for a, b in zip(numerators, denominators)]


def ratio_cell(ratios: Sequence[float]) -> str:
    """The median of per-round ratios with their min–max."""
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"


# --- the machine ----------------------------------------------------------------------------------


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> str:
    """A Markdown description of this machine and of every program and library the suite measures."""
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = names[0] if names else cpu
    memory = ""
    if Path("/proc/meminfo").exists():
        match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        memory = f", {int(match[1]) / 2**20:.0f} GiB" if match else ""
    system = platform.platform()
    if Path("/etc/os-release").exists():
        match = re.search(r'^PRETTY_NAME="?([^"\n]+)', Path("/etc/os-release").read_text(), re.MULTILINE)
        system = f"{match[1]}, Linux {platform.release()}" if match else system
    dicomnode = ", ".join(f"{name} {_version(name)}" for name in (
        "dicomnode", "dicomnode-numpy", "dicomnode-nifti", "dicomnode-dicom-output", "dicomnode-file-output",
        "dicomnode-historic-input", "dicomnode-highdicom"))
    libraries = ", ".join(f"{name} {_version(name)}" for name in (
        "pydicom", "pynetdicom", "numpy", "nibabel", "pluggy", "highdicom", "dicom2nifti", "matplotlib"))
    dcm2niix = Path(sys.executable).parent / "dcm2niix"
    dcmtk = re.search(r"v\d[\d.]*", _first_line(["/usr/bin/storescu", "--version"]))
    converter = re.search(r"v\d[\d.]*", _first_line([str(dcm2niix) if dcm2niix.exists() else "dcm2niix",
                                                     "--version"]))
    peers = "; ".join([
        f"DCMTK {dcmtk[0] if dcmtk else 'not installed'}",
        "Orthanc " + _first_line(["/usr/sbin/Orthanc", "--version"]).split()[-1],
        f"dcm2niix {converter[0] if converter else 'not installed'}",
    ])
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    return "\n".join([
        f"- Machine: {cpu}, {os.cpu_count()} CPUs{memory}; {system}",
        f"- Python {platform.python_version()}; {dicomnode}",
        f"- Libraries: {libraries}",
        f"- Peers: {peers}",
        f"- Load average when the run ended (1/5/15 min): {load}",
    ])


# --- RESULTS.md -----------------------------------------------------------------------------------


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- begin generated: {key} -->", f"<!-- end generated: {key} -->"


def replace_block(text: str, key: str, title: str, content: str) -> str:
    """``text`` with block ``key`` holding ``content`` (a new ``## title`` section at the end if absent)."""
    begin, end = _markers(key)
    block = f"{begin}\n{content.strip()}\n{end}"
    start, stop = text.find(begin), text.find(end)
    if start >= 0 and stop > start:
        return text[:start] + block + text[stop + len(end):]
    return text.rstrip() + f"\n\n## {title}\n\n{block}\n"


def remember(store_path: Path, sections: Sequence[Section], stamp: str, order: Sequence[str]) -> list[Section]:
    """Merge this run's targets and chart bars into ``store_path`` (JSON); every scenario's latest, in order.

    A run of a few scenarios (``--only``) so keeps the others' last figures in
    the summary and the chart.
    """
    store: dict[str, Any] = json.loads(store_path.read_text()) if store_path.exists() else {}
    for section in sections:
        store[section.key] = {
            "title": section.title, "measured": stamp,
            "targets": [[t.name, t.measured, t.met] for t in section.targets],
            "headlines": [[h.label, h.value, h.goal] for h in section.headlines],
        }
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store_path.write_text(json.dumps(store, indent=1, ensure_ascii=False) + "\n")
    keys = [key for key in order if key in store] + [key for key in store if key not in order]
    return [Section(key, store[key]["title"], f"(measured {store[key]['measured']})",
                    [Target(*target) for target in store[key]["targets"]],
                    [Headline(*headline) for headline in store[key]["headlines"]]) for key in keys]


def summary(sections: Sequence[Section], header: str, chart: str | None) -> str:
    """The block at the top: how the run was made, every target met or missed, the chart."""
    lines = [header, "", "| scenario | target | measured | met | measured on |", "|---|---|---|---|---|"]
    for section in sections:
        when = section.body.removeprefix("(measured ").removesuffix(")")
        for target in section.targets:
            lines.append(f"| {section.title} | {target.name} | {target.measured} | "
                         f"{'yes' if target.met else '**no**'} | {when} |")
    if chart:
        lines += ["", f"![Headline ratios, higher is better]({chart})"]
    return "\n".join(lines)


def update_results(path: Path, sections: Sequence[Section], everything: Sequence[Section], header: str,
                   chart: str | None) -> None:
    """Write this run's blocks and the summary of ``everything`` into ``path`` (created if missing)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    text = replace_block(text, "summary", "Summary", summary(everything, header, chart))
    for section in sections:
        text = replace_block(text, section.key, section.title, section.body)
    path.write_text(text.rstrip() + "\n")


# --- the chart --------------------------------------------------------------------------------------


def chart(sections: Sequence[Section], path: Path, title: str) -> bool:
    """Draw every headline as a horizontal bar (log scale) with its target; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [bar for section in sections for bar in section.headlines if bar.value > 0]
    if not bars:
        return False
    figure, axes = plt.subplots(figsize=(9, 0.42 * len(bars) + 1.6), dpi=110)
    rows = list(range(len(bars)))[::-1]
    colours = ["#9e9e9e" if bar.goal is None else ("#2e7d32" if bar.value >= bar.goal else "#c62828")
               for bar in bars]
    axes.barh(rows, [bar.value for bar in bars], color=colours, height=0.6)
    for row, bar in zip(rows, bars):
        if bar.goal is not None:
            axes.plot([bar.goal, bar.goal], [row - 0.38, row + 0.38], color="black", linewidth=2)
        axes.text(bar.value * 1.05, row, f"{bar.value:.3g}×", va="center", fontsize=8)
    axes.set_yticks(rows, [bar.label for bar in bars], fontsize=8)
    axes.set_xscale("log")
    axes.axvline(1.0, color="#555555", linewidth=0.8, linestyle=":")
    axes.set_xlabel("times better than the reference (higher is better; black mark: the target)")
    axes.set_title(title, fontsize=10)
    low = min(min(bar.value for bar in bars), min((b.goal for b in bars if b.goal), default=1.0))
    high = max(max(bar.value for bar in bars), max((b.goal for b in bars if b.goal), default=1.0))
    axes.set_xlim(low / 1.6, high * 1.8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True
