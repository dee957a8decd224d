"""The ``dicomnode`` command line.

Every subcommand, the core's included, is contributed through the
``dicomnode_commands`` hook; only the command being run is imported.

The global options (``--log-level``, ``--version``) may come before or after
the command: ``dicomnode --log-level debug run node.py`` and
``dicomnode run node.py --log-level debug`` are the same. For ``run``,
``--log-level`` is the node's log level; for the other commands, the level
of what the command itself logs (default: warning).
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


#: global options that take a value: the word after them is that value, not the command
_VALUED_GLOBALS = ("--log-level",)


def _selected_command(argv: Sequence[str], names: set[str]) -> str | None:
    skip = False
    for argument in argv:
        if skip:
            skip = False
            continue
        if argument in _VALUED_GLOBALS:
            skip = True
            continue
        if argument.startswith("-"):
            continue
        return argument if argument in names else None
    return None


def _log_level(argv: Sequence[str]) -> str | None:
    """The ``--log-level`` given anywhere on the command line (the last one wins), or None."""
    level = None
    for index, argument in enumerate(argv):
        if argument == "--":
            break
        if argument == "--log-level" and index + 1 < len(argv):
            level = argv[index + 1]
        elif argument.startswith("--log-level="):
            level = argument.split("=", 1)[1]
    return level


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--version`` and ``--log-level``; on a command's parser they do not override what came before it."""
    default: object = None if top else argparse.SUPPRESS
    known = getattr(parser, "_option_string_actions", {})
    if "--version" not in known:
        parser.add_argument("--version", action="store_true", default=False if top else argparse.SUPPRESS,
                            help="show the core's and every plugin's version")
    if "--log-level" not in known:
        parser.add_argument("--log-level", choices=_LOG_LEVELS, type=str.lower, default=default,
                            help="how much to log: for 'run' the node's level (default: its log_level "
                                 "setting), else the command's own (default: warning)")
    if top:
        return
    for action in parser._actions:  # a command's own actions (quarantine list, …) take them too
        if isinstance(action, argparse._SubParsersAction):
            for nested in set(action.choices.values()):
                _add_global_options(nested, top=False)


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
    _add_global_options(parser, top=True)
    commands = registry.contributions("command")
    selected = _selected_command(argv, set(commands))
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in sorted(commands):
        summary = commands[name].spec.summary
        sub = subparsers.add_parser(name, help=summary, description=summary)
        if name == selected:
            configure = registry.command(name)
            sub.set_defaults(_handler=configure(sub))
            _add_global_options(sub, top=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    level = _log_level(arguments) or "warning"
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
