"""``dicomnode quarantine``: list the jobs that failed, show one with its traceback, run one again.

A job whose grinder, ``process`` or output failed is kept under
``data_directory/quarantine/<id>`` with the reason and the traceback::

    dicomnode quarantine list --pipeline my_node.py
    dicomnode quarantine list --data-directory /srv/node/data --json
    dicomnode quarantine show 3f2a... -d /srv/node/data          # the reason, the traceback, the history
    dicomnode quarantine retry 3f2a... --pipeline my_node.py     # runs the job now, here
    dicomnode quarantine retry 3f2a... --data-directory data --restore
                                  # puts the images back; the node processes them at its next start

The pipeline (any ``dicomnode run`` TARGET) supplies the data directory and,
for ``retry``, the processing to run again.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomnode.errors import ConfigurationError

if TYPE_CHECKING:
    from dicomnode.cli.run import PipelineFactory

__all__ = ["add_location_arguments", "configure", "data_directory_of"]


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """``--pipeline`` / ``--data-directory``: where a command finds the node's data."""
    parser.add_argument("-p", "--pipeline", metavar="TARGET",
                        help="the node's pipeline (as for 'dicomnode run'); gives the data directory")
    parser.add_argument("-d", "--data-directory", type=Path, metavar="DIR",
                        help="the node's data directory (default: the pipeline's)")


def data_directory_of(args: argparse.Namespace) -> tuple[Path, PipelineFactory | None]:
    """The data directory the arguments name, and the pipeline class when one was given."""
    pipeline = None
    if args.pipeline:
        from dicomnode.cli.run import load_target, settings_of

        pipeline = load_target(args.pipeline)
        configured = settings_of(pipeline).data_directory
        directory = args.data_directory or configured
    else:
        directory = args.data_directory
    if directory is None:
        raise ConfigurationError(
            "give --data-directory DIR, or --pipeline TARGET for a pipeline that sets data_directory"
        )
    return Path(directory), pipeline


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode quarantine`` and return its handler."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list the quarantined jobs, oldest first",
                                 description="List the quarantined jobs, oldest first.")
    add_location_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print JSON, with the tracebacks")
    show = actions.add_parser("show", help="show one quarantined job: why, its traceback, its history",
                              description="Show one quarantined job: the reason, the traceback, its files, "
                                          "the outputs done and waiting, and the patient's history.")
    show.add_argument("id", metavar="ID", help="the entry's id, as 'list' shows it")
    add_location_arguments(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    retry = actions.add_parser("retry", help="run a quarantined job again",
                               description="Run a quarantined job again with the pipeline, or with "
                                           "--restore give its images back to the node's data directory.")
    retry.add_argument("id", metavar="ID", help="the entry's id, as 'list' shows it")
    add_location_arguments(retry)
    retry.add_argument("--restore", action="store_true",
                       help="move the images back into the data directory instead of processing them "
                            "here; the node processes them at its next start")
    return _run


def _age(created: float) -> str:
    seconds = max(0.0, time.time() - created)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _list(directory: Path, args: argparse.Namespace) -> int:
    from dicomnode.server.stores import DataDirectory

    entries = DataDirectory.existing(directory).quarantine.list()
    if args.json:
        print(json.dumps([_entry_json(entry) for entry in entries], indent=2))
        return 0
    if not entries:
        print(f"no quarantined jobs in {directory / 'quarantine'}")
        return 0
    for entry in entries:
        print(f"{entry.id}  patient {entry.patient_key}  from {entry.calling_aet or '?'}  "
              f"{len(entry.paths)} file(s)  {_age(entry.created)} ago  {entry.state}")
        print(f"    {entry.reason}")
        if entry.pending_outbox:
            print(f"    waiting for outbox entr{'y' if len(entry.pending_outbox) == 1 else 'ies'} "
                  f"{', '.join(entry.pending_outbox)}")
    return 0


def _entry_json(entry: Any) -> dict[str, Any]:
    return {"id": entry.id, "patient_key": entry.patient_key, "calling_aet": entry.calling_aet,
            "state": entry.state, "job_id": entry.job_id, "reason": entry.reason, "traceback": entry.traceback,
            "created": entry.created, "outputs_done": list(entry.outputs_done),
            "pending_outbox": list(entry.pending_outbox), "files": len(entry.paths)}


def _show(directory: Path, args: argparse.Namespace) -> int:
    from dicomnode.server.stores import DataDirectory

    data = DataDirectory.existing(directory)
    entry = data.quarantine.get(args.id)
    events = [event for event in data.history.events(entry.patient_key)
              if not entry.job_id or event.job_id in ("", entry.job_id)]
    if args.json:
        print(json.dumps({**_entry_json(entry), "history": [event.as_json() for event in events]}, indent=2))
        return 0
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created))
    print(f"quarantine entry {entry.id}: {entry.state}")
    print(f"  patient      {entry.patient_key}, from {entry.calling_aet or '?'}")
    print(f"  job          {entry.job_id or '?'}, quarantined {when} ({_age(entry.created)} ago)")
    print(f"  files        {len(entry.paths)} in {entry.directory}")
    print(f"  outputs done {', '.join(entry.outputs_done) or 'none'}")
    if entry.pending_outbox:
        print(f"  waiting for  outbox entr{'y' if len(entry.pending_outbox) == 1 else 'ies'} "
              f"{', '.join(entry.pending_outbox)}")
    print(f"  reason       {entry.reason}")
    if entry.traceback:
        print("\n" + entry.traceback.rstrip())
    if events:
        print("\nhistory of the patient:")
        for event in events:
            print(f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(event.time))}  {event.kind:<16} "
                  f"{event.summary}")
    return 0


def _retry(directory: Path, pipeline: PipelineFactory | None, args: argparse.Namespace) -> int:
    from dicomnode.server.stores import DataDirectory

    quarantine = DataDirectory.existing(directory).quarantine
    if args.restore:
        count = quarantine.restore(args.id, directory)
        print(f"{args.id}: {count} image(s) moved back to {directory}; the node processes them at its next start")
        return 0
    if pipeline is None:
        raise ConfigurationError("retry runs the job again and needs --pipeline TARGET (or use --restore)")
    node: Any = pipeline(data_directory=directory)
    if quarantine.retry(args.id, node):
        try:
            entry = quarantine.get(args.id)
        except LookupError:
            print(f"{args.id}: processed and delivered; the entry is removed")
            return 0
        print(f"{args.id}: processed; waiting for the outbox to deliver {', '.join(entry.pending_outbox)}")
        return 0
    entry = quarantine.get(args.id)
    print(f"{args.id}: failed again: {entry.reason}")
    return 1


def _run(args: argparse.Namespace) -> int:
    directory, pipeline = data_directory_of(args)
    try:
        if args.action == "list":
            return _list(directory, args)
        if args.action == "show":
            return _show(directory, args)
        return _retry(directory, pipeline, args)
    except LookupError as error:
        raise ConfigurationError(str(error)) from None
