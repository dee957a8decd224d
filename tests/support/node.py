"""Pipelines and helpers for the node tests.

The pipeline classes live here, in an importable module, because a spawned
processing process (the ``process`` executor) and the subprocess of the
SIGKILL test import them by name. Jobs are recorded as JSON lines in the file
named by the environment variable ``DICOMNODE_TEST_RECORD`` so that a test
can see what a job in another process received.

Run as a script, it serves :class:`SlowRecordingNode` until killed::

    python node.py DATA_DIRECTORY PORT EXPECTED_IMAGES
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.grinders import ListGrinder
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.server.nodes import AbstractPipeline

RECORD = "DICOMNODE_TEST_RECORD"


def write_patient(folder: Path, patient_id: str, slices: int = 6, **options: object) -> list[Path]:
    """A small synthetic CT series of one patient written to ``folder``."""
    series = synthetic_series(patient_id=patient_id, slices=slices, rows=16, columns=16, **options)  # type: ignore[arg-type]
    return write_series(series, folder)


def record_job(input_container: InputContainer, **extra: object) -> None:
    """Append one JSON line describing the job to the file ``$DICOMNODE_TEST_RECORD``."""
    line = {
        "patient": input_container.patient_key,
        "calling_aet": input_container.calling_aet,
        "uids": sorted(str(ds.SOPInstanceUID) for ds in input_container.datasets["CT"]),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        **extra,
    }
    with open(os.environ[RECORD], "a", encoding="utf-8") as stream:
        stream.write(json.dumps(line) + "\n")


def read_jobs(path: Path) -> list[dict[str, object]]:
    """The jobs recorded in ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def wait_until(condition: object, timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll ``condition()`` until it is true or the timeout passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return bool(condition())  # type: ignore[operator]


class CT(AbstractInput):
    """Any CT image; complete with at least ``expected`` images."""

    required_values = {"Modality": "CT"}
    required_tags = ["SeriesInstanceUID"]
    image_grinder = ListGrinder()
    expected = 6

    def validate(self) -> bool:
        return self.images >= type(self).expected


class RecordingNode(AbstractPipeline):
    """Records each job in ``$DICOMNODE_TEST_RECORD``."""

    ae_title = "TESTNODE"
    ip = "127.0.0.1"
    port = 0
    input = {"CT": CT}
    maintenance_thread = False
    log_level = "WARNING"

    def process(self, input_container: InputContainer) -> PipelineOutput:
        record_job(input_container)
        return NoOutput()


class FailingNode(RecordingNode):
    """``process`` raises for patients whose key starts with ``FAIL`` (unless $DICOMNODE_TEST_HEAL)."""

    def process(self, input_container: InputContainer) -> PipelineOutput:
        if input_container.patient_key.startswith("FAIL") and not os.environ.get("DICOMNODE_TEST_HEAL"):
            raise RuntimeError(f"model exploded on {input_container.patient_key}")
        return super().process(input_container)


class CrashingNode(RecordingNode):
    """``process`` kills its own process: only survivable with the ``process`` executor."""

    def process(self, input_container: InputContainer) -> PipelineOutput:
        os._exit(3)


class SlowRecordingNode(RecordingNode):
    """Takes 20 ms per image in ``filter``, so a test can kill it while a series arrives."""

    fsync = "instance"

    def filter(self, dataset: Dataset) -> bool:
        time.sleep(0.02)
        return True


def main(argv: Sequence[str]) -> None:
    """Serve SlowRecordingNode on a data directory and port until killed."""
    data_directory, port, expected = argv[0], int(argv[1]), int(argv[2])
    CT.expected = expected
    node = SlowRecordingNode(data_directory=data_directory, port=port)
    node.open(blocking=False)
    print("READY", node.port, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1:])
