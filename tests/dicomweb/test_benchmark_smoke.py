"""benchmarks/dicomweb.py runs: a few slices each way through Orthanc, and the report is a table.

No timing is asserted here; the figures belong to ``benchmarks/run.py`` and RESULTS.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_peer

pytestmark = pytest.mark.plugin("dicomweb", "dicom-output")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "dicomweb.py"


@pytest.mark.timeout(180)
def test_every_contender_delivers_the_whole_series_and_the_report_has_both_ratios() -> None:
    require_peer("orthanc")
    require_peer("orthanc-dicomweb")
    done = subprocess.run([sys.executable, str(SCRIPT), "--slices", "4", "--runs", "1"], capture_output=True,
                          text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]  # each contender checks the whole series arrived
    for label in ("(a) DicomOutput (C-STORE)", "(b) DicomWebOutput (STOW-RS)", "(c) node receiving Orthanc's C-STORE",
                  "(d) node receiving Orthanc's STOW-RS"):
        assert label in done.stdout
    assert len(re.findall(r"\| \d+\.\d\dx \(", done.stdout)) == 2  # the two ratios
