"""Every exception dicomnode raises on purpose.

Each one subclasses the builtin it refines, so ``except ValueError`` keeps
working for callers that do not know dicomnode::

    DicomnodeError
    ├── PluginError                      a plugin could not be loaded or used
    │   ├── PluginConflictError          two distributions contribute the same name
    │   └── PluginNotFoundError          (LookupError) nobody provides the name asked for
    ├── ConfigurationError               (ValueError) a setting has a value that is not allowed
    ├── BlueprintError                   (ValueError) a blueprint cannot build a dataset
    ├── InvalidDatasetError              (ValueError) a dataset lacks what an operation needs
    │   └── DatasetValidationError       an outgoing object failed its IOD check (carries the report)
    ├── IncompatibleImagesError          (ValueError) images cannot be combined (tree, grinder)
    ├── GrindingError                    (ValueError) a grinder refused its input
    ├── StorageError                     (OSError) the data directory cannot be used
    ├── ProcessingError                  (RuntimeError) a job's grinding, process() or outputs failed
    ├── JobInterruptedError              (RuntimeError) the node closed before a job finished
    └── DimseError                       (ConnectionError) a DICOM network operation failed
        └── AssociationError             the peer refused, aborted or never answered
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AssociationError",
    "BlueprintError",
    "ConfigurationError",
    "DatasetValidationError",
    "DicomnodeError",
    "DimseError",
    "GrindingError",
    "IncompatibleImagesError",
    "InvalidDatasetError",
    "JobInterruptedError",
    "PluginConflictError",
    "PluginError",
    "PluginNotFoundError",
    "ProcessingError",
    "StorageError",
    "describe_value",
    "type_name",
]


class DicomnodeError(Exception):
    """Base class of every error dicomnode raises on purpose."""


class PluginError(DicomnodeError):
    """A plugin failed to load, validate or contribute.

    ``distribution`` names the distribution the error is about, when known.
    """

    def __init__(self, message: str, *, distribution: str | None = None) -> None:
        super().__init__(message)
        self.distribution = distribution


class PluginConflictError(PluginError):
    """Two distributions contribute the same name for the same extension point."""


class PluginNotFoundError(PluginError, LookupError):
    """No loaded plugin provides the name that was asked for."""


class ConfigurationError(DicomnodeError, ValueError):
    """A configuration setting has a value that is not allowed."""


class BlueprintError(DicomnodeError, ValueError):
    """A blueprint or virtual element cannot produce its value."""


class InvalidDatasetError(DicomnodeError, ValueError):
    """A dataset lacks an attribute, or has a value, that an operation needs."""


class DatasetValidationError(InvalidDatasetError):
    """An object failed its check against its IOD (:mod:`dicomnode.dicom.validation`).

    ``report`` is the validator's :class:`~dicomnode.dicom.validation.ValidationReport` (typed
    loosely here: this module sits below every other and imports none of them).
    """

    def __init__(self, message: str, *, report: Any) -> None:
        super().__init__(message)
        self.message = message
        self.report = report

    def __reduce__(self) -> tuple[object, ...]:
        # the keyword-only report survives pickling (an error sent back from another process)
        return (_dataset_validation_error, (self.message, self.report))


def _dataset_validation_error(message: str, report: Any) -> DatasetValidationError:
    return DatasetValidationError(message, report=report)


class IncompatibleImagesError(DicomnodeError, ValueError):
    """Images that cannot be put together (another series, a duplicate UID, …)."""


class GrindingError(DicomnodeError, ValueError):
    """A grinder refused the datasets it was given, and says why."""


class StorageError(DicomnodeError, OSError):
    """The data directory cannot be read or written as needed."""


class ProcessingError(DicomnodeError, RuntimeError):
    """A job failed: at which ``stage`` (grinding, process, an output, the executor), and the traceback.

    ``traceback`` is the text of the traceback where the failure happened,
    which may be another process or another machine.
    """

    def __init__(self, reason: str, *, stage: str = "process", traceback: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage
        self.traceback = traceback

    def __reduce__(self) -> tuple[object, ...]:
        # keyword-only fields survive pickling (a spawned process or a cluster worker sends it back)
        return (_processing_error, (self.reason, self.stage, self.traceback))


def _processing_error(reason: str, stage: str, traceback: str) -> ProcessingError:
    return ProcessingError(reason, stage=stage, traceback=traceback)


class JobInterruptedError(DicomnodeError, RuntimeError):
    """The node is closing and the job cannot finish now; its images stay for the next start.

    An executor raises it from ``run`` when it is closed while a job waits
    (for a cluster, for a worker): the job is neither failed nor done.
    """


class DimseError(DicomnodeError, ConnectionError):
    """A DICOM network operation (DIMSE) failed."""


class AssociationError(DimseError):
    """The peer refused or aborted the association, or never answered."""


def describe_value(value: Any) -> str:
    """What ``value`` is, for an error message, without what it holds.

    An error message ends up in logs, quarantine entries and status
    comments, so a dataset, an element or an array is named by its kind and
    size, never printed; short plain values (numbers, a short text, a path)
    are shown as they are::

        describe_value(Dataset())             # 'a pydicom Dataset (0 elements)'
        describe_value(numpy.zeros((2, 3)))   # 'a numpy ndarray of shape (2, 3), float64'
    """
    kind = type(value)
    module = kind.__module__.split(".")[0]
    if module == "pydicom" or any(c.__module__.startswith("pydicom.") for c in kind.__mro__[1:]):
        size = f" ({len(value)} element{'s' if len(value) != 1 else ''})" if hasattr(value, "__len__") else ""
        return f"a pydicom {type_name(value)}{size}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a {module} {type_name(value)} of shape {tuple(value.shape)}, {value.dtype}"
    if isinstance(value, (list, tuple, set, frozenset)):
        kinds = sorted({type_name(item) for item in value})
        return f"a {kind.__name__} of {len(value)} item(s) ({', '.join(kinds) or 'empty'})"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if (isinstance(value, (str, bytes)) and len(value) <= 40) or module == "pathlib":
        return repr(value)
    if isinstance(value, (str, bytes)):
        return f"a {kind.__name__} of {len(value)} characters"
    return f"a {type_name(value)}"


def type_name(value: Any) -> str:
    """The name of ``value``'s class as a user knows it: the first public class of its ancestry.

    A dataset the node received is a private subclass of pydicom's
    ``FileDataset``; a message says ``FileDataset``.
    """
    return next((klass.__name__ for klass in type(value).__mro__ if not klass.__name__.startswith("_")),
                type(value).__name__)
