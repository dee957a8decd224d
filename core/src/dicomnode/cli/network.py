"""What the network commands (``store``, ``echo``) share: host, port, AE titles, timeout."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dicomnode.net import Address


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def add_network_arguments(parser: argparse.ArgumentParser, *, timeout: float) -> None:
    """HOST, PORT, --calling-aet, --called-aet and --timeout."""
    parser.add_argument("host", metavar="HOST", help="host name or IP address of the peer")
    parser.add_argument("port", metavar="PORT", type=int, help="TCP port of the peer (1-65535)")
    parser.add_argument("--calling-aet", default="DICOMNODE", metavar="AET",
                        help="our AE title (default: DICOMNODE)")
    parser.add_argument("--called-aet", default="ANY-SCP", metavar="AET",
                        help="the peer's AE title (default: ANY-SCP)")
    parser.add_argument("--timeout", type=_positive_seconds, default=timeout, metavar="SECONDS",
                        help=f"limit for each network step (default: {timeout:g})")


def address_from(args: argparse.Namespace) -> Address | None:
    """The peer's Address, or None after printing what is wrong with HOST, PORT or an AE title."""
    from dicomnode.net import Address, check_ae_title

    try:
        check_ae_title(args.calling_aet, "--calling-aet")
        return Address(args.host, args.port, args.called_aet)
    except ValueError as error:
        message = str(error).replace("Address.ae_title", "--called-aet")
        message = message.replace("Address.ip", "HOST").replace("Address.port", "PORT")
        print(f"dicomnode {args.command}: error: {message}", file=sys.stderr)
        return None


@contextmanager
def quiet_network_logs() -> Iterator[None]:
    """Keep pynetdicom's own error lines off the terminal while a command runs: it reports failures itself.

    With ``--log-level info`` or ``debug`` everything is shown. The levels are
    restored afterwards (the CLI can run inside another program, or a test).
    """
    if logging.getLogger().getEffectiveLevel() <= logging.INFO:
        yield
        return
    quieted = {"pynetdicom": logging.CRITICAL, "dicomnode.dimse": logging.ERROR}
    before = {name: logging.getLogger(name).level for name in quieted}
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
