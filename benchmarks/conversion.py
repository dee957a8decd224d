"""DICOM -> NIfTI and DICOM -> numpy: NiftiGrinder vs dcm2niix vs dicom2nifti, NumpyGrinder vs a naive loop.

The series is a generated 300-slice 512x512 CT (12-bit stored values,
intercept -1024), written once to ``benchmarks/.data/conversion-ct``; the
many-small-files scenario is a generated 2,000-file 128x128 MR series (40
slices x 50 volumes, as a DWI or fMRI series is), written once to
``benchmarks/.data/conversion-dwi``, converted by NiftiGrinder (LazyDataset
per file) and by dcm2niix, side by side.

Wall time, each scenario listing the same folder, reading its files (from
the page cache) and writing an uncompressed ``.nii``:

- ``NiftiGrinder``: a ``LazyDataset`` per file, as a node with its images on
  disk hands them over (the header is parsed, the pixel data are read
  straight into the volume), grind, ``to_filename``; in this (warm) Python
  process;
- ``NiftiGrinder (dcmread)``: the same from datasets ``dcmread`` reads whole;
- ``dcm2niix -z n -b n``: the reference converter, as a subprocess;
- ``dicom2nifti.convert_directory`` (no reorientation, uncompressed), in
  this process.

After the timed runs the outputs of NiftiGrinder and dcm2niix are compared
(affine, stored type, scaling, voxels), so the timings are of the same result.

NumpyGrinder vs a naive loop (sort by z, ``pixel_array * slope +
intercept`` per slice, ``np.stack``): wall time from files, and the peak of
memory allocated (``tracemalloc``) while grinding datasets already in memory,
as a multiple of the volume's size. With ``LazyDataset`` inputs the whole
read-and-grind peak is shown too.

Every scenario runs once to warm up, then ``--runs`` times interleaved
(A B C A B C ...); medians with min-max and ratios are printed as Markdown.

    python benchmarks/conversion.py --runs 5
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom import dcmread

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from geometry_series import SeriesSpec, build_series, write_series  # noqa: E402

DATA = HERE / ".data" / "conversion-ct"
WORK = HERE / ".work"
SPEC = SeriesSpec("benchmark-ct", rows=512, columns=512, slices=300, slice_spacing=1.0,
                  pixel_spacing=(0.7, 0.7), seed=7)
SMALL_FILES = HERE / ".data" / "conversion-dwi"
SMALL_FILES_SPEC = SeriesSpec("benchmark-dwi", modality="MR", rows=128, columns=128, slices=40, volumes=50,
                              slice_spacing=3.0, pixel_spacing=(2.0, 2.0), shuffle=True, seed=3)


def series() -> list[Path]:
    """The benchmark series on disk, generated on first use."""
    marker = DATA / "complete"
    if not marker.exists():
        shutil.rmtree(DATA, ignore_errors=True)
        write_series(build_series(SPEC.with_(shuffle=True)), DATA)
        marker.write_text("300 slices\n")
    return sorted(DATA.glob("*.dcm"))


def small_files() -> Path:
    """The 2,000-file series on disk, generated on first use."""
    marker = SMALL_FILES / "complete"
    if not marker.exists():
        shutil.rmtree(SMALL_FILES, ignore_errors=True)
        write_series(build_series(SMALL_FILES_SPEC), SMALL_FILES)
        marker.write_text("2000 files\n")
    return SMALL_FILES


def run_nifti_grinder_small_files(paths: list[Path], out: Path) -> None:
    from dicomnode.dicom.lazy import LazyDataset
    from dicomnode_nifti import NiftiGrinder

    NiftiGrinder()([LazyDataset(path) for path in SMALL_FILES.glob("*.dcm")]).to_filename(out / "grinder.nii")


def run_dcm2niix_small_files(paths: list[Path], out: Path) -> None:
    subprocess.run([dcm2niix_program(), "-z", "n", "-b", "n", "-f", "dcm2niix", "-o", str(out), str(SMALL_FILES)],
                   check=True, capture_output=True)


SMALL_FILES_SCENARIOS = {"NiftiGrinder": run_nifti_grinder_small_files, "dcm2niix -z n": run_dcm2niix_small_files}


def dcm2niix_program() -> str:
    local = Path(sys.executable).parent / "dcm2niix"
    return str(local) if local.exists() else (shutil.which("dcm2niix") or "dcm2niix")


def listed() -> list[Path]:
    """The folder's DICOM files, listed as the converters that are given the folder list it."""
    return list(DATA.glob("*.dcm"))


def run_nifti_grinder(paths: list[Path], out: Path) -> None:
    from dicomnode.dicom.lazy import LazyDataset
    from dicomnode_nifti.grinder import NiftiGrinder

    NiftiGrinder()([LazyDataset(path) for path in listed()]).to_filename(out / "grinder.nii")


def run_nifti_grinder_dcmread(paths: list[Path], out: Path) -> None:
    from dicomnode_nifti.grinder import NiftiGrinder

    NiftiGrinder()([dcmread(path) for path in listed()]).to_filename(out / "grinder.nii")


def run_dcm2niix(paths: list[Path], out: Path) -> None:
    subprocess.run([dcm2niix_program(), "-z", "n", "-b", "n", "-f", "dcm2niix", "-o", str(out), str(DATA)],
                   check=True, capture_output=True)


def run_dicom2nifti(paths: list[Path], out: Path) -> None:
    import dicom2nifti

    dicom2nifti.convert_directory(str(DATA), str(out), compression=False, reorient=False)


def naive_stack(datasets: list) -> np.ndarray:
    """What a first attempt looks like: sort by z, rescale every slice, stack."""
    ordered = sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ordered])


def run_numpy_grinder(paths: list[Path], out: Path) -> None:
    from dicomnode_numpy.grinder import NumpyGrinder

    NumpyGrinder()([dcmread(path) for path in paths])


def run_numpy_grinder_lazy(paths: list[Path], out: Path) -> None:
    from dicomnode.dicom.lazy import LazyDataset
    from dicomnode_numpy.grinder import NumpyGrinder

    NumpyGrinder()([LazyDataset(path) for path in paths])


def same_as_dcm2niix() -> str:
    """Convert once with NiftiGrinder and dcm2niix and say whether the two files hold the same image."""
    import nibabel as nib

    out = Path(tempfile.mkdtemp(prefix="conversion-check-", dir=WORK))
    try:
        run_nifti_grinder([], out)
        run_dcm2niix([], out)
        mine, reference = nib.load(out / "grinder.nii"), nib.load(out / "dcm2niix.nii")
        checks = {
            "shape": mine.shape == reference.shape,
            "affine within 1e-3 mm": bool(np.abs(mine.affine - reference.affine).max() <= 1e-3),
            "stored type": mine.get_data_dtype() == reference.get_data_dtype(),
            "scl_slope/scl_inter": (mine.dataobj.slope, mine.dataobj.inter)
            == (reference.dataobj.slope, reference.dataobj.inter),
            "voxels": bool(np.array_equal(np.asarray(mine.dataobj.get_unscaled()),
                                          np.asarray(reference.dataobj.get_unscaled()))),
        }
    finally:
        shutil.rmtree(out)
    failed = [name for name, ok in checks.items() if not ok]
    return "same image as dcm2niix's (" + ", ".join(checks) + ")" if not failed \
        else "DIFFERENT from dcm2niix's: " + ", ".join(failed)


def run_naive(paths: list[Path], out: Path) -> None:
    naive_stack([dcmread(path) for path in paths])


def timed(scenarios: dict[str, Callable[[list[Path], Path], None]], paths: list[Path], runs: int
          ) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in scenarios}
    for round_number in range(runs + 1):
        for name, scenario in scenarios.items():
            out = Path(tempfile.mkdtemp(prefix="conversion-", dir=WORK))
            gc.collect()
            start = time.perf_counter()
            scenario(paths, out)
            elapsed = time.perf_counter() - start
            shutil.rmtree(out)
            if round_number > 0:  # the first round is the warm-up
                times[name].append(elapsed)
    return times


def peak_bytes(work: Callable[[], object]) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    try:
        result = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


def _in_memory_peaks(paths: list[Path]) -> tuple[int, int, int, int]:
    from dicomnode_numpy.grinder import NumpyGrinder

    datasets = [dcmread(path) for path in paths]
    grinder_peak, volume = peak_bytes(lambda: NumpyGrinder()(datasets))
    naive_peak, stacked = peak_bytes(lambda: naive_stack(datasets))
    return grinder_peak, volume.array.nbytes, naive_peak, stacked.nbytes  # type: ignore[attr-defined]


def memory(paths: list[Path]) -> list[tuple[str, float, float]]:
    from dicomnode_numpy.grinder import NumpyGrinder

    grinder_peak, size, naive_peak, naive_size = _in_memory_peaks(paths)
    print(f"(volume: int16, {size / 2**20:.0f} MiB; the naive loop returns float64, "
          f"{naive_size / 2**20:.0f} MiB)\n")
    rows = [
        ("NumpyGrinder, datasets in memory", grinder_peak / 2**20, grinder_peak / size),
        ("naive loop, datasets in memory", naive_peak / 2**20, naive_peak / size),
    ]
    eager_peak, _ = peak_bytes(lambda: NumpyGrinder()([dcmread(path) for path in paths]))
    rows.append(("NumpyGrinder, dcmread files (read + grind)", eager_peak / 2**20, eager_peak / size))
    try:
        from dicomnode.dicom.lazy import LazyDataset
    except ImportError:
        return [*rows, ("(LazyDataset not available)", float("nan"), float("nan"))]
    lazy_peak, _ = peak_bytes(lambda: NumpyGrinder()([LazyDataset(path) for path in paths]))
    rows.append(("NumpyGrinder, LazyDataset files (read + grind)", lazy_peak / 2**20, lazy_peak / size))
    return rows


def table(times: dict[str, list[float]], reference: str) -> None:
    base = statistics.median(times[reference])
    print("| scenario | median (s) | min–max (s) | ratio to " + reference + " |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {min(values):.3f}–{max(values):.3f} | {median / base:.2f} |")
    print()


def paired_ratio(times: dict[str, list[float]], slower: str, faster: str) -> str:
    """``slower`` time / ``faster`` time of the same round: median (min-max) over the rounds."""
    ratios = [a / b for a, b in zip(times[slower], times[faster], strict=True)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="counted runs per scenario (default 5)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    paths = series()
    version = subprocess.run([dcm2niix_program(), "--version"], capture_output=True, text=True).stdout.strip()
    print(f"300-slice 512x512 CT, {args.runs} interleaved runs after a warm-up; {version.splitlines()[-1]}\n")
    print("DICOM -> .nii (read, convert, write):\n")
    nifti = timed({"NiftiGrinder": run_nifti_grinder, "NiftiGrinder (dcmread)": run_nifti_grinder_dcmread,
                   "dcm2niix -z n": run_dcm2niix, "dicom2nifti": run_dicom2nifti}, paths, args.runs)
    table(nifti, "dcm2niix -z n")
    for grinder in ("NiftiGrinder", "NiftiGrinder (dcmread)"):
        print(f"- {grinder}: dicom2nifti / this {paired_ratio(nifti, 'dicom2nifti', grinder)}, "
              f"this / dcm2niix {paired_ratio(nifti, grinder, 'dcm2niix -z n')} (round by round)")
    print()
    print(f"NiftiGrinder's .nii: {same_as_dcm2niix()}\n")
    small_files()
    print("2,000-file 128x128 MR series (40 slices x 50 volumes) -> .nii:\n")
    many = timed(SMALL_FILES_SCENARIOS, [], args.runs)
    table(many, "dcm2niix -z n")
    print(f"- NiftiGrinder / dcm2niix {paired_ratio(many, 'NiftiGrinder', 'dcm2niix -z n')} (round by round)\n")
    print("DICOM -> numpy volume (read + grind):\n")
    table(timed({"NumpyGrinder": run_numpy_grinder, "NumpyGrinder (LazyDataset)": run_numpy_grinder_lazy,
                 "naive loop": run_naive}, paths, args.runs), "naive loop")
    print("Peak memory allocated while grinding:\n")
    rows = memory(paths)
    print("| scenario | peak (MiB) | peak / volume size |")
    print("|---|---|---|")
    for name, mib, ratio in rows:
        print(f"| {name} | {mib:.0f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
