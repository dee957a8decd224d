"""The pipeline tree: images received so far, per patient, per input.

:class:`PipelineTree` maps a patient key (the value of the pipeline's
``patient_identifier_tag``) to a :class:`PatientContainer`, which holds one
instance of each input class. When every input validates, the container is
taken out of the tree and ground into an :class:`InputContainer`, the
mapping ``process`` receives.

The tree is shared by the association threads and the workers; every method
of :class:`PipelineTree` takes its lock, and a container taken out of the
tree belongs to its job alone.

An input marked ``exclusive`` (images the node fetches itself, such as prior
studies from a PACS) takes the images it accepts away from the other inputs.
The first image a non-exclusive input accepts starts the patient: each
input's ``patient_started`` is told, with the image and the node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset

from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput
from dicomnode.net import Address

if TYPE_CHECKING:
    from dicomnode.server.nodes import AbstractPipeline

__all__ = ["PatientContainer", "PipelineTree"]

logger = logging.getLogger("dicomnode.inputs")


class PatientContainer:
    """One patient's images so far: an instance of every input class of the pipeline.

    ``node`` is the pipeline the images arrive at (None for a tree outside a
    running node); the inputs get it in ``patient_started``.
    """

    def __init__(self, patient_key: str, inputs: Mapping[str, type[AbstractInput]],
                 node: AbstractPipeline | None = None) -> None:
        self.patient_key = patient_key
        self.node = node
        self.started = False
        self.inputs: dict[str, AbstractInput] = {name: cls() for name, cls in inputs.items()}
        self.created = time.time()
        self.last_update = time.monotonic()
        self.calling_aet = ""
        self.responding_address: Address | None = None
        self._paths: dict[Path, None] = {}
        # id(dataset) -> when it arrived: the inputs each keep their own order only
        self._arrival: dict[int, int] = {}
        self._arrivals = 0

    def rejection(self, dataset: Dataset) -> str | None:
        """Why no input accepts ``dataset`` (every input's reason), or None when one does."""
        reasons = []
        for inp in self.inputs.values():
            reason = inp.rejection(dataset)
            if reason is None:
                return None
            reasons.append(reason)
        return "; ".join(reasons)

    def add_image(self, dataset: Dataset, path: Path | None = None, *, header: Dataset | None = None) -> list[str]:
        """Add the image to every input that accepts it; return their names.

        When an ``exclusive`` input accepts it, only the exclusive inputs get it.
        ``header`` is what the inputs decide on, when ``dataset`` should not be
        read for that (a LazyDataset).
        """
        routed = dataset if header is None else header
        accepting = [(name, inp) for name, inp in self.inputs.items() if inp.accepts(routed)]
        exclusive = [(name, inp) for name, inp in accepting if type(inp).exclusive]
        chosen = exclusive or accepting
        for _name, inp in chosen:
            inp.add_image(dataset, path, header=header)
        names = [name for name, _inp in chosen]
        if names:
            self._arrivals += 1
            self._arrival[id(dataset)] = self._arrivals
            self.last_update = time.monotonic()
            if path is not None:
                self._paths[path] = None
            if not exclusive and not self.started:
                self.started = True
                self._start(routed)
        return names

    def _start(self, dataset: Dataset) -> None:
        for name, inp in self.inputs.items():
            try:
                inp.patient_started(dataset, self.patient_key, self.node)
            except Exception:  # user code: the image is accepted whatever the callback does
                logger.exception("[patient %s] input %r failed in patient_started", self.patient_key, name)

    @property
    def images(self) -> int:
        """Distinct images held (an image in two inputs counts once)."""
        return len({id(ds) for inp in self.inputs.values() for ds in inp.datasets})

    @property
    def paths(self) -> list[Path]:
        """Every stored file of the patient."""
        return list(self._paths)

    def validate(self) -> bool:
        """True when every input validates."""
        return all(inp.validate() for inp in self.inputs.values())

    def datasets(self) -> list[Dataset]:
        """Every distinct dataset of the patient, in arrival order (across inputs)."""
        seen: dict[int, Dataset] = {}
        for inp in self.inputs.values():
            for dataset in inp.datasets:
                seen.setdefault(id(dataset), dataset)
        return sorted(seen.values(), key=lambda dataset: self._arrival.get(id(dataset), 0))

    def get_input_container(self) -> InputContainer:
        """Grind every input into the mapping ``process`` receives (runs the grinders)."""
        data = {name: inp.get_data() for name, inp in self.inputs.items()}
        datasets = {name: inp.datasets for name, inp in self.inputs.items()}
        paths = {name: inp.paths for name, inp in self.inputs.items()} if self._paths else None
        return InputContainer(data, datasets, paths, patient_key=self.patient_key,
                              responding_address=self.responding_address, calling_aet=self.calling_aet)

    def __repr__(self) -> str:
        return f"<PatientContainer {self.patient_key!r} {list(self.inputs.values())!r}>"


class PipelineTree:
    """Patient key -> :class:`PatientContainer`, thread-safe.

    ``node`` is the pipeline the tree belongs to, handed to each input's
    ``patient_started``.
    """

    def __init__(self, inputs: Mapping[str, type[AbstractInput]],
                 known_endpoints: Mapping[str, Address] | None = None,
                 node: AbstractPipeline | None = None) -> None:
        self.input_classes = dict(inputs)
        self.known_endpoints = dict(known_endpoints or {})
        self.node = node
        self._patients: dict[str, PatientContainer] = {}
        self._lock = threading.Lock()

    def rejection(self, patient_key: str, dataset: Dataset) -> str | None:
        """Why the image would not be accepted for this patient, or None when it would."""
        with self._lock:
            container = self._patients.get(patient_key)
            if container is None:
                container = PatientContainer(patient_key, self.input_classes, self.node)
            return container.rejection(dataset)

    def add_image(self, patient_key: str, dataset: Dataset, path: Path | None = None,
                  calling_aet: str = "", *, header: Dataset | None = None) -> list[str]:
        """Add an image for a patient; return the names of the inputs that took it (may be none).

        ``header``: what the inputs decide on instead of ``dataset`` (see
        :meth:`PatientContainer.add_image`).
        """
        with self._lock:
            container = self._patients.get(patient_key)
            if container is None:
                container = PatientContainer(patient_key, self.input_classes, self.node)
            names = container.add_image(dataset, path, header=header)
            if names:
                self._patients[patient_key] = container
                # an image fetched by the node itself (an exclusive input's) does not say
                # whom the job answers to
                if calling_aet and not type(container.inputs[names[0]]).exclusive:
                    container.calling_aet = calling_aet
                    container.responding_address = self.known_endpoints.get(calling_aet)
            return names

    def take_ready(self, keys: list[str] | None = None, stable_time: float | None = None,
                   now: float | None = None) -> list[PatientContainer]:
        """Remove and return the patients that validate (of ``keys``, or all).

        With ``stable_time``, only patients without a new image for that many
        seconds count as ready.
        """
        now = time.monotonic() if now is None else now
        ready = []
        with self._lock:
            for key in list(self._patients) if keys is None else keys:
                container = self._patients.get(key)
                if container is None:
                    continue
                if stable_time is not None and now - container.last_update < stable_time:
                    continue
                if container.validate():
                    ready.append(self._patients.pop(key))
        return ready

    def take_expired(self, older_than_seconds: float) -> list[PatientContainer]:
        """Remove and return patients whose first image arrived more than that long ago."""
        limit = time.time() - older_than_seconds
        with self._lock:
            expired = [key for key, c in self._patients.items() if c.created < limit]
            return [self._patients.pop(key) for key in expired]

    def pop(self, patient_key: str) -> PatientContainer | None:
        """Remove a patient and return it (None when absent)."""
        with self._lock:
            return self._patients.pop(patient_key, None)

    def __contains__(self, patient_key: object) -> bool:
        with self._lock:
            return patient_key in self._patients

    def __getitem__(self, patient_key: str) -> PatientContainer:
        with self._lock:
            return self._patients[patient_key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._patients)

    def keys(self) -> list[str]:
        """The patient keys held now."""
        with self._lock:
            return list(self._patients)

    def __repr__(self) -> str:
        return f"<PipelineTree patients={self.keys()!r}>"
