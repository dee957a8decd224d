"""Executors: where a job's ``process`` runs — worker threads, a spawned process, a cluster.

The node grinds a complete patient into an
:class:`~dicomnode.extension.containers.InputContainer`, hands it to its
executor as a :class:`Job`, and gets back the outputs ``process`` returned.
The node itself then sends the outputs, so the outbox, the quarantine and
the history stay on the node, and an executor needs nothing of the node's
internals. What crosses the boundary:

- in: the :class:`Job` — its id, the patient key, the ground input container,
  and the pipeline's importable identity (:class:`PipelineIdentity`), with
  which another process builds its own copy of the pipeline;
- out: the outputs (a list of :class:`~dicomnode.extension.outputs.PipelineOutput`),
  or a :class:`~dicomnode.errors.ProcessingError` with the reason and the
  traceback of the failure where it happened.

An executor is registered through the ``dicomnode_executors`` hook with an
:class:`~dicomnode.plugins.ExecutorSpec` and chosen by name with the
``executor`` setting; its ``executor_settings`` table is given to its
constructor::

    class PrintingExecutor(Executor):
        def __init__(self, settings):
            super().__init__(settings)
            self.prefix = self.take(settings, "prefix", str, "job")

        def run(self, job):
            print(self.prefix, job.id)
            return self.host.process(job.input_container)

An executor calls the pipeline's ``setup_worker()`` once in every process
where it runs jobs, before the first (the live pipeline's, through
:attr:`Executor.host`, when jobs run in the node's process; the copy's,
built with :meth:`PipelineIdentity.load`, elsewhere).

The node calls :meth:`Executor.start` once before the first job,
:meth:`Executor.run` from its job threads (as many at once as
:attr:`Executor.concurrency` allows), and :meth:`Executor.close` when it closes.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from dicomnode.errors import ConfigurationError, ProcessingError, type_name
from dicomnode.extension.settings import table_value

if TYPE_CHECKING:
    import logging

    from dicomnode.extension.containers import InputContainer
    from dicomnode.extension.outputs import PipelineOutput

__all__ = ["Executor", "ExecutorHost", "Job", "PipelineIdentity", "Processor", "as_outputs", "failure_of"]

T = TypeVar("T")


class Processor(Protocol):
    """A pipeline as an executor sees it: set up once where it runs, then process input containers."""

    def setup_worker(self) -> None:
        """Prepare this process to run jobs (load models); called once before the first job here."""

    def process(self, input_container: InputContainer) -> Any:
        """Turn a complete patient's inputs into outputs."""


@attrs.frozen
class PipelineIdentity:
    """How another process builds the same pipeline: an import path, and the configuration.

    ``target`` is ``"package.module:Name"``: a pipeline class, or, with
    ``argument``, a function that returns the pipeline factory when called
    with it (a TOML pipeline: the loader and the file's path). ``config`` is
    the validated configuration (a picklable value). :meth:`load` builds the
    pipeline, which runs its ``post_init``.
    """

    target: str
    config: Any
    argument: str | None = None

    def load(self) -> Processor:
        """Import the pipeline (factory) and build it with ``config``."""
        factory: Callable[..., Processor] = _import(self.target)
        if self.argument is not None:
            factory = factory(self.argument)  # type: ignore[assignment]
        return factory(config=self.config)


def _import(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


@attrs.frozen
class Job:
    """One patient's job as it crosses to an executor."""

    id: str
    patient_key: str
    input_container: InputContainer
    #: built only when asked for: executors that run in this process never need it
    identity: Callable[[], PipelineIdentity] = attrs.field(repr=False, eq=False)


class ExecutorHost(Protocol):
    """What the node offers its executor: the live pipeline, its identity, and a logger."""

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        """The node's logger."""

    def setup_worker(self) -> None:
        """Prepare the live pipeline to run jobs in this process (load models)."""

    def process(self, input_container: InputContainer) -> Any:
        """Run the live pipeline's ``process`` here, in this process."""

    def identity(self) -> PipelineIdentity:
        """The pipeline's importable identity (raises ConfigurationError when it has none)."""


class Executor:
    """Base class of executors: run a job's ``process`` and return its outputs.

    Subclasses read their settings in ``__init__`` (use :meth:`take`, which
    names the setting in its errors), override :meth:`run`, and where they
    hold resources :meth:`start` and :meth:`close`.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        #: the name the node chose the executor by (for log lines and errors)
        self.name = ""
        self._host: ExecutorHost | None = None

    # --- settings ------------------------------------------------------------

    def take(self, settings: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...],
             default: T, *, check: Callable[[Any], bool] | None = None, allowed: str = "") -> T:
        """One setting of ``executor_settings``: its value, checked, or ``default`` when absent."""
        value = settings.get(key)
        result: T = table_value(settings, key, kind, default, check, allowed, lambda expected: ConfigurationError(
            f"executor_settings {key!r} of the executor {type(self).__name__} must be {expected}, got {value!r}"))
        return result

    def reject_unknown(self, settings: Mapping[str, Any], known: Sequence[str]) -> None:
        """Raise ConfigurationError for keys of ``settings`` the executor does not know."""
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ConfigurationError(f"executor_settings of the executor {type(self).__name__}: unknown "
                                     f"setting(s) {unknown}; known: {', '.join(known) or 'none'}")

    # --- life cycle --------------------------------------------------------------

    @property
    def host(self) -> ExecutorHost:
        """The node this executor runs jobs for (set by :meth:`start`)."""
        if self._host is None:
            raise RuntimeError(f"{type(self).__name__} was not started")
        return self._host

    @property
    def concurrency(self) -> int | None:
        """How many jobs may run at once; None leaves it to the node's ``processing_workers``."""
        return None

    def start(self, host: ExecutorHost) -> None:
        """Called once when the node opens, before the first job."""
        self._host = host

    def run(self, job: Job) -> list[PipelineOutput]:
        """Run ``process`` for the job and return its outputs; raise ProcessingError on failure.

        Called from the node's job threads, several at once up to
        :attr:`concurrency`; it blocks until the job's outputs are back.
        """
        raise NotImplementedError(f"{type(self).__name__} must define run(job)")

    def close(self, timeout: float) -> None:
        """Called once when the node closes; release what :meth:`start` took within ``timeout`` seconds.

        A :meth:`run` still waiting then (for a cluster, a worker) should end
        promptly with :class:`~dicomnode.errors.JobInterruptedError`: the job's
        images stay in the node's data directory and it runs again at the
        next start.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name or '?'}>"


def failure_of(stage: str, error: BaseException) -> ProcessingError:
    """A :class:`~dicomnode.errors.ProcessingError` for ``error`` raised at ``stage``, with its traceback."""
    if isinstance(error, ProcessingError):
        return error
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return ProcessingError(f"{stage} raised {type(error).__name__}: {_short(error)}", stage=stage,
                           traceback=text)


def _short(error: BaseException) -> str:
    """An exception's message, on one line and bounded: it may end up in logs and quarantine entries."""
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def as_outputs(result: Any) -> list[PipelineOutput]:
    """What ``process`` returned, as a list of outputs; ProcessingError when it is not that.

    The error names only the types it got, never their contents: a dataset
    or an array printed into a log would carry patient data.
    """
    from dicomnode.extension.outputs import PipelineOutput

    if result is None:
        raise ProcessingError("process() returned None; return a PipelineOutput (NoOutput() to send nothing)",
                              stage="process")
    items = list(result) if isinstance(result, Sequence) and not isinstance(result, (str, bytes)) else [result]
    wrong = sorted({type_name(item) for item in items if not isinstance(item, PipelineOutput)})
    if wrong:
        raise ProcessingError(f"process() must return PipelineOutput(s), got {', '.join(wrong)}",
                              stage="process")
    return items
