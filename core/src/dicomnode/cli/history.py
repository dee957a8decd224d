"""``dicomnode history [PATIENT]``: what the node did, as a timeline, from its data directory.

::

    dicomnode history PAT001 -d /srv/node/data           # everything about one patient
    dicomnode history PAT001 --since 2d -p my_node.py
    dicomnode history --since yesterday -d data          # every patient (default: the last 24 hours)
    dicomnode history P-3f2a9c01b7e4 -d data --json      # a pseudonym from the log works too

``--since`` takes a duration ago (``30min``, ``12h``, ``7d``), ``today``,
``yesterday``, or a date and time (``2026-12-01``, ``2026-12-01T08:00``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from dicomnode.cli.quarantine import add_location_arguments, data_directory_of
from dicomnode.errors import ConfigurationError

__all__ = ["configure"]

_DEFAULT_SINCE = "24h"


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode history`` and return its handler."""
    parser.add_argument("patient", metavar="PATIENT", nargs="?",
                        help="the patient key (or its pseudonym from the log); default: every patient")
    parser.add_argument("--since", metavar="WHEN",
                        help=f"only events since WHEN (default: all of one patient's, the last {_DEFAULT_SINCE} "
                             "of every patient's)")
    add_location_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON, one event per item, with the details")
    return _run


def _resolve(patient: str, known: list[str], secret: bytes | None) -> str:
    """The key of ``patient``: itself when the history names it, else the key whose pseudonym it is."""
    if patient in known or secret is None:
        return patient
    from dicomnode.server.logs import pseudonym

    for key in known:
        if pseudonym(key, secret) == patient:
            return key
    return patient


def _run(args: argparse.Namespace) -> int:
    from dicomnode.server.history import parse_since
    from dicomnode.server.logs import read_secret
    from dicomnode.server.stores import DataDirectory

    directory, _ = data_directory_of(args)
    data = DataDirectory.existing(directory)
    if not data.history.exists:
        raise ConfigurationError(f"no history in {directory}: {data.history.path.name} does not exist yet (a node "
                                 "writes it once it runs with this data directory)")
    since_text = args.since or (None if args.patient else _DEFAULT_SINCE)
    try:
        since = parse_since(since_text) if since_text else None
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    patient = None
    if args.patient:
        known = data.history.patients()
        patient = _resolve(args.patient, known, read_secret(directory, create=False))
        if patient not in known:
            listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
            raise ConfigurationError(f"no events of patient {args.patient!r} in {data.history.path}; patients "
                                     f"with events: {listed or 'none'}")
    events = data.history.events(patient, since=since)
    if args.json:
        print(json.dumps([event.as_json() for event in events], indent=2))
        return 0
    scope = f"patient {patient}" if patient else "every patient"
    window = f" since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))}" if since is not None else ""
    print(f"history of {scope}{window}: {len(events)} event(s)")
    for event in events:
        moment = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
        who = "" if patient else f"{event.patient_key or '(node)':<16} "
        print(f"{moment}  {who}{event.kind:<17} {event.summary}")
    return 0
