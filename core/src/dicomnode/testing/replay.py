"""Replay: feed recorded images through a pipeline offline, and see what it would deliver.

::

    result = replay(MyNode, "recorded/study-42")
    (job,) = result.jobs
    assert job.error == ""
    sent = job.datasets()            # every dataset the job's outputs would send

The images go through the node's own ingest (the same checks, routing and
inputs as C-STOREs), complete patients are ground and processed with the
pipeline's executor, and the outputs ``process`` returns are collected —
not sent. Nothing is written: the node runs without a data directory and
never listens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
from pydicom import Dataset, dcmread

from dicomnode.errors import ProcessingError
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.handles import IngestResult
from dicomnode.extension.outputs import PipelineOutput
from dicomnode.server.runner import new_job_id

__all__ = ["Replay", "ReplayedJob", "replay"]


@attrs.frozen
class ReplayedJob:
    """One patient's job: what ``process`` got and returned, or why it failed."""

    patient_key: str
    input_container: InputContainer | None
    outputs: tuple[PipelineOutput, ...] = ()
    error: str = ""

    def datasets(self) -> list[Dataset]:
        """Every dataset the outputs would send (files read), in order."""
        result = []
        for output in self.outputs:
            for item in output.outgoing_datasets():
                result.append(item if isinstance(item, Dataset) else dcmread(item))
        return result


@attrs.frozen
class Replay:
    """What a replay did: the jobs, the images the node would refuse or discard, the patients left incomplete."""

    jobs: tuple[ReplayedJob, ...]
    not_taken: tuple[tuple[Path, IngestResult], ...] = ()
    incomplete: tuple[str, ...] = ()


def _files(source: Path | str | Sequence[Path | str]) -> list[Path]:
    if isinstance(source, (str, Path)):
        root = Path(source)
        if root.is_dir():
            return sorted(path for path in root.rglob("*") if path.is_file() and not path.name.startswith("."))
        return [root]
    return [Path(item) for item in source]


def replay(pipeline: Callable[..., Any], source: Path | str | Sequence[Path | str], *,
           calling_aet: str = "REPLAY", **overrides: Any) -> Replay:
    """Feed the DICOM files of ``source`` (a folder, searched recursively, or files) through ``pipeline``.

    ``pipeline`` is a pipeline class (or a pipeline declared in TOML);
    ``overrides`` are settings for this run. Returns the jobs with their
    outputs, unsent.
    """
    node = pipeline(data_directory=None, lazy_storage=False, fsync="none", maintenance_thread=False,
                    **overrides)
    not_taken = []
    try:
        for path in _files(source):
            result = node.ingest(path, calling_aet=calling_aet, kind="replay")
            if not result.stored:
                not_taken.append((path, result))
        jobs = []
        for container in node.tree.take_ready(None, None):
            try:
                input_container, outputs, _ = node.runner.prepare(container, new_job_id())
            except ProcessingError as error:
                jobs.append(ReplayedJob(container.patient_key, None, (), f"{error.reason}\n{error.traceback}"))
                continue
            jobs.append(ReplayedJob(container.patient_key, input_container, tuple(outputs)))
        return Replay(tuple(jobs), tuple(not_taken), tuple(node.tree.keys()))
    finally:
        node.runner.close(5.0)
