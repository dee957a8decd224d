"""``dicomnode outbox``: list the results not delivered yet, and try again.

An output that could not deliver (a PACS down for longer than its retries)
keeps what it could not send under ``data_directory/outbox/<id>``; the
node's maintenance thread retries it with backoff. From the shell::

    dicomnode outbox list --pipeline my_node.py
    dicomnode outbox retry --data-directory /srv/node/data        # every entry, now
    dicomnode outbox retry 5c1e... --data-directory /srv/node/data

An entry is retried by the output that stored it (by its registered name),
so the plugin that provides that output must be installed.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from dicomnode.cli.quarantine import add_location_arguments, data_directory_of
from dicomnode.errors import ConfigurationError

__all__ = ["configure"]


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode outbox`` and return its handler."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list the undelivered results, oldest first",
                                 description="List the undelivered results, oldest first.")
    add_location_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    retry = actions.add_parser("retry", help="try to deliver one entry, or all of them, now",
                               description="Try to deliver one outbox entry, or every entry, now.")
    retry.add_argument("id", metavar="ID", nargs="?", help="the entry's id (default: every entry)")
    add_location_arguments(retry)
    return _run


def _when(moment: float | None) -> str:
    return "never" if moment is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def _run(args: argparse.Namespace) -> int:
    from dicomnode.plugins import get_registry
    from dicomnode.server.stores import DataDirectory

    directory, _pipeline = data_directory_of(args)
    data = DataDirectory.existing(directory)
    outbox = data.outbox
    if args.action == "list":
        entries = outbox.entries()
        if args.json:
            print(json.dumps([{"id": e.id, "output": e.output_name, "patient_key": e.patient_key,
                               "job_id": e.job_id, "settings": dict(e.settings),
                               "reason": e.reason, "attempts": e.attempts, "created": e.created,
                               "last_attempt": e.last_attempt, "files": len(e.files)} for e in entries],
                             indent=2))
        elif not entries:
            print(f"the outbox {outbox.directory} is empty")
        for entry in entries if not args.json else []:
            print(f"{entry.id}  patient {entry.patient_key or '?'}  output {entry.output_name}  {len(entry.files)} file(s)  "
                  f"{entry.attempts} attempt(s), last {_when(entry.last_attempt)}")
            print(f"    {entry.reason}")
        return 0
    try:
        entries = [outbox.get(args.id)] if args.id else outbox.entries()
    except LookupError as error:
        raise ConfigurationError(str(error)) from None
    if not entries:
        print(f"the outbox {outbox.directory} is empty")
        return 0
    registry = get_registry()
    failed = 0
    for entry in entries:
        if data.retry_outbox(entry, registry):
            print(f"{entry.id}: delivered by output {entry.output_name!r}; the entry is removed")
        else:
            failed += 1
            print(f"{entry.id}: still undelivered: {outbox.get(entry.id).reason}")
    return 1 if failed else 0
