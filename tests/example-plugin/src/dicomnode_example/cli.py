"""``dicomnode example-hello``: a plugin-provided subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("name", nargs="?", default="world", help="who to greet")

    def hello(args: argparse.Namespace) -> int:
        print(f"hello, {args.name}")
        return 0

    return hello
