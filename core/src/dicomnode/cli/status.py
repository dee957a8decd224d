"""``dicomnode status``: what a node holds and does, from its admin endpoint or its data directory.

::

    dicomnode status --url http://127.0.0.1:8080        # a running node's admin endpoint
    dicomnode status --url http://127.0.0.1:8080 --health   # exit 0 when /healthz says ok (health checks)
    dicomnode status -d /srv/node/data                  # offline: the data directory's files and history
    dicomnode status -p my_node.py --json

With ``--url`` the token of an endpoint that asks for one comes from
``--token`` or the environment variable ``DICOMNODE_ADMIN_TOKEN`` (which
stays out of the process list).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from dicomnode.cli.quarantine import add_location_arguments, data_directory_of
from dicomnode.errors import ConfigurationError

__all__ = ["configure", "fetch"]

TOKEN_VARIABLE = "DICOMNODE_ADMIN_TOKEN"


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Add the arguments of ``dicomnode status`` and return its handler."""
    parser.add_argument("--url", help="a running node's admin endpoint, such as http://127.0.0.1:8080")
    add_location_arguments(parser)
    parser.add_argument("--token", help=f"the admin token (better: the environment variable {TOKEN_VARIABLE})")
    parser.add_argument("--health", action="store_true",
                        help="with --url: only ask /healthz; exit 0 when the node is ready, 1 when not")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long to wait for the endpoint (default: 10)")
    return _run


def fetch(url: str, path: str, token: str | None, timeout: float) -> tuple[int, bytes]:
    """GET ``path`` of the admin endpoint at ``url``: the HTTP status and the body.

    ConfigurationError says what to do when the endpoint cannot be reached.
    """
    target = url.rstrip("/") + path
    if not target.startswith(("http://", "https://")):
        raise ConfigurationError(f"--url must start with http:// or https://, got {url!r}")
    request = urllib.request.Request(target)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise ConfigurationError(f"the admin endpoint at {url} asks for its token: give --token, or set "
                                     f"{TOKEN_VARIABLE}") from None
        return int(error.code), error.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigurationError(f"cannot reach the admin endpoint at {url}: {reason}; is the node running, "
                                 "with admin_port set to that port?") from None


def _online(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    if args.health:
        code, body = fetch(args.url, "/healthz", token, args.timeout)
        try:
            answer = json.loads(body)
            state = answer.get("status", "?")
            if state == "restoring":
                state += f" ({answer.get('restored', '?')} of {answer.get('of', '?')} stored instances read)"
        except ValueError:
            state = body.decode("utf-8", "replace")[:80]
        print(state)
        return 0 if code == 200 else 1
    code, body = fetch(args.url, "/status", token, args.timeout)
    if code != 200:
        print(f"dicomnode status: the admin endpoint answered {code}: {body.decode('utf-8', 'replace')[:200]}",
              file=sys.stderr)
        return 1
    status: dict[str, Any] = json.loads(body)
    _print(status, args.json)
    return 0


def _print(status: dict[str, Any], as_json: bool) -> None:
    from dicomnode.server.status import format_status

    print(json.dumps(status, indent=2) if as_json else format_status(status))


def _run(args: argparse.Namespace) -> int:
    if args.url:
        if args.pipeline or args.data_directory:
            raise ConfigurationError("give either --url (a running node) or --data-directory / --pipeline "
                                     "(its data directory), not both")
        return _online(args)
    if args.health:
        raise ConfigurationError("--health asks a running node: give --url")
    if not (args.pipeline or args.data_directory):
        raise ConfigurationError("give --url URL of a running node's admin endpoint, or --data-directory DIR "
                                 "(or --pipeline TARGET) to read a data directory")
    from dicomnode.server.status import offline_status
    from dicomnode.server.stores import DataDirectory

    directory, _ = data_directory_of(args)
    _print(offline_status(DataDirectory.existing(directory)), args.json)
    return 0
