"""``dicomnode demo``: a real node, end to end, on a synthetic CT study, in a few seconds.

What happens::

    synthetic CT ──C-STORE──> demo node (127.0.0.1, free port) ──C-STORE──> demo destination
                              CT input -> grind -> process -> build -> send        (writes files)

1. A synthetic CT study is generated (nothing is downloaded).
2. A destination (a small storage SCP that writes what it receives into
   ``OUTPUT/result``) and the demo node start on free loopback ports. The
   node keeps what it receives in a data directory, as a clinical node would.
3. The study is sent to the node with C-STORE; the node sees the patient
   complete, grinds, processes, builds a new series and sends it on.
4. The report says what arrived, how long each stage took, where the result
   is, and checks the result.

With the ``numpy`` and ``dicom-output`` plugins installed the node is the
*plus-one* pipeline: ``NumpyGrinder`` -> add 1 to every voxel ->
``NumpyFactory`` -> ``DicomOutput``. With the core alone it is a *copy*
pipeline: ``ListGrinder`` -> a derived copy of the series with new UIDs ->
C-STORE. The exit status is 0 when the whole result arrived and checks out,
1 otherwise, with a message that says what is missing.
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from dicomnode.errors import PluginError

__all__ = ["configure", "run_demo"]

STAGES = ("ingest", "wait", "grind", "process", "build", "send")
NODE_AE = "DEMONODE"
DESTINATION_AE = "DEMODEST"
SENDER_AE = "DEMOSCANNER"


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode demo`` and return its handler."""
    parser.add_argument("--output", type=Path, default=Path("dicomnode-demo"),
                        help="folder for the result (default: ./dicomnode-demo)")
    parser.add_argument("--slices", type=int, default=48, help="slices of the synthetic CT (default 48)")
    parser.add_argument("--size", type=int, default=256, help="rows and columns of each slice (default 256)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the node's working folder (data directory) in OUTPUT/work")
    parser.add_argument("--core-only", action="store_true",
                        help="run the copy pipeline even when the numpy and dicom-output plugins are installed")
    parser.add_argument("--timeout", type=float, default=50.0,
                        help="seconds to wait for the result to arrive (default 50)")
    return _run


# --- timing ----------------------------------------------------------------------------------------


class StageClock:
    """Seconds spent per stage, recorded from the node's worker and the demo's own thread."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.marks: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``."""
        with self._lock:
            self.seconds[stage] += seconds

    def mark(self, name: str) -> None:
        """Remember the first time ``name`` happened."""
        with self._lock:
            self.marks.setdefault(name, time.perf_counter())


class TimedGrinder:
    """A grinder that adds its time to the clock's ``grind`` stage (and marks when grinding began)."""

    def __init__(self, grinder: Callable[[Iterable[Any]], Any], clock: StageClock) -> None:
        self.grinder = grinder
        self.clock = clock

    def __call__(self, datasets: Iterable[Any]) -> Any:
        self.clock.mark("job started")
        start = time.perf_counter()
        try:
            return self.grinder(datasets)
        finally:
            self.clock.add("grind", time.perf_counter() - start)


# --- the destination --------------------------------------------------------------------------------


class Destination:
    """A storage SCP on a free loopback port that writes every instance it receives to a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.received: list[Path] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self.port = 0

    def _on_store(self, event: Any) -> int:
        from pydicom.filebase import DicomFileLike
        from pydicom.filewriter import write_file_meta_info

        sop_uid = str(event.request.AffectedSOPInstanceUID)
        path = self.folder / f"{sop_uid}.dcm"
        # the bytes as they arrived, with the file meta: nothing is decoded or re-encoded
        with open(path, "wb") as stream:
            stream.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(DicomFileLike(stream), event.file_meta, enforce_standard=True)
            stream.write(event.request.DataSet.getvalue())
        with self._lock:
            self.received.append(path)
        return 0x0000

    def start(self) -> None:
        """Listen on a free loopback port."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        self.folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=DESTINATION_AE)
        ae.maximum_pdu_size = 0
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        self._server = ae.start_server(("127.0.0.1", 0), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @property
    def count(self) -> int:
        """How many instances arrived so far."""
        with self._lock:
            return len(self.received)


# --- the pipelines ------------------------------------------------------------------------------


def _plugins_available() -> bool:
    from dicomnode.plugins import get_registry

    registry = get_registry()
    try:
        registry.grinder("numpy")
        registry.output("dicom")
    except PluginError:
        return False
    return True


def _timed_output(output: Any, clock: StageClock) -> Any:
    """Wrap an output's ``send`` so its time goes to the ``send`` stage."""
    inner_send = output.send

    def send() -> bool:
        start = time.perf_counter()
        try:
            return bool(inner_send())
        finally:
            clock.add("send", time.perf_counter() - start)

    output.send = send
    return output


def _demo_node(grinder: Any, clock: StageClock, slices: int, data: Path) -> type[Any]:
    """The demo node both pipelines share: one CT input, complete at ``slices`` images, timed grinding."""
    from dicomnode.extension.inputs import AbstractInput
    from dicomnode.server.nodes import AbstractPipeline

    class CT(AbstractInput):
        required_values = {"Modality": "CT"}
        image_grinder = TimedGrinder(grinder, clock)

        def validate(self) -> bool:
            return self.images >= slices

    class DemoNode(AbstractPipeline):
        ae_title = NODE_AE
        ip = "127.0.0.1"
        port = 0
        input = {"CT": CT}
        data_directory = str(data)
        maintenance_thread = False
        log_level = "WARNING"

    return DemoNode


def plus_one_pipeline(clock: StageClock, destination: Any, slices: int, data: Path) -> type[Any]:
    """NumpyGrinder -> +1 -> NumpyFactory -> DicomOutput (needs the numpy and dicom-output plugins)."""
    from dicomnode.dicom.blueprints import CT_IMAGE_BLUEPRINT, DEFAULT_BLUEPRINT
    from dicomnode.dicom.factory import Blueprint, StaticElement
    from dicomnode.plugins import get_registry

    # by their registered names: the command line never imports a plugin itself
    registry = get_registry()
    NumpyGrinder: Any = registry.grinder("numpy")
    DicomOutput: Any = registry.output("dicom")
    blueprint = DEFAULT_BLUEPRINT + CT_IMAGE_BLUEPRINT + Blueprint([
        StaticElement("SeriesDescription", "LO", "dicomnode demo: plus one"),
    ])
    factory = NumpyGrinder.series_factory(pipeline_name="dicomnode-demo")

    class PlusOneDemo(_demo_node(NumpyGrinder(), clock, slices, data)):  # type: ignore[misc]
        def process(self, input_container: Any) -> Any:
            import attrs

            start = time.perf_counter()
            volume = input_container["CT"]
            result = attrs.evolve(volume, array=volume.array + 1)
            clock.add("process", time.perf_counter() - start)
            start = time.perf_counter()
            header = factory.build_series_header(input_container.datasets["CT"], blueprint)
            datasets = factory.build_series(result, header)
            clock.add("build", time.perf_counter() - start)
            return _timed_output(DicomOutput([(destination, datasets)], NODE_AE, attempts=2), clock)

    return PlusOneDemo


def copy_pipeline(clock: StageClock, destination: Any, slices: int, data: Path) -> type[Any]:
    """ListGrinder -> a derived copy with new UIDs -> C-STORE (the core alone)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from dicomnode.extension.grinders import ListGrinder
    from dicomnode.extension.outputs import PipelineOutput
    from dicomnode.net import send_datasets

    class SendOutput(PipelineOutput):
        """C-STORE with the core's client; the job fails (and is quarantined) unless all arrive."""

        def __init__(self, datasets: Sequence[Any]) -> None:
            self.datasets = datasets

        def send(self) -> bool:
            return send_datasets(destination, self.datasets, ae_title=NODE_AE).ok

    class CopyDemo(_demo_node(ListGrinder(), clock, slices, data)):  # type: ignore[misc]
        def process(self, input_container: Any) -> Any:
            start = time.perf_counter()
            series = input_container["CT"]
            clock.add("process", time.perf_counter() - start)
            start = time.perf_counter()
            series_uid = generate_uid()
            copies = []
            for parent in series:
                child = copy.copy(parent)  # shares the parent's elements; only the UIDs below differ
                child.SOPInstanceUID = generate_uid()
                child.file_meta = FileMetaDataset()
                child.file_meta.MediaStorageSOPClassUID = parent.SOPClassUID
                child.file_meta.MediaStorageSOPInstanceUID = child.SOPInstanceUID
                child.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                child.SeriesInstanceUID = series_uid
                child.SeriesDescription = "dicomnode demo: copy"
                child.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
                copies.append(child)
            clock.add("build", time.perf_counter() - start)
            return _timed_output(SendOutput(copies), clock)

    return CopyDemo


# --- checking the result ----------------------------------------------------------------------


def check_plus_one(sent: Sequence[Any], received: Sequence[Path]) -> str | None:
    """None when the received series is the sent one + 1 everywhere, else what differs."""
    import numpy as np
    from pydicom import dcmread

    from dicomnode.plugins import get_registry

    NumpyGrinder: Any = get_registry().grinder("numpy")
    before = NumpyGrinder()(sent).array.astype(np.float64)
    after = NumpyGrinder()([dcmread(path) for path in received]).array.astype(np.float64)
    if before.shape != after.shape:
        return f"the result has shape {after.shape}, the input {before.shape}"
    worst = float(np.max(np.abs(after - (before + 1))))
    if worst > 1e-3:
        return f"the result differs from input + 1 by up to {worst:g}"
    return None


def check_copy(sent: Sequence[Any], received: Sequence[Path]) -> str | None:
    """None when every received instance carries the pixels of the sent slice of the same number."""
    from pydicom import dcmread

    pixels = {int(ds.InstanceNumber): bytes(ds.PixelData) for ds in sent}
    for path in received:
        ds = dcmread(path)
        if pixels.get(int(ds.InstanceNumber)) != bytes(ds.PixelData):
            return f"{path.name}: its pixels are not those of input slice {ds.InstanceNumber}"
    return None


# --- the run -------------------------------------------------------------------------------------


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def run_demo(output: Path, *, slices: int = 48, size: int = 256, keep: bool = False,
             core_only: bool = False, timeout: float = 50.0, out: Any = None) -> int:
    """Run the demo; print the report to ``out`` (stdout); return the exit status."""
    from dicomnode.dicom.synthetic import synthetic_series
    from dicomnode.net import Address, send_datasets

    stream = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    if slices < 2 or size < 8:
        say(f"dicomnode demo: --slices must be at least 2 and --size at least 8, got {slices} and {size}")
        return 2
    output = output.resolve()
    result_folder = output / "result"
    if result_folder.exists():
        shutil.rmtree(result_folder)  # the result of an earlier run would be counted again
    output.mkdir(parents=True, exist_ok=True)
    work = output / "work" if keep else Path(tempfile.mkdtemp(prefix="dicomnode-demo-"))
    if keep and work.exists():
        shutil.rmtree(work)
    plus_one = not core_only and _plugins_available()
    clock = StageClock()

    started = time.perf_counter()
    series = synthetic_series(slices=slices, rows=size, columns=size, patient_id="DEMO001",
                              patient_name="Demo^Patient", series_description="dicomnode demo input")
    generated = time.perf_counter() - started
    destination = Destination(result_folder)
    destination.start()
    address = Address("127.0.0.1", destination.port, DESTINATION_AE)
    build = plus_one_pipeline if plus_one else copy_pipeline
    pipeline = build(clock, address, slices, work / "data")
    node = pipeline()
    title = ("plus-one pipeline: NumpyGrinder -> +1 -> NumpyFactory -> DicomOutput" if plus_one else
             "copy pipeline (core only): ListGrinder -> derived copy -> C-STORE")
    say(f"dicomnode demo: {title}")
    say(f"  study     {slices} CT slices of {size}x{size}, patient DEMO001, generated in {generated:.2f} s")
    problem: str | None = None
    try:
        node.open(blocking=False)
        say(f"  node      {NODE_AE} on 127.0.0.1:{node.port}, data directory {work / 'data'}")
        say(f"  sending   to the node with C-STORE; the result goes to {DESTINATION_AE} on 127.0.0.1:{destination.port}")
        start = time.perf_counter()
        sent = send_datasets(node.address, series, ae_title=SENDER_AE)
        clock.add("ingest", time.perf_counter() - start)
        clock.mark("ingest done")
        if not sent.ok:
            problem = f"the node did not accept the study: {sent}"
        elif not _wait(lambda: destination.count >= slices or node.jobs_failed > 0, timeout):
            problem = f"only {destination.count} of {slices} result instances arrived within {timeout:g} s"
        elif node.jobs_failed:
            problem = "the job failed; the node's log above says why"
        node.wait_for_jobs(timeout)
    finally:
        node.close()
        destination.stop()
    if "job started" in clock.marks and "ingest done" in clock.marks:
        clock.add("wait", max(0.0, clock.marks["job started"] - clock.marks["ingest done"]))
    total = time.perf_counter() - started
    received = sorted(destination.received)
    if problem is None:
        check = check_plus_one if plus_one else check_copy
        problem = check(series, received)
    say(f"  arrived   {len(received)} of {slices} result instances at {DESTINATION_AE}")
    say("  stages    " + " | ".join(f"{stage} {clock.seconds[stage]:.2f} s" for stage in STAGES)
        + f" | total {total:.2f} s")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    if problem is not None:
        say(f"  FAILED    {problem}")
        return 1
    what = "every voxel is the input + 1" if plus_one else "every instance carries its input slice's pixels"
    say(f"  check     {what}")
    say(f"  result    {result_folder} ({len(received)} files)")
    if keep:
        say(f"  kept      the node's working folder {work}")
    return 0


def _run(args: argparse.Namespace) -> int:
    # the node's own handler prints its warnings; the CLI's root handler would print them twice
    logging.getLogger("dicomnode").propagate = False
    return run_demo(args.output, slices=args.slices, size=args.size, keep=args.keep,
                    core_only=args.core_only, timeout=args.timeout)
