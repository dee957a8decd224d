"""``dicomnode echo HOST PORT``: is a DICOM node there and does it answer (C-ECHO)?"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from dicomnode.cli.network import add_network_arguments, address_from, quiet_network_logs
from dicomnode.errors import DimseError


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode echo`` and return its handler."""
    add_network_arguments(parser, timeout=10.0)
    return _run


def _run(args: argparse.Namespace) -> int:
    from dicomnode.net import echo

    address = address_from(args)
    if address is None:
        return 2
    started = time.perf_counter()
    try:
        with quiet_network_logs():
            status = echo(address, ae_title=args.calling_aet, timeout=args.timeout)
    except DimseError as error:
        print(f"dicomnode echo: {error}", file=sys.stderr)
        return 1
    elapsed = (time.perf_counter() - started) * 1000
    if status != 0x0000:
        print(f"C-ECHO to {address}: status 0x{status:04X} (not success) after {elapsed:.0f} ms")
        return 1
    print(f"C-ECHO to {address}: success (status 0x0000) in {elapsed:.0f} ms")
    return 0
