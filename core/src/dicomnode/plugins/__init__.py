"""The dicomnode plugin system: hooks, contribution records and the registry.

A plugin is a distribution with an entry point in the group
``dicomnode.plugins`` that names a module of ``@hookimpl`` functions::

    # pyproject.toml
    [project.entry-points."dicomnode.plugins"]
    myplugin = "my_plugin.hooks"

    # my_plugin/hooks.py
    from dicomnode.plugins import GrinderSpec, hookimpl

    @hookimpl
    def dicomnode_grinders():
        yield GrinderSpec("upper", "my_plugin.grinders:UpperGrinder", "upper-cases text")

See ``docs/plugins.md`` for the whole contract.
"""

from dicomnode.errors import PluginConflictError, PluginError, PluginNotFoundError
from dicomnode.plugins._hookspecs import hookimpl, hookspec
from dicomnode.plugins._manager import ENTRY_POINT_GROUP, get_registry, load_plugins, reset_registry
from dicomnode.plugins._registry import PluginFailure, PluginInfo, PluginRegistry, Provided
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

__all__ = [
    "ENTRY_POINT_GROUP",
    "CommandSpec",
    "Contribution",
    "ExecutorSpec",
    "GrinderSpec",
    "InputSpec",
    "OutputSpec",
    "PluginConflictError",
    "PluginError",
    "PluginFailure",
    "PluginInfo",
    "PluginNotFoundError",
    "PluginRegistry",
    "Provided",
    "ServiceSpec",
    "VirtualElementSpec",
    "get_registry",
    "hookimpl",
    "hookspec",
    "load_plugins",
    "reset_registry",
]
