"""The status page of the admin endpoint: the status as HTML, made on the server, refreshing itself.

No JavaScript and no build step: the page is one HTML document with its
style inline and a ``<meta http-equiv="refresh">``, so it works in any
browser, in a text browser and behind a strict proxy. Every value is
escaped; patients are named as in the log (the key, or its pseudonym).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dicomnode.server.logs import patient_label
from dicomnode.server.status import node_state

if TYPE_CHECKING:
    from dicomnode.server.history import HistoryEvent

__all__ = ["REFRESH_SECONDS", "render_page"]

REFRESH_SECONDS = 5

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em 2em; color: #1d2329; background: #f6f7f9; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.6em 0 .5em; }
.sub { color: #5b6570; margin-bottom: 1em; }
.state { display: inline-block; padding: .1em .6em; border-radius: 1em; font-weight: 600; color: #fff; }
.ready { background: #2e7d32; } .starting, .restoring { background: #b26a00; } .closing { background: #8e2431; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: .6em 1em; min-width: 9em; }
.card b { display: block; font-size: 1.6em; } .card.warn b { color: #8e2431; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e6e9ed; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #2e7d32; } .no { color: #8e2431; } .muted { color: #6b7580; }
code { font-size: .95em; } .nowrap, code { white-space: nowrap; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _when(text: str | None) -> str:
    """An ISO time of the status (``2026-12-05T08:01:02Z``) as ``2026-12-05 08:01:02 UTC``."""
    return "" if not text else text.replace("T", " ").replace("Z", " UTC")


def _card(label: str, value: object, warn: bool = False) -> str:
    return f'<div class="card{" warn" if warn else ""}"><b>{_e(value)}</b>{_e(label)}</div>'


def _patients(patients: Mapping[str, Any]) -> str:
    if not patients["held"]:
        return '<p class="muted">No patient is waiting.</p>'
    rows = []
    for held in patients["held"]:
        inputs = "<br>".join(
            f'<span class="{"ok" if item["complete"] else "no"}">{"✓" if item["complete"] else "…"}</span> '
            f'{_e(item["name"])}: {_e(item["images"])} image(s), {_e(item["rule"])}' for item in held["inputs"])
        rows.append(f'<tr><td><code>{_e(held["patient"])}</code></td><td>{_e(held.get("calling_aet", ""))}</td>'
                    f'<td class="num">{_e(held["images"])}</td><td class="nowrap">{_e(_when(held["first_image"]))}<br>'
                    f'<span class="muted">{_e(_age(held["waiting_seconds"]))} ago</span></td>'
                    f'<td>{inputs}</td><td>{_e(held["waiting_for"])}</td></tr>')
    more = (f'<p class="muted">… and {_e(patients["not_listed"])} more patient(s) not listed.</p>'
            if patients["not_listed"] else "")
    return ("<table><tr><th>patient</th><th>from</th><th>images</th><th>first image</th><th>inputs</th>"
            "<th>waiting for</th></tr>" + "".join(rows) + "</table>" + more)


def _jobs(jobs: Mapping[str, Any] | None) -> str:
    if jobs is None or not jobs["running_jobs"]:
        return '<p class="muted">No job is running.</p>'
    rows = "".join(f'<tr><td><code>{_e(job["job_id"])}</code></td><td><code>{_e(job["patient"])}</code></td>'
                   f'<td>{_e(job["calling_aet"])}</td><td class="num">{_e(job["images"])}</td>'
                   f'<td class="nowrap">{_e(_when(job["started"]))}</td><td class="num">{_e(_age(job["seconds"]))}</td></tr>'
                   for job in jobs["running_jobs"])
    return ("<table><tr><th>job</th><th>patient</th><th>from</th><th>images</th><th>started</th>"
            "<th>running for</th></tr>" + rows + "</table>")


def _events(events: Sequence[HistoryEvent]) -> str:
    if not events:
        return '<p class="muted">Nothing happened yet.</p>'
    rows = "".join(f'<tr><td class="nowrap">{_e(datetime.fromtimestamp(event.time).strftime("%Y-%m-%d %H:%M:%S"))}</td>'
                   f'<td><code>{_e(patient_label(event.patient_key))}</code></td><td>{_e(event.kind)}</td>'
                   f'<td>{_e(event.summary)}</td></tr>' for event in events)
    return "<table><tr><th>time</th><th>patient</th><th>what</th><th>details</th></tr>" + rows + "</table>"


def render_page(status: Mapping[str, Any], events: Sequence[HistoryEvent]) -> str:
    """The status page for ``status`` (:func:`~dicomnode.server.status.node_status`) and the latest events."""
    node, patients, jobs = status["node"], status["patients"], status["jobs"]
    outbox, quarantine = status.get("outbox"), status.get("quarantine")
    words = node_state(node)
    state = words.split(" ", 1)[0]  # the CSS class: ready, closing, restoring or starting
    cards = [_card("patients waiting", patients["count"]), _card("images held", patients["images"]),
             _card("jobs queued", jobs["queued"]), _card("jobs running", jobs["running"]),
             _card("jobs done", jobs["succeeded"]), _card("jobs failed", jobs["failed"], jobs["failed"] > 0)]
    if outbox is not None and quarantine is not None:
        cards += [_card("outbox entries", outbox["entries"], outbox["entries"] > 0),
                  _card("quarantined jobs", quarantine["failed"], quarantine["failed"] > 0)]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(node["name"])} — dicomnode status</title>
<style>{_STYLE}</style></head>
<body>
<h1>{_e(node["name"])} <span class="state {state}">{_e(words)}</span></h1>
<div class="sub">{_e(node["ae_title"])} on {_e(node["address"] or "?")} · up {_e(_age(node["uptime_seconds"]))}
 · last image {_e(_when(node["last_instance_received"]) or "none yet")} · dicomnode {_e(node["version"])}
 · {_e(_when(status["time"]))} (refreshes every {REFRESH_SECONDS} s)</div>
<div class="cards">{"".join(cards)}</div>
<h2>Patients waiting</h2>
{_patients(patients)}
<h2>Jobs running</h2>
{_jobs(jobs)}
<h2>What happened last</h2>
{_events(events)}
<p class="muted">JSON: <a href="status">/status</a> · Prometheus: <a href="metrics">/metrics</a>
 · health: <a href="healthz">/healthz</a></p>
</body></html>
"""
