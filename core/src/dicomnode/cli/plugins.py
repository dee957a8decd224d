"""``dicomnode plugins``: list the installed plugins, or check that all of them load."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from dicomnode.errors import PluginError
from dicomnode.plugins import PluginInfo, PluginRegistry, get_registry


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode plugins`` and return its handler."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--all", action="store_true", help="include the core's built-in contributions")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="import every plugin's lazy targets; exit 1 if anything fails (for plugin authors' CI)",
        description="Import every plugin's lazy targets and check their types; exit 1 if anything fails.",
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of text")
    return _run


def _contributions(plugin: PluginInfo) -> str:
    by_kind: dict[str, list[str]] = {}
    for spec in plugin.contributions:
        by_kind.setdefault(spec.kind, []).append(spec.name)
    return "; ".join(f"{kind}: {', '.join(sorted(names))}" for kind, names in sorted(by_kind.items()))


def _as_dict(plugin: PluginInfo) -> dict[str, Any]:
    return {
        "name": plugin.name,
        "distribution": plugin.distribution,
        "version": plugin.version,
        "status": plugin.status,
        "builtin": plugin.builtin,
        "reason": plugin.reason or (plugin.failure.describe() if plugin.failure else ""),
        "contributions": [
            {"kind": spec.kind, "name": spec.name, "target": spec.target if spec.is_lazy else
             f"{spec.target.__module__}:{spec.target.__qualname__}", "summary": spec.summary}
            for spec in plugin.contributions
        ],
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _list(registry: PluginRegistry, args: argparse.Namespace) -> int:
    plugins = [p for p in registry.plugins if args.all or not p.builtin]
    if args.json:
        print(json.dumps([_as_dict(p) for p in plugins], indent=2))
        return 0
    if not plugins:
        print("no plugins installed (use --all to see the core's built-ins)")
        return 0
    rows = [["NAME", "DISTRIBUTION", "VERSION", "STATUS", "CONTRIBUTIONS"]]
    for plugin in plugins:
        detail = _contributions(plugin)
        if plugin.failure is not None:
            detail = f"{plugin.failure.stage}: {plugin.failure.error}"
        elif plugin.reason:
            detail = plugin.reason
        rows.append([plugin.name, plugin.distribution, plugin.version, plugin.status, detail])
    print(_table(rows))
    return 0


def _check(registry: PluginRegistry, args: argparse.Namespace) -> int:
    problems = [failure.describe() for failure in registry.failures]
    checked = 0
    for kind in ("grinder", "virtual element", "output", "input", "executor", "command"):
        for provided in registry.contributions(kind).values():
            checked += 1
            try:
                registry.load(provided)
            except PluginError as error:
                problems.append(str(error))
    if args.json:
        print(json.dumps({"checked": checked, "problems": problems}, indent=2))
    else:
        for problem in problems:
            print(f"FAIL {problem}")
        print(f"{checked} contributions checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def _run(args: argparse.Namespace) -> int:
    registry = get_registry()
    if args.action == "check":
        return _check(registry, args)
    return _list(registry, args)
