"""The ``dicomnode`` command line.

Every subcommand, the core's included, is contributed through the
``dicomnode_commands`` hook; only the command being run is imported.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dicomnode.__about__ import __version__
from dicomnode.errors import DicomnodeError, PluginError
from dicomnode.plugins import PluginRegistry, get_registry

__all__ = ["build_parser", "main"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def _selected_command(argv: Sequence[str], names: set[str]) -> str | None:
    for argument in argv:
        if argument.startswith("-"):
            continue
        return argument if argument in names else None
    return None


def _version_text(registry: PluginRegistry) -> str:
    lines = [f"dicomnode {__version__}"]
    for plugin in registry.plugins:
        if plugin.builtin:
            continue
        lines.append(f"  {plugin.distribution} {plugin.version} (plugin {plugin.name}, {plugin.status})")
    return "\n".join(lines)


def build_parser(registry: PluginRegistry, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The top-level parser; the command named in ``argv`` (if any) is fully configured."""
    parser = argparse.ArgumentParser(
        prog="dicomnode",
        description="Turn an image-processing program into a DICOM node, and work with DICOM from the shell.",
        epilog="Run 'dicomnode COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="store_true", help="show the core's and every plugin's version")
    parser.add_argument("--log-level", choices=_LOG_LEVELS, default="warning", help="how much to log (default: warning)")
    commands = registry.contributions("command")
    selected = _selected_command(argv, set(commands))
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in sorted(commands):
        summary = commands[name].spec.summary
        sub = subparsers.add_parser(name, help=summary, description=summary)
        if name == selected:
            configure = registry.command(name)
            sub.set_defaults(_handler=configure(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    level = "warning"
    for index, argument in enumerate(arguments):
        if argument == "--log-level" and index + 1 < len(arguments):
            level = arguments[index + 1]
        elif argument.startswith("--log-level="):
            level = argument.split("=", 1)[1]
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        registry = get_registry()
    except PluginError as error:
        print(f"dicomnode: error: {error}", file=sys.stderr)
        return 2
    parser = build_parser(registry, arguments)
    args = parser.parse_args(arguments)
    if args.version:
        print(_version_text(registry))
        return 0
    handler = getattr(args, "_handler", None)
    if handler is None:
        parser.print_help()
        return 0 if not arguments else 2
    try:
        status: int = handler(args)
    except KeyboardInterrupt:
        print("dicomnode: interrupted", file=sys.stderr)
        return 130
    except (DicomnodeError, OSError) as error:
        print(f"dicomnode {args.command}: error: {error}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover - ``python -m dicomnode.cli``
    sys.exit(main())
