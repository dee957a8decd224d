"""``dicomnode store HOST PORT PATH...``: send DICOM files and folders to a node (C-STORE)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from dicomnode.cli.network import add_network_arguments, address_from, quiet_network_logs

#: media directories index a CD; they are not instances a node stores
_SKIPPED_NAMES = {"DICOMDIR"}


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode store`` and return its handler."""
    add_network_arguments(parser, timeout=30.0)
    parser.add_argument("paths", metavar="PATH", nargs="+", type=Path,
                        help="DICOM files, or folders searched recursively")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return _run


def _files(paths: list[Path], problems: list[str]) -> Iterator[Path]:
    """Every file named or found below a named folder, in a stable order."""
    for path in paths:
        if path.is_dir():
            for root, folders, names in os.walk(path):
                folders.sort()
                for name in sorted(names):
                    if name in _SKIPPED_NAMES:
                        continue
                    yield Path(root) / name
        elif path.is_file():
            yield path
        elif path.exists():
            problems.append(f"{path}: not a regular file or folder")
        else:
            problems.append(f"{path}: no such file or folder")


class _ProgressBar:
    """A one-line bar on a terminal; nothing when stderr is a file or pipe (logs stay clean)."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        width = 30
        filled = width * done // total
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _run(args: argparse.Namespace) -> int:
    from dicomnode.net import send_datasets

    address = address_from(args)
    if address is None:
        return 2
    problems: list[str] = []
    files = list(_files(args.paths, problems))
    for problem in problems:
        print(f"dicomnode store: {problem}", file=sys.stderr)
    if not files:
        print("dicomnode store: no files to send", file=sys.stderr)
        return 1
    bar = _ProgressBar(sys.stderr, not args.quiet)
    try:
        with quiet_network_logs():
            result = send_datasets(address, files, ae_title=args.calling_aet, timeout=args.timeout,
                                   progress=bar)
    finally:
        bar.close()
    for failure in result.failed:
        what = failure.path if failure.path is not None else failure.sop_instance_uid
        reason = failure.reason.removeprefix(f"{failure.path}: ") if failure.path else failure.reason
        print(f"FAILED {what}: {reason}")
    print(f"sent {len(result.accepted)} of {len(files)} file(s) to {address}; "
          f"{len(result.failed)} failed, {len(result.not_sent)} not sent")
    if result.error:
        print(f"dicomnode store: error: {result.error}", file=sys.stderr)
    return 0 if result.ok and not problems else 1
