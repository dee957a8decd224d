"""Plugin discovery: one entry-point scan at start-up, each plugin behind its own guard.

:func:`load_plugins` is the factory. It never runs at import time; the CLI and
the pipeline call it (through :func:`get_registry`) when they start.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Iterable
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from dicomnode.__about__ import __version__ as CORE_VERSION
from dicomnode.errors import PluginConflictError, PluginError
from dicomnode.plugins import _builtins, _hookspecs
from dicomnode.plugins._registry import PluginFailure, PluginInfo, PluginRegistry, Provided
from dicomnode.plugins._specs import Contribution
from dicomnode.plugins._version_check import core_specifier, satisfies

__all__ = ["ENTRY_POINT_GROUP", "get_registry", "load_plugins", "reset_registry"]

logger = logging.getLogger("dicomnode.plugins")

ENTRY_POINT_GROUP = "dicomnode.plugins"
ENV_DISABLE = "DICOMNODE_DISABLE_PLUGINS"
ENV_LOAD = "DICOMNODE_LOAD_PLUGINS"
ENV_STRICT = "DICOMNODE_STRICT_PLUGINS"

#: hook name -> extension point kind, for every contribution hook
CONTRIBUTION_HOOKS = {
    "dicomnode_grinders": "grinder",
    "dicomnode_virtual_elements": "virtual element",
    "dicomnode_outputs": "output",
    "dicomnode_inputs": "input",
    "dicomnode_executors": "executor",
    "dicomnode_services": "service",
    "dicomnode_commands": "command",
}

_registry: PluginRegistry | None = None
_registry_lock = threading.Lock()


def _names_from_env(variable: str) -> set[str] | None:
    raw = os.environ.get(variable)
    if raw is None or not raw.strip():
        return None
    return {name.strip().lower() for name in raw.split(",") if name.strip()}


def _strict_from_env() -> bool:
    return os.environ.get(ENV_STRICT, "").strip().lower() in ("1", "true", "yes", "on")


def _entry_points() -> list[metadata.EntryPoint]:
    """The group's entry points, read once, without the duplicates a doubled sys.path gives."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (entry_point.name, entry_point.value)
        if key not in seen:
            seen.add(key)
            unique.append(entry_point)
    return sorted(unique, key=lambda ep: ep.name)


def _distribution_of(entry_point: metadata.EntryPoint) -> tuple[str, str, list[str] | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return entry_point.value.split(".")[0], "?", None
    return dist.metadata["Name"] or "?", dist.version or "?", dist.requires


def load_plugins(
    *,
    strict: bool | None = None,
    disable: Iterable[str] | None = None,
    load: Iterable[str] | None = None,
) -> PluginRegistry:
    """Discover the installed plugins and build a frozen :class:`PluginRegistry`.

    ``disable`` (a block-list), ``load`` (an allow-list) and ``strict`` default
    to the environment variables ``DICOMNODE_DISABLE_PLUGINS``,
    ``DICOMNODE_LOAD_PLUGINS`` and ``DICOMNODE_STRICT_PLUGINS``. Names match a
    plugin's entry-point name or its distribution name. A plugin that cannot
    be loaded is recorded and reported in one warning line; with ``strict`` a
    :class:`PluginError` is raised instead. The core is always loaded.
    """
    strict = _strict_from_env() if strict is None else strict
    blocked = _names_from_env(ENV_DISABLE) if disable is None else {n.lower() for n in disable}
    allowed = _names_from_env(ENV_LOAD) if load is None else {n.lower() for n in load}

    manager = pluggy.PluginManager(_hookspecs.PROJECT_NAME)
    manager.add_hookspecs(_hookspecs)
    manager.register(_builtins, name="core")

    infos: dict[str, PluginInfo] = {
        "core": PluginInfo("core", "dicomnode", CORE_VERSION, "active", builtin=True)
    }
    modules: dict[str, ModuleType] = {"core": _builtins}

    for entry_point in _entry_points():
        name = entry_point.name
        distribution, version, requires = _distribution_of(entry_point)
        keys = {name.lower(), distribution.lower()}
        if name == "core" or name in infos:
            continue
        if blocked and keys & blocked:
            infos[name] = PluginInfo(name, distribution, version, "blocked", reason=f"listed in {ENV_DISABLE}")
            continue
        if allowed is not None and not keys & allowed:
            infos[name] = PluginInfo(name, distribution, version, "blocked", reason=f"not listed in {ENV_LOAD}")
            continue

        def fail(stage: str, error: BaseException | str, *, _name: str = name, _dist: str = distribution,
                 _version: str = version) -> None:
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            failure = PluginFailure(_name, _dist, _version, stage, text)
            infos[_name] = PluginInfo(_name, _dist, _version, "failed", failure=failure)

        specifier = core_specifier(requires)
        if specifier and not satisfies(CORE_VERSION, specifier):
            fail("version", f"needs dicomnode {specifier}, this is dicomnode {CORE_VERSION}")
            continue
        try:
            module = importlib.import_module(entry_point.value.partition(":")[0])
        except BaseException as error:  # a plugin may raise anything, SystemExit included
            if isinstance(error, KeyboardInterrupt):
                raise
            fail("import", error)
            continue
        try:
            manager.register(module, name=name)
        except Exception as error:
            fail("register", error)
            continue
        try:
            manager.check_pending()
        except pluggy.PluginValidationError as error:
            manager.unregister(module)
            fail("validate", error)
            continue
        infos[name] = PluginInfo(name, distribution, version, "active")
        modules[name] = module

    provided: dict[str, dict[str, Provided]] = {kind: {} for kind in CONTRIBUTION_HOOKS.values()}
    conflicts: list[str] = []
    for name, module in modules.items():
        info = infos[name]
        try:
            contributions = _contributions_of(manager, module)
        except Exception as error:
            manager.unregister(module)
            failure = PluginFailure(name, info.distribution, info.version, "contribute",
                                    f"{type(error).__name__}: {error}")
            infos[name] = PluginInfo(name, info.distribution, info.version, "failed", failure=failure)
            continue
        for spec in contributions:
            existing = provided[spec.kind].get(spec.name)
            if existing is not None:
                conflicts.append(
                    f"the {spec.kind} {spec.name!r} is contributed by both "
                    f"{existing.distribution} (plugin {existing.plugin}) and "
                    f"{info.distribution} (plugin {name})"
                )
                continue
            provided[spec.kind][spec.name] = Provided(spec, name, info.distribution, info.version)
        infos[name] = PluginInfo(name, info.distribution, info.version, "active",
                                 builtin=info.builtin, contributions=tuple(contributions))

    if conflicts:
        raise PluginConflictError("; ".join(conflicts))

    ordered = tuple(sorted(infos.values(), key=lambda p: (not p.builtin, p.name)))
    registry = PluginRegistry(ordered, provided)
    failures = registry.failures
    if failures:
        summary = "; ".join(f.describe() for f in failures)
        if strict:
            raise PluginError(f"{len(failures)} plugin(s) failed to load ({ENV_STRICT} is set): {summary}",
                              distribution=failures[0].distribution)
        logger.warning("%d dicomnode plugin(s) failed to load and were skipped: %s "
                       "(run 'dicomnode plugins' for details)", len(failures), summary)
    return registry


def _contributions_of(manager: pluggy.PluginManager, module: ModuleType) -> list[Contribution]:
    """Call each contribution hook of one plugin, checking every record it returns."""
    found: list[Contribution] = []
    for hook_name, kind in CONTRIBUTION_HOOKS.items():
        caller = getattr(manager.hook, hook_name)
        for implementation in caller.get_hookimpls():
            if implementation.plugin is not module:
                continue
            result: Any = implementation.function()
            for spec in result or ():
                if not isinstance(spec, Contribution) or spec.kind != kind:
                    raise PluginError(f"{hook_name}() returned {spec!r}; it must return {kind} specs")
                found.append(spec)
    return found


def get_registry() -> PluginRegistry:
    """The process's registry, discovered on the first call and then reused."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = load_plugins()
        return _registry


def reset_registry() -> None:
    """Forget the process's registry, so the next :func:`get_registry` discovers again."""
    global _registry
    with _registry_lock:
        _registry = None
