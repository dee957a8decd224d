"""The pipeline tree: images received so far, per patient, per input.

:class:`PipelineTree` maps a patient key (the value of the pipeline's
``patient_identifier_tag``) to a :class:`PatientContainer`, which holds one
instance of each input class. When every input validates, the container is
taken out of the tree and ground into an :class:`InputContainer`, the
mapping ``process`` receives.

The tree is shared by the association threads and the job threads. Each
patient has a lock of its own: :meth:`PipelineTree.patient` holds it while
an instance is checked, stored and added (so the decision and the add see the
same state, and two patients never wait for each other), and a job takes a
patient out of the tree only under that lock — an image is either in the job
or waits for the next one, never lost between them. A container taken out of
the tree belongs to its job alone.

An input marked ``exclusive`` (images the node fetches itself, such as prior
studies from a PACS) takes the images it accepts away from the other inputs.
The first image a non-exclusive input accepts starts the patient: each
input's ``patient_started`` is told, with the image and a
:class:`~dicomnode.extension.handles.NodeHandle` of the node.

A patient is ready when every input is (:meth:`PatientContainer.readiness`):
its ``completeness`` says it holds everything that will come (or cannot
tell, and then ``stable_time`` has passed), and its ``validate()`` is True.
What holds a patient back is said in words for the log.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydicom import Dataset

from dicomnode.extension.completeness import UNKNOWN, Completion
from dicomnode.extension.containers import InputContainer
from dicomnode.extension.inputs import AbstractInput, ConfiguredInput
from dicomnode.extension.series import describe_selection
from dicomnode.net import Address
from dicomnode.server.logs import patient_label

if TYPE_CHECKING:
    from dicomnode.extension.handles import NodeHandle

__all__ = ["CompletionOf", "PatientContainer", "PipelineTree"]

logger = logging.getLogger("dicomnode.inputs")

#: how the node answers ``completeness = "query"``: (patient, input name, input) -> verdict
CompletionOf = Callable[["PatientContainer", str, AbstractInput], Completion]


class RerunSource(Protocol):
    """The earlier job a ``late_images = "rerun"`` patient runs again with (a JobRecord)."""

    retained: list[tuple[Dataset, Path | None]]

    @property
    def finished(self) -> bool: ...

    def describe(self) -> str: ...


class PatientContainer:
    """One patient's images so far: an instance of every input class of the pipeline.

    ``node`` is the handle the inputs get in ``patient_started`` (None for a
    tree outside a running node). ``lock`` is the patient's own lock (see
    :meth:`PipelineTree.patient`); ``taken`` becomes True when a job (or the
    expiry) took the container out of its tree.
    """

    def __init__(self, patient_key: str, inputs: Mapping[str, ConfiguredInput | type[AbstractInput]],
                 node: NodeHandle | None = None) -> None:
        self.patient_key = patient_key
        self.node = node
        self.started = False
        self.inputs: dict[str, AbstractInput] = {
            name: spec.create() if isinstance(spec, ConfiguredInput) else spec() for name, spec in inputs.items()}
        self.created = time.time()
        self.last_update = time.monotonic()
        self.calling_aet = ""
        self.responding_address: Address | None = None
        self.lock = threading.RLock()
        self.taken = False
        self._paths: dict[Path, None] = {}
        # id(dataset) -> when it arrived: the inputs each keep their own order only
        self._arrival: dict[int, int] = {}
        self._arrivals = 0
        #: the StudyInstanceUIDs of the images added, in arrival order
        self._studies: dict[str, None] = {}
        #: with ``late_images = "rerun"``: the earlier job whose images this patient's job runs again with
        self.rerun_of: RerunSource | None = None
        #: SOPInstanceUIDs received while the node restored this patient's stored images: a stored
        #: copy of one of them is older and is not added (:mod:`dicomnode.server.restore`)
        self.received_while_restoring: set[str] = set()

    def choose(self, dataset: Dataset) -> tuple[list[str], str]:
        """The inputs that take ``dataset``, and, when none does, why (every input's reason).

        When an ``exclusive`` input accepts it, only the exclusive inputs take it.
        """
        accepting: list[str] = []
        reasons: list[str] = []
        for name, inp in self.inputs.items():
            reason = inp.rejection(dataset)
            if reason is None:
                accepting.append(name)
            else:
                reasons.append(reason)
        exclusive = [name for name in accepting if self.inputs[name].exclusive]
        return (exclusive or accepting), ("" if accepting else "; ".join(reasons))

    def rejection(self, dataset: Dataset) -> str | None:
        """Why no input accepts ``dataset`` (every input's reason), or None when one does."""
        chosen, why = self.choose(dataset)
        return None if chosen else why

    def add_chosen(self, names: list[str], dataset: Dataset, path: Path | None = None, *,
                   header: Dataset | None = None, calling_aet: str = "",
                   known_endpoints: Mapping[str, Address] | None = None) -> None:
        """Add an image to the inputs :meth:`choose` named for it (checked once, there).

        ``header`` is what the inputs decided on, when ``dataset`` should not be
        read for that (a LazyDataset). ``calling_aet`` — the sender — becomes
        the patient's calling AE title, unless the image went to an exclusive
        input (images the node fetched itself do not say whom the job answers to).
        """
        for name in names:
            self.inputs[name].add_image(dataset, path, header=header, checked=True)
        study = (dataset if header is None else header).get("StudyInstanceUID")
        if study:
            self._studies[str(study)] = None
        self._arrivals += 1
        self._arrival[id(dataset)] = self._arrivals
        self.last_update = time.monotonic()
        if path is not None:
            self._paths[path] = None
        exclusive = self.inputs[names[0]].exclusive
        if calling_aet and not exclusive:
            self.calling_aet = calling_aet
            self.responding_address = (known_endpoints or {}).get(calling_aet)
        if not exclusive and not self.started:
            self.started = True
            self._start(dataset if header is None else header)

    def add_image(self, dataset: Dataset, path: Path | None = None, *, header: Dataset | None = None) -> list[str]:
        """Add the image to every input that accepts it; return their names (none: nothing added)."""
        names, _ = self.choose(dataset if header is None else header)
        if names:
            self.add_chosen(names, dataset, path, header=header)
        return names

    def keep_file(self, path: Path) -> None:
        """Count a stored file among the patient's files without adding its image (a newer copy is held).

        The job's end removes it (or quarantines it) with the others.
        """
        self._paths[path] = None

    def _start(self, dataset: Dataset) -> None:
        for name, inp in self.inputs.items():
            try:
                inp.patient_started(dataset, self.patient_key, self.node)
            except Exception:  # user code: the image is accepted whatever the callback does
                logger.exception("[patient %s] input %r failed in patient_started", patient_label(self.patient_key),
                                 name)

    @property
    def has_images(self) -> bool:
        """True once an image was added (cheap: no count over the inputs)."""
        return bool(self._arrival)

    @property
    def images(self) -> int:
        """Distinct images held (an image in two inputs counts once; every series, chosen or not)."""
        if len(self.inputs) == 1:  # the status counts every patient's images: keep the common case cheap
            return next(iter(self.inputs.values())).held_images
        return len({id(ds) for inp in self.inputs.values() for ds in inp.held_datasets})

    @property
    def paths(self) -> list[Path]:
        """Every stored file of the patient."""
        return list(self._paths)

    @property
    def studies(self) -> list[str]:
        """The StudyInstanceUIDs of the images added, in arrival order."""
        return list(self._studies)

    def held_with_paths(self) -> list[tuple[Dataset, Path | None]]:
        """Every distinct image held (every series) with its file (None without a data directory)."""
        seen: dict[int, tuple[Dataset, Path | None]] = {}
        for inp in self.inputs.values():
            for _uid, dataset, path in inp.held_items():
                seen.setdefault(id(dataset), (dataset, path))
        return sorted(seen.values(), key=lambda item: self._arrival.get(id(item[0]), 0))

    def _rerun_waits(self) -> str:
        """With a re-run pending: why it must wait (the earlier job runs), else '' after adding its images."""
        source = self.rerun_of
        if source is None:
            return ""
        if not source.finished:
            return f"late images: waiting for {source.describe()} to finish (late_images 'rerun')"
        held = {uid for inp in self.inputs.values() for uid, _, _ in inp.held_items()}
        last_update, added = self.last_update, 0
        for dataset, path in source.retained:
            names: list[str] = []
            if str(dataset.get("SOPInstanceUID", "")) not in held:  # else the late copy sent again wins
                names, _ = self.choose(dataset)
            if names:
                self.add_chosen(names, dataset, path)
                added += 1
            elif path is not None:  # the job that kept it is over: nothing else will use the file
                path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
        self.last_update = last_update  # the earlier images are not news
        logger.info("[patient %s] late_images 'rerun': %d image(s) of %s join %d late one(s)", patient_label(self.patient_key),
                    added, source.describe(), self._arrivals - added)
        source.retained = []
        self.rerun_of = None
        return ""

    def validate(self) -> bool:
        """True when every input validates."""
        return all(inp.validate() for inp in self.inputs.values())

    def readiness(self, stable_time: float | None = None, now: float | None = None,
                  completion_of: CompletionOf | None = None) -> tuple[bool, str]:
        """Whether the patient's job can start, and when not, what holds it back (for the log).

        Each input must hold everything that will come — its ``completeness``
        says so, or cannot tell and no image arrived for ``stable_time``
        seconds — and validate. ``completion_of`` answers ``"query"`` inputs
        (the node's PACS questions); without it they cannot tell.
        """
        now = time.monotonic() if now is None else now
        rerun = self._rerun_waits()
        if rerun:
            return False, rerun
        quiet = now - self.last_update
        waiting: list[str] = []
        for name, inp in self.inputs.items():
            mode = inp.completeness
            if mode == "announced":
                completion = inp.completion()
            elif mode == "query" and completion_of is not None:
                completion = completion_of(self, name, inp)
            else:
                completion = UNKNOWN
            if completion.state == "incomplete":
                waiting.append(f"{name}: {completion.detail}")
            elif not inp.validate():
                waiting.append(f"{name}: {inp.unmet()}")
            elif completion.state == "unknown" and stable_time is not None and quiet < stable_time:
                why = f" ({completion.detail})" if completion.detail else ""
                waiting.append(f"{name}: stable_time {stable_time:g} s not yet passed{why}")
        if not waiting:
            return True, ""
        return False, f"{'; '.join(waiting)}, {quiet:.0f} s since the last"

    def datasets(self) -> list[Dataset]:
        """Every distinct dataset of the patient (every series), in arrival order (across inputs)."""
        return self._distinct(lambda inp: inp.held_datasets)

    def job_datasets(self) -> list[Dataset]:
        """The distinct datasets the job grinds (the chosen series of inputs with a ``series_selection``)."""
        return self._distinct(lambda inp: inp.datasets)

    def _distinct(self, of: Callable[[AbstractInput], list[Dataset]]) -> list[Dataset]:
        seen: dict[int, Dataset] = {}
        for inp in self.inputs.values():
            for dataset in of(inp):
                seen.setdefault(id(dataset), dataset)
        return sorted(seen.values(), key=lambda dataset: self._arrival.get(id(dataset), 0))

    def log_dropped_series(self) -> None:
        """One log line per series an input's ``series_selection`` did not choose."""
        for name, inp in self.inputs.items():
            dropped = inp.dropped_series()
            if not dropped:
                continue
            chosen = inp.selected_series()
            chose = next((s.describe() for s in inp.series() if s.uid == chosen), "none")
            rule = describe_selection(inp.setting("series_selection"))
            for summary in dropped:
                logger.info("[patient %s] input %s: series %s dropped: series_selection %s chose %s",
                            patient_label(self.patient_key), name, summary.describe(), rule, chose)

    def get_input_container(self) -> InputContainer:
        """Grind every input into the mapping ``process`` receives (runs the grinders)."""
        self.log_dropped_series()
        data = {name: inp.get_data() for name, inp in self.inputs.items()}
        datasets = {name: inp.datasets for name, inp in self.inputs.items()}
        paths = {name: inp.paths for name, inp in self.inputs.items()} if self._paths else None
        return InputContainer(data, datasets, paths, patient_key=self.patient_key,
                              responding_address=self.responding_address, calling_aet=self.calling_aet)

    def __repr__(self) -> str:
        return f"<PatientContainer {self.patient_key!r} {list(self.inputs.values())!r}>"


class PipelineTree:
    """Patient key -> :class:`PatientContainer`, thread-safe, with a lock per patient.

    ``node`` is the handle given to each input's ``patient_started``.
    """

    def __init__(self, inputs: Mapping[str, ConfiguredInput | type[AbstractInput]],
                 known_endpoints: Mapping[str, Address] | None = None,
                 node: NodeHandle | None = None, completion_of: CompletionOf | None = None) -> None:
        self.input_classes = dict(inputs)
        self.known_endpoints = dict(known_endpoints or {})
        self.node = node
        self.completion_of = completion_of
        self._patients: dict[str, PatientContainer] = {}
        self._lock = threading.Lock()
        #: while the node restores its data directory: whether a patient still has stored images to be
        #: read back; such a patient is neither taken as ready nor as expired (None: nothing is restored)
        self.restoring: Callable[[str], bool] | None = None

    @contextmanager
    def patient(self, patient_key: str) -> Iterator[PatientContainer]:
        """The patient's container, with its lock held for the block; made when the patient is new.

        The container is in the tree for the whole block (a new one is put in
        at once, so two threads never make two containers for one patient);
        one that holds no image at the end of the block is taken out again.
        """
        while True:
            with self._lock:
                container = self._patients.get(patient_key)
                if container is None:
                    container = PatientContainer(patient_key, self.input_classes, self.node)
                    self._patients[patient_key] = container
            container.lock.acquire()
            if not container.taken:
                break
            container.lock.release()  # a job took it while we waited: the next image starts a new one
        try:
            yield container
        finally:
            if not container.has_images:
                with self._lock:
                    if self._patients.get(patient_key) is container:
                        del self._patients[patient_key]
                container.taken = True
            container.lock.release()

    def rejection(self, patient_key: str, dataset: Dataset) -> str | None:
        """Why the image would not be accepted for this patient now, or None when it would."""
        with self.patient(patient_key) as container:
            return container.rejection(dataset)

    def add_image(self, patient_key: str, dataset: Dataset, path: Path | None = None,
                  calling_aet: str = "", *, header: Dataset | None = None) -> list[str]:
        """Add an image for a patient; return the names of the inputs that took it (may be none).

        ``header``: what the inputs decide on instead of ``dataset`` (see
        :meth:`PatientContainer.add_chosen`).
        """
        with self.patient(patient_key) as container:
            names, _ = container.choose(dataset if header is None else header)
            if names:
                container.add_chosen(names, dataset, path, header=header, calling_aet=calling_aet,
                                     known_endpoints=self.known_endpoints)
            return names

    def _take(self, keys: list[str] | None, ready: Callable[[PatientContainer], bool]) -> list[PatientContainer]:
        with self._lock:
            candidates = list(self._patients.items()) if keys is None else \
                [(key, self._patients[key]) for key in keys if key in self._patients]
        taken = []
        for key, container in candidates:
            with container.lock:  # an instance being added to it finishes first
                if container.taken or not ready(container):
                    continue
                with self._lock:
                    if self._patients.get(key) is container:
                        del self._patients[key]
                container.taken = True
                taken.append(container)
        return taken

    def take_ready(self, keys: list[str] | None = None, stable_time: float | None = None,
                   now: float | None = None, waiting: dict[str, str] | None = None) -> list[PatientContainer]:
        """Remove and return the patients that are ready (of ``keys``, or all).

        Ready: see :meth:`PatientContainer.readiness`; ``stable_time`` applies
        to inputs whose completeness cannot tell. ``waiting``, when given,
        receives what holds each patient that is not ready back.
        """
        now = time.monotonic() if now is None else now

        restoring = self.restoring

        def ready(container: PatientContainer) -> bool:
            if restoring is not None and restoring(container.patient_key):
                if waiting is not None:
                    waiting[container.patient_key] = "its stored images are being restored"
                return False
            is_ready, why = container.readiness(stable_time, now, self.completion_of)
            if not is_ready and waiting is not None:
                waiting[container.patient_key] = why
            return is_ready

        return self._take(keys, ready)

    def waiting(self, stable_time: float | None = None) -> dict[str, str]:
        """What holds each patient back now (patient key -> words for the log); nothing is taken."""
        result: dict[str, str] = {}
        now = time.monotonic()
        restoring = self.restoring
        for key in self.keys():
            with self._lock:
                container = self._patients.get(key)
            if container is None:
                continue
            if restoring is not None and restoring(key):
                result[key] = "its stored images are being restored"
                continue
            with container.lock:
                if container.taken:
                    continue
                is_ready, why = container.readiness(stable_time, now, self.completion_of)
            result[key] = "ready" if is_ready else why
        return result

    def take_expired(self, older_than_seconds: float) -> list[PatientContainer]:
        """Remove and return patients whose first image arrived more than that long ago."""
        limit = time.time() - older_than_seconds
        restoring = self.restoring

        def expired(container: PatientContainer) -> bool:
            held = restoring is not None and restoring(container.patient_key)
            return container.created < limit and not held

        return self._take(None, expired)

    def pop(self, patient_key: str) -> PatientContainer | None:
        """Remove a patient and return it (None when absent)."""
        taken = self._take([patient_key], lambda container: True)
        return taken[0] if taken else None

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

    def containers(self) -> list[PatientContainer]:
        """The patients held now (a snapshot: a job may take one out meanwhile)."""
        with self._lock:
            return list(self._patients.values())

    def __repr__(self) -> str:
        return f"<PipelineTree patients={self.keys()!r}>"
