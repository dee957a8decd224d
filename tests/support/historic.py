"""A follow-up pipeline for the historic-input tests: today's CT plus the priors from a PACS.

:func:`follow_up_node` builds a node class whose ``history`` input asks the
given PACS; every job's InputContainer is kept in the node's ``jobs`` list
(``process`` runs on a worker thread of the same process).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pydicom import Dataset

from dicomnode.dicom.synthetic import synthetic_series, write_series
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.grinders import ListGrinder
from dicomnode.extension.inputs import AbstractInput
from dicomnode.extension.outputs import NoOutput, PipelineOutput
from dicomnode.net import Address
from dicomnode.server.nodes import AbstractPipeline
from dicomnode_historic_input import HistoricAbstractInput

NODE_AE = "HISTNODE"
TODAY = "20260301"


class TodaysCT(AbstractInput):
    """Today's CT: complete with ``expected`` images (four)."""

    required_values = {"Modality": "CT"}
    required_tags = ["SeriesInstanceUID"]
    image_grinder = ListGrinder()
    expected = 4

    def validate(self) -> bool:
        return self.images >= type(self).expected


def study(patient: str, date: str, *, slices: int = 3, description: str | None = None,
          modality: str = "CT", study_uid: str | None = None, series_number: int = 1) -> list[Dataset]:
    """One small synthetic series of ``patient`` dated ``date``."""
    return synthetic_series(patient_id=patient, study_date=date, slices=slices, rows=8, columns=8,
                            modality=modality, study_uid=study_uid, series_number=series_number,
                            series_description=description)


def write_today(folder: Path, patient: str) -> tuple[str, list[Path]]:
    """Today's four CT slices of ``patient`` as files; returns (StudyInstanceUID, paths)."""
    datasets = study(patient, TODAY, slices=4, description="today")
    return str(datasets[0].StudyInstanceUID), write_series(datasets, folder / patient)


def follow_up_node(pacs: Address, port: int, *, history: dict[str, Any] | None = None,
                   today_images: int = 4, base: type[AbstractPipeline] = AbstractPipeline,
                   history_base: type[HistoricAbstractInput] = HistoricAbstractInput,
                   **settings: Any) -> type[AbstractPipeline]:
    """A pipeline class on ``port`` whose ``history`` input asks ``pacs`` (``history``: its settings).

    The ``today`` input is complete with ``today_images`` images; ``base`` is the kind of pipeline,
    ``history_base`` the kind of historic input (``DicomWebPriors`` takes a ``url`` in ``history``).
    """
    history_class = type("History", (history_base,),
                         {"address": pacs, "timeout": 10.0, **(history or {})})
    today_class = type("Today", (TodaysCT,), {"expected": today_images})

    class FollowUp(base):  # type: ignore[valid-type,misc]
        ae_title = NODE_AE
        ip = "127.0.0.1"
        input = {"today": today_class, "history": history_class}
        maintenance_thread = False
        log_level = "WARNING"

        def post_init(self) -> None:
            self.jobs: list[InputContainer] = []
            self._jobs_lock = threading.Lock()

        def process(self, input_container: InputContainer) -> PipelineOutput:
            # images restored after a restart are read from their files on first use, and the
            # files go when the job succeeds: read them now, so a test can look at them later
            for name in input_container:
                for dataset in input_container.datasets[name]:
                    dataset.get("StudyDate")
            with self._jobs_lock:
                self.jobs.append(input_container)
            return NoOutput()

    FollowUp.port = port
    for name, value in settings.items():
        setattr(FollowUp, name, value)
    return FollowUp


def wait_for_jobs(node: Any, count: int, timeout: float = 30.0) -> list[InputContainer]:
    """Wait until the node has run ``count`` jobs (and they are finished); return them."""
    deadline = time.monotonic() + timeout
    while len(node.jobs) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    node.wait_for_jobs(timeout)
    return list(node.jobs)


def shape(priors: Any) -> dict[str, dict[str, int]]:
    """A Priors mapping as {study date: {series description: image count}}."""
    return {date: {description: len(items) for description, items in series.items()}
            for date, series in priors.items()}
