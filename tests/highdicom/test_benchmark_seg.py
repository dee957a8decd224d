"""benchmarks/seg.py runs: both contenders build the same SEG from a small mask, and the report is a table.

No timing is asserted here; the figures belong to ``benchmarks/run.py`` and RESULTS.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.plugin("highdicom")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "seg.py"


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the benchmark reads Linux's /proc")
def test_both_contenders_build_the_segmentation_and_the_report_tabulates_them() -> None:
    spec = importlib.util.spec_from_file_location("seg_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    results = {name: [script.one_run(name, 20, 64)] for name in script.CONTENDERS}
    for runs in results.values():
        assert runs[0]["frames"] == 16 and runs[0]["seconds"] > 0
    table = script.report(results, 20, 64)
    assert "| highdicom directly |" in table and "| SegFactory |" in table and "16 slices hold" in table
