"""Pipelines for the Dask tests: importable by name from the workers, which record what they do in files.

A worker process cannot be told anything per test except through the job
itself, so the patient key chooses how ``process`` behaves:

``FAIL…``
    raises (the job goes to the quarantine with the worker's traceback);
``HOLD…``
    waits until the file ``<record_dir>/<key>.release`` exists (at most 60 s);
``FIRSTSLOW<seconds>…``
    sleeps that long the first time the patient is processed, not later;
anything else
    returns at once.

:class:`VolumeNode` does the same on a numpy volume (the ``Stack`` grinder),
adds 1 to it in place and sends it back with the datasets in an ``Echo``
output, which the node keeps in :data:`ECHOED`.

Every step is one JSON line in ``<record_dir>/<key>.jsonl``: ``started`` and
``finished`` (on the worker, with its PID), ``delivered`` (the output's
``send`` on the node). ``setup_worker`` writes a line to
``<record_dir>/setup.jsonl``. The record folder comes from the environment
variable ``DICOMNODE_DASK_RECORD``, which the cluster fixture sets for the
workers and the test process alike.

Run as a script, it serves :class:`ClusterNode` until killed::

    python dask_pipelines.py DATA_DIRECTORY PORT SCHEDULER_ADDRESS
"""

from __future__ import annotations

import json
import mmap
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset

from dicomnode.extension.containers import InputContainer
from dicomnode.extension.grinders import Grinder, ListGrinder
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import PipelineOutput
from dicomnode.server.nodes import AbstractPipeline

RECORD = "DICOMNODE_DASK_RECORD"


def record_dir() -> Path:
    return Path(os.environ[RECORD])


def record(name: str, event: str, **extra: object) -> None:
    """Append one JSON line to ``<record_dir>/<name>.jsonl``."""
    line = {"event": event, "pid": os.getpid(), "time": time.time(), **extra}
    with open(record_dir() / f"{name}.jsonl", "a", encoding="utf-8") as stream:
        stream.write(json.dumps(line) + "\n")


def events(name: str, event: str | None = None) -> list[dict[str, object]]:
    """The lines recorded for ``name`` (only those of ``event`` when given)."""
    path = record_dir() / f"{name}.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [line for line in lines if event is None or line["event"] == event]


def release(name: str) -> None:
    """Let a ``HOLD…`` patient's process() return."""
    (record_dir() / f"{name}.release").touch()


class Delivered(PipelineOutput):
    """Made on the worker, sent on the node: records the delivery."""

    def __init__(self, patient_key: str, worker_pid: int) -> None:
        self.patient_key = patient_key
        self.worker_pid = worker_pid

    def send(self) -> bool:
        record(self.patient_key, "delivered", worker=self.worker_pid)
        return True


class CT(AbstractInput):
    """Any CT image; complete with two."""

    required_values = {"Modality": "CT"}
    required_tags = ["SeriesInstanceUID"]
    image_grinder = ListGrinder()

    def validate(self) -> bool:
        return self.images >= 2


class ClusterNode(AbstractPipeline):
    """Runs its jobs with the executor ``dask``; ``process`` behaves as the patient key says."""

    ae_title = "DASKNODE"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT}
    maintenance_thread = False
    executor = "dask"
    close_timeout = 5.0

    def setup_worker(self) -> None:
        record("setup", "setup_worker")

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        key = input_container.patient_key
        first = not events(key, "started")
        record(key, "started", images=len(input_container["CT"]))
        _behave(key, first)
        record(key, "finished")
        return Delivered(key, os.getpid())


def _behave(key: str, first: bool) -> None:
    """Raise, wait or sleep as the patient key says (see the module docstring)."""
    if key.startswith("FAIL"):
        raise RuntimeError(f"model exploded on {key}")
    if key.startswith("HOLD"):
        deadline = time.monotonic() + 60
        while not (record_dir() / f"{key}.release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    slow = re.match(r"FIRSTSLOW(\d+)", key)
    if slow and first:
        time.sleep(float(slow.group(1)))


class Stack(Grinder):
    """The pixel arrays of the images, in order of InstanceNumber, stacked into one volume."""

    def __call__(self, datasets: Iterable[Dataset]) -> Any:
        import numpy

        ordered = sorted(datasets, key=lambda dataset: int(dataset.InstanceNumber))
        return numpy.stack([dataset.pixel_array for dataset in ordered])


class Volume(AbstractInput):
    """A CT series as a numpy volume (and its datasets); complete with two images."""

    required_values = {"Modality": "CT"}
    image_grinder = Stack()

    def validate(self) -> bool:
        return self.images >= 2


#: the outputs of VolumeNode as the node received them, by patient key (the node is the test process)
ECHOED: dict[str, Echo] = {}


class Echo(PipelineOutput):
    """Made on the worker from its inputs; on the node, kept in ECHOED for the test to compare."""

    def __init__(self, patient_key: str, volume: Any, datasets: list[Dataset]) -> None:
        self.patient_key = patient_key
        self.volume = volume
        self.datasets = datasets

    def send(self) -> bool:
        ECHOED[self.patient_key] = self
        record(self.patient_key, "delivered")
        return True


def in_shared_memory(array: Any) -> bool:
    """Whether a numpy array views a memory mapping (the node's shared memory) rather than memory of its own."""
    base = array
    while getattr(base, "base", None) is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


class VolumeNode(ClusterNode):
    """Like ClusterNode, on a numpy volume: ``process`` adds 1 to it in place and echoes it with the datasets."""

    ae_title = "VOLUMENODE"
    input = {"CT": Volume}

    def process(self, input_container: InputContainer) -> PipelineOutput | Sequence[PipelineOutput]:
        key = input_container.patient_key
        volume = input_container["CT"]
        record(key, "started", images=len(volume), shared=in_shared_memory(volume))
        _behave(key, first=len(events(key, "started")) == 1)
        volume += 1  # in place, as a model's preprocessing may do
        record(key, "finished")
        return Echo(key, volume, list(input_container.datasets["CT"]))


def main(argv: Sequence[str]) -> None:
    """Serve ClusterNode on a data directory and port, with the scheduler at an address, until killed."""
    import dask_pipelines  # the class by its module's name, not __main__'s: workers import it by that name

    data_directory, port, address = argv[0], int(argv[1]), argv[2]
    node = dask_pipelines.ClusterNode(data_directory=data_directory, port=port, log_level="INFO",
                       executor_settings={"address": address, "connect_timeout": 5})
    node.open(blocking=False)
    print("READY", node.port, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1:])
