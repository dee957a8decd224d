"""The typed, frozen registry the rest of dicomnode asks for plugin contributions.

Nothing outside :mod:`dicomnode.plugins` touches ``pluggy`` or ``pm.hook``: it
asks the registry for a grinder, an output, an input, a virtual element, an
executor, a service or a command by name, and gets the class (or an error it can act on).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from dicomnode.errors import PluginNotFoundError
from dicomnode.plugins._specs import (
    CommandSpec,
    Contribution,
    ExecutorSpec,
    GrinderSpec,
    InputSpec,
    OutputSpec,
    ServiceSpec,
    VirtualElementSpec,
)

if TYPE_CHECKING:
    from dicomnode.dicom.factory import VirtualElement
    from dicomnode.extension.executors import Executor
    from dicomnode.extension.grinders import Grinder
    from dicomnode.extension.inputs import AbstractInput
    from dicomnode.extension.outputs import PipelineOutput
    from dicomnode.extension.services import Service

__all__ = ["PluginFailure", "PluginInfo", "PluginRegistry", "Provided"]

Status = Literal["active", "failed", "blocked"]

#: The distribution that provides each first-party name, for "pip install …" hints.
FIRST_PARTY: dict[tuple[str, str], str] = {
    ("grinder", "numpy"): "dicomnode-numpy",
    ("grinder", "nifti"): "dicomnode-nifti",
    ("virtual element", "numpy-caller"): "dicomnode-numpy",
    ("output", "dicom"): "dicomnode-dicom-output",
    ("output", "file"): "dicomnode-file-output",
    ("input", "historic"): "dicomnode-historic-input",
    ("executor", "dask"): "dicomnode-dask",
    ("output", "dicomweb"): "dicomnode-dicomweb",
    ("input", "historic-dicomweb"): "dicomnode-dicomweb",
    ("service", "stow"): "dicomnode-dicomweb",
}


@attrs.frozen
class PluginFailure:
    """Why a plugin was not loaded: at which stage, and the error, in one line."""

    plugin: str
    distribution: str
    version: str
    stage: str  # "version", "import", "register", "validate" or "contribute"
    error: str

    def describe(self) -> str:
        """One line for logs and the CLI."""
        return f"{self.plugin} ({self.distribution} {self.version}) failed at {self.stage}: {self.error}"


@attrs.frozen
class PluginInfo:
    """One plugin as discovery saw it."""

    name: str
    distribution: str
    version: str
    status: Status
    builtin: bool = False
    contributions: tuple[Contribution, ...] = ()
    failure: PluginFailure | None = None
    reason: str = ""  # why a blocked plugin is blocked


@attrs.frozen
class Provided:
    """A contribution together with the plugin that provided it."""

    spec: Contribution
    plugin: str
    distribution: str
    version: str


class PluginRegistry:
    """Every contribution of every loaded plugin, by kind and name.

    Build it with :func:`dicomnode.plugins.load_plugins` (or get the process's
    registry with :func:`dicomnode.plugins.get_registry`)::

        registry = get_registry()
        NumpyGrinder = registry.grinder("numpy")
    """

    def __init__(self, plugins: tuple[PluginInfo, ...], provided: Mapping[str, Mapping[str, Provided]]):
        self._plugins = plugins
        self._provided = {kind: dict(names) for kind, names in provided.items()}
        self._loaded: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    # --- what was discovered ------------------------------------------------

    @property
    def plugins(self) -> tuple[PluginInfo, ...]:
        """Every plugin discovery saw, the built-in core first."""
        return self._plugins

    @property
    def failures(self) -> tuple[PluginFailure, ...]:
        """The failures of the plugins that could not be loaded."""
        return tuple(p.failure for p in self._plugins if p.failure is not None)

    def contributions(self, kind: str) -> Mapping[str, Provided]:
        """Every contribution of one kind (``"grinder"``, ``"output"``, …), by name."""
        return dict(self._provided.get(kind, {}))

    # --- typed look-ups -----------------------------------------------------

    def grinder(self, name: str) -> type[Grinder]:
        """The grinder class registered as ``name``."""
        result: type[Grinder] = self._load(GrinderSpec.kind, name)
        return result

    def output(self, name: str) -> type[PipelineOutput]:
        """The output class registered as ``name``."""
        result: type[PipelineOutput] = self._load(OutputSpec.kind, name)
        return result

    def input(self, name: str) -> type[AbstractInput]:
        """The input class registered as ``name``."""
        result: type[AbstractInput] = self._load(InputSpec.kind, name)
        return result

    def virtual_element(self, name: str) -> type[VirtualElement]:
        """The virtual element class registered as ``name``."""
        result: type[VirtualElement] = self._load(VirtualElementSpec.kind, name)
        return result

    def executor(self, name: str) -> type[Executor]:
        """The executor class registered as ``name``."""
        result: type[Executor] = self._load(ExecutorSpec.kind, name)
        return result

    def service(self, name: str) -> type[Service]:
        """The service class registered as ``name``."""
        result: type[Service] = self._load(ServiceSpec.kind, name)
        return result

    def name_of(self, kind: str, cls: type) -> str | None:
        """The name ``cls`` is registered under as a ``kind`` (``"output"``, …), or None.

        Only contributions whose module is already imported are resolved: a
        class that exists as an object has had its module imported.
        """
        import sys

        for name, provided in self._provided.get(kind, {}).items():
            target = provided.spec.target
            if isinstance(target, str) and target.partition(":")[0] not in sys.modules:
                continue
            try:
                if self._load(kind, name) is cls:
                    return name
            except Exception:  # a broken contribution is reported where it is asked for by name
                continue
        return None

    def command(self, name: str) -> Any:
        """The ``configure(parser) -> handler`` function of the CLI command ``name``."""
        return self._load(CommandSpec.kind, name)

    def load(self, provided: Provided) -> Any:
        """Resolve one contribution's target, importing it if it is lazy."""
        return self._load(provided.spec.kind, provided.spec.name)

    def _load(self, kind: str, name: str) -> Any:
        key = (kind, name)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
        provided = self._provided.get(kind, {}).get(name)
        if provided is None:
            raise PluginNotFoundError(self._not_found_message(kind, name))
        target = provided.spec.load(provided.distribution)
        with self._lock:
            self._loaded[key] = target
        return target

    def _not_found_message(self, kind: str, name: str) -> str:
        available = sorted(self._provided.get(kind, {}))
        listing = ", ".join(available) if available else "none"
        message = f"no plugin provides the {kind} {name!r} (available: {listing})"
        distribution = FIRST_PARTY.get((kind, name))
        if distribution is None:
            failed = [p.failure.describe() for p in self._plugins if p.failure is not None]
            blocked = [f"{p.name} ({p.distribution}: {p.reason})" for p in self._plugins if p.status == "blocked"]
            if failed:
                message += "; these plugins failed to load and may provide it: " + "; ".join(failed)
            if blocked:
                message += "; these plugins are blocked and may provide it: " + ", ".join(blocked)
            return message
        plugin = next((p for p in self._plugins if _same_distribution(p.distribution, distribution)), None)
        if plugin is None:
            return f"{message}; it is provided by the distribution {distribution}: pip install {distribution}"
        if plugin.failure is not None:
            return f"{message}; its provider {plugin.failure.describe()}"
        if plugin.status == "blocked":
            return f"{message}; its provider {plugin.name} ({distribution}) is blocked: {plugin.reason}"
        return message


def _same_distribution(a: str, b: str) -> bool:
    def normal(name: str) -> str:
        return name.lower().replace("_", "-").replace(".", "-")

    return normal(a) == normal(b)
