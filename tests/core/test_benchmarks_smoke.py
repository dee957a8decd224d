"""The benchmark suite runs: its help, and a tiny series through the end-to-end and send scenarios.

No timing is asserted here; the figures belong to ``benchmarks/run.py`` and RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_peer

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


def test_help_lists_the_modes_and_scenarios() -> None:
    done = subprocess.run([sys.executable, str(RUN), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--smoke" in done.stdout
    for scenario in ("startup", "ingest", "small", "restart", "conversion", "building", "send", "memory", "admin"):
        assert scenario in done.stdout


def test_an_unknown_scenario_is_refused_with_the_known_ones() -> None:
    done = subprocess.run([sys.executable, str(RUN), "--smoke", "--only", "nonsense"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown scenario(s) nonsense" in done.stderr and "end-to-end" in done.stderr


@pytest.mark.plugin("numpy", "dicom-output")
@pytest.mark.timeout(120)
def test_a_smoke_run_writes_results_and_checks_the_result_series(tmp_path: Path) -> None:
    require_peer("dcmtk")
    output = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, str(RUN), "--smoke", "--only", "end-to-end,send", "--output",
                           str(output)], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    text = output.read_text()
    for key in ("summary", "end-to-end", "send"):
        assert f"<!-- begin generated: {key} -->" in text and f"<!-- end generated: {key} -->" in text
    # the benchmark checks every result series it receives; a wrong one would be reported here
    assert "| result exact (geometry, pixels) in every shuffled round | 0 round(s) wrong | yes |" in text
    assert "DCMTK storescu" in text


@pytest.mark.timeout(120)
def test_a_smoke_run_of_small_images_restart_and_associations_writes_their_blocks(tmp_path: Path) -> None:
    require_peer("dcmtk")
    output = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, str(RUN), "--smoke", "--only", "small,restart,associations", "--output",
                           str(output)], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    text = output.read_text()
    for key in ("small", "restart", "associations"):
        assert f"<!-- begin generated: {key} -->" in text and f"<!-- end generated: {key} -->" in text
    assert "100 64x64 CT instances" in text and "(d) DCMTK storescp" in text
    assert "Restart with 100 held 64x64 CT instances" in text
    assert "4 storescu clients at once, each one association with one 512x512 CT image" in text


@pytest.mark.timeout(120)
def test_the_admin_benchmark_runs_small() -> None:
    require_peer("dcmtk")
    script = RUN.parent / "admin.py"
    done = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| (on) the same node, admin endpoint scraped every second |" in done.stdout
    assert "| 2 patients x 100 | `/status` |" in done.stdout and "| 200 patients x 1 | `/metrics` |" in done.stdout
