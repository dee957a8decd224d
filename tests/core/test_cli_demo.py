"""``dicomnode demo``: the README's first command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_peer
from pydicom import dcmread

from dicomnode.cli.demo import STAGES, check_copy
from dicomnode.dicom.synthetic import synthetic_series, write_series


def _demo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomnode", "demo", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})})


def _check_report(result: subprocess.CompletedProcess[str], output: Path, slices: int) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    report = result.stdout
    assert f"arrived   {slices} of {slices} result instances" in report
    for stage in STAGES:
        assert re.search(rf"\b{stage} \d+\.\d\d s", report), f"no time for {stage}:\n{report}"
    assert f"result    {output / 'result'} ({slices} files)" in report
    files = sorted((output / "result").glob("*.dcm"))
    assert len(files) == slices
    series = {str(dcmread(path, stop_before_pixels=True).SeriesInstanceUID) for path in files}
    assert len(series) == 1


def test_the_core_only_demo_delivers_a_checked_copy(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = _demo("--output", str(output), "--slices", "12", "--size", "64", "--core-only", cwd=tmp_path)
    _check_report(result, output, 12)
    assert "copy pipeline" in result.stdout
    assert "every instance carries its input slice's pixels" in result.stdout
    descriptions = {dcmread(p, stop_before_pixels=True).SeriesDescription for p in (output / "result").iterdir()}
    assert descriptions == {"dicomnode demo: copy"}


@pytest.mark.plugin("numpy", "dicom-output")
def test_with_the_plugins_the_demo_runs_the_plus_one_pipeline(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = _demo("--output", str(output), "--slices", "16", "--size", "64", cwd=tmp_path)
    _check_report(result, output, 16)
    assert "plus-one pipeline" in result.stdout
    assert "every voxel is the input + 1" in result.stdout


@pytest.mark.plugin("numpy", "dicom-output")
def test_the_plus_one_result_is_a_valid_ct_image(tmp_path: Path) -> None:
    dciodvfy = require_peer("dciodvfy")
    output = tmp_path / "out"
    assert _demo("--output", str(output), "--slices", "4", "--size", "32", cwd=tmp_path).returncode == 0
    for path in sorted((output / "result").glob("*.dcm")):
        checked = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        report = checked.stdout + checked.stderr
        assert "CTImage" in report
        assert [line for line in report.splitlines() if line.startswith("Error")] == [], report


def test_without_the_plugins_the_demo_falls_back_to_the_copy_pipeline(tmp_path: Path) -> None:
    # blocked plugins are as good as absent, so this runs whatever the session installed
    output = tmp_path / "out"
    result = _demo("--output", str(output), "--slices", "8", "--size", "32", cwd=tmp_path,
                   env={"DICOMNODE_DISABLE_PLUGINS": "numpy,dicom-output"})
    _check_report(result, output, 8)
    assert "copy pipeline (core only)" in result.stdout


def test_the_working_folder_is_removed_unless_kept(tmp_path: Path) -> None:
    removed = _demo("--output", str(tmp_path / "a"), "--slices", "4", "--size", "32", "--core-only", cwd=tmp_path)
    kept = _demo("--output", str(tmp_path / "b"), "--slices", "4", "--size", "32", "--core-only", "--keep",
                 cwd=tmp_path)
    assert removed.returncode == 0 and kept.returncode == 0, removed.stdout + kept.stdout
    assert not (tmp_path / "a" / "work").exists()
    assert (tmp_path / "b" / "work" / "data").is_dir()
    assert f"kept      the node's working folder {tmp_path / 'b' / 'work'}" in kept.stdout


def test_a_second_run_replaces_the_earlier_result(tmp_path: Path) -> None:
    output = tmp_path / "out"
    first = _demo("--output", str(output), "--slices", "6", "--size", "32", "--core-only", cwd=tmp_path)
    second = _demo("--output", str(output), "--slices", "4", "--size", "32", "--core-only", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout
    assert len(list((output / "result").glob("*.dcm"))) == 4


def test_impossible_sizes_are_refused_with_the_allowed_values(tmp_path: Path) -> None:
    result = _demo("--output", str(tmp_path / "out"), "--slices", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert "--slices must be at least 2" in result.stdout and "got 1" in result.stdout


def test_the_copy_check_finds_an_instance_with_other_pixels(tmp_path: Path) -> None:
    sent = synthetic_series(slices=3, rows=8, columns=8)
    received = write_series(synthetic_series(slices=3, rows=8, columns=8, seed=1), tmp_path)
    assert check_copy(sent, received) is None  # the phantom is deterministic: same slices, same pixels
    changed = dcmread(received[0])
    changed.PixelData = bytes(len(changed.PixelData))
    changed.save_as(received[0])
    assert "its pixels are not those of input slice" in (check_copy(sent, received) or "")
