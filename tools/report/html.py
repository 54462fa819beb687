"""The audit report as one self-contained HTML file: no network, no script, inline SVG.

A Content-Security-Policy in the page forbids every external fetch, so a browser that opens
it offline renders exactly what an auditor saw online.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

from tools.report import svg
from tools.report.audit import Audit, TaskPage

OUTCOME_COLOURS = {
    "answered": svg.PALETTE[2],
    "quiet": svg.PALETTE[0],
    "limit": svg.PALETTE[1],
    "superseded": "#999999",
    "running": svg.PALETTE[4],
}
STATUS_COLOURS = {
    "confirmed": svg.PALETTE[2],
    "dispatched": svg.PALETTE[0],
    "failed": svg.PALETTE[3],
    "pending": svg.PALETTE[1],
    "cancelled": "#999999",
}

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; }
nav a { margin-right: 1em; } .muted { color: #777; } .sentence { font-weight: bold; }
section.task { border-top: 2px solid #eee; margin-top: 2em; }
svg.chart { display: block; margin: .5em 0; }
"""


def _time(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def anchor(task_id: str) -> str:
    """The page anchor of a task: stable, URL-safe, unique (the id's hex when needed)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", task_id)
    return f"task-{safe}-{task_id.encode().hex()[:16]}" if safe != task_id else f"task-{safe}"


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else escape(str(value))


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int] = frozenset()
) -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _runs(audit: Audit) -> str:
    kinds = sorted({r.kind for r in audit.runs}) or ["explicit", "implicit"]
    bars = []
    for r in audit.runs:
        end = r.end_time if r.end_time is not None else audit.last_time
        outcome = r.outcome or "running"
        tip = (
            f"run #{r.ordinal} {r.run_id} ({r.kind}, {r.trigger}): {_time(r.time)} - "
            f"{_time(r.end_time)}, {outcome}, {len(r.rounds)} round(s), "
            f"{len(r.commands)} command(s)"
        )
        bars.append((kinds.index(r.kind), r.time, end, outcome, tip))
    chart = svg.timeline(
        kinds, bars, audit.first_time, audit.last_time, OUTCOME_COLOURS, "reconciliation runs"
    )
    rows = [
        (
            str(r.ordinal),
            escape(r.run_id),
            escape(r.kind),
            escape(r.trigger),
            _time(r.time),
            _time(r.end_time),
            "-" if r.duration is None else f"{r.duration:.1f} s",
            escape(r.outcome or "running"),
            str(len(r.rounds)),
            str(len(r.commands)),
            "-" if r.completed is None else str(r.completed.answers),
        )
        for r in audit.runs
    ]
    table = _table(
        (
            "#",
            "run",
            "kind",
            "trigger",
            "started",
            "ended",
            "took",
            "outcome",
            "rounds",
            "commands",
            "answers",
        ),
        rows,
        {0, 6, 8, 9, 10},
    )
    return chart + (table if rows else "")


def _drift(audit: Audit) -> str:
    chart = svg.step_lines(
        audit.drift_series, audit.first_time, audit.last_time, "drift over time by cell"
    )
    if not audit.drift_now:
        return chart + f'<p class="muted">No drift as of notification id {audit.upto}.</p>'
    paged = {p.task_id for p in audit.pages}
    rows = [
        (
            f'<a href="#{anchor(d.task_id)}">{escape(d.task_id)}</a>'
            if d.task_id in paged
            else escape(d.task_id),
            escape(d.cell.label),
            escape(str(d.found_by)),
            _cell(d.scheduler_state),
            _cell(d.mesos_state),
            str(d.since),
        )
        for d in audit.drift_now
    ]
    title = f"<h3>Drift as of notification id {audit.upto}: {len(rows)} task(s)</h3>"
    return (
        chart
        + title
        + _table(
            ("task", "cell (Mesos/scheduler)", "found by", "scheduler", "Mesos", "since id"),
            rows,
            {5},
        )
    )


def _commands(audit: Audit) -> str:
    chart = svg.stacked_bars(audit.commands_by_rule, STATUS_COLOURS, "commands by rule and outcome")
    rows = []
    for rule, by_status in audit.commands_by_rule.items():
        rows.append(
            (
                escape(rule),
                *(str(by_status.get(s, 0)) for s in STATUS_COLOURS),
                str(sum(by_status.values())),
            )
        )
    if not rows:
        return chart
    return chart + _table(
        ("rule", *STATUS_COLOURS, "total"), rows, set(range(1, len(STATUS_COLOURS) + 2))
    )


def _converge(audit: Audit) -> str:
    values = audit.converge_seconds
    chart = svg.histogram(values, "time to converge")
    if not values:
        return chart
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return chart + (
        f"<p>{len(values)} drift episode(s) converged: median "
        f"{statistics.median(values):.1f} s, 90th percentile {p90:.1f} s, longest "
        f"{ordered[-1]:.1f} s (from entering a disagreeing cell to agreeing again).</p>"
    )


def _task_page(page: TaskPage) -> str:
    now = page.now
    parts = [
        f'<section class="task" id="{anchor(page.task_id)}">',
        f"<h3>{escape(page.task_id)}</h3>",
        f"<p>Now: scheduler {_cell(now.scheduler_state)}, Mesos {_cell(now.mesos_state)}, "
        f"cell {_cell(now.cell)} ({_cell(now.found_by)}).</p>",
    ]
    if not page.chains:
        parts.append('<p class="muted">No command was issued about this task.</p>')
    for c in page.chains:
        parts.append(f'<p class="sentence">#{c.command} {escape(c.kind)}: {escape(c.sentence)}</p>')
        parts.append(
            _table(
                ("step", "id", "time (UTC)", "what"),
                ((escape(s.step), _cell(s.id), _time(s.time), escape(s.what)) for s in c.steps),
                {1},
            )
        )
    parts.append("<h4>History</h4>")
    parts.append(
        _table(
            (
                "id",
                "time (UTC)",
                "kind",
                "source",
                "state",
                "reason",
                "message",
                "command",
                "run",
                "scheduler after",
                "detail",
            ),
            (
                (
                    str(r.id),
                    _time(r.time),
                    escape(r.kind),
                    escape(r.source),
                    _cell(r.state),
                    _cell(r.reason),
                    _cell(r.message),
                    "-" if r.command is None else f"#{r.command}",
                    _cell(r.run),
                    _cell(r.scheduler_state),
                    escape(r.detail),
                )
                for r in page.history
            ),
            {0},
        )
    )
    parts.append('<p><a href="#tasks">back to the tasks</a></p></section>')
    return "".join(parts)


def _tasks(audit: Audit) -> str:
    rows = [
        (
            f'<a href="#{anchor(p.task_id)}">{escape(p.task_id)}</a>',
            _cell(p.now.scheduler_state),
            _cell(p.now.mesos_state),
            _cell(p.now.cell),
            str(len(p.chains)),
            str(len(p.history)),
        )
        for p in audit.pages
    ]
    note = ""
    if audit.tasks_left_out:
        note = (
            f'<p class="muted">{audit.tasks_left_out} more task(s) left out (see --max-tasks).</p>'
        )
    if not rows:
        return '<p class="muted">No task drifted or was acted on in this period.</p>'
    index = _table(("task", "scheduler", "Mesos", "cell", "commands", "events"), rows, {4, 5})
    return index + note + "".join(_task_page(p) for p in audit.pages)


def render(audit: Audit) -> str:
    """The whole report as an HTML document."""
    i = audit.index
    summary = _table(
        ("measure", "value"),
        [
            ("log", escape(audit.log)),
            ("as of notification id", f"{audit.upto} (the log ends at {audit.last_id})"),
            ("period (UTC)", f"{_time(i.first_time)} - {_time(i.last_time)}"),
            ("events", f"{i.events:,}"),
            ("tasks", f"{audit.tasks_total:,}"),
            ("reconciliation runs", str(len(audit.runs))),
            ("commands", str(len(audit.commands))),
            ("drift now", f"{len(audit.drift_now)} task(s)"),
        ],
    )
    sections = [
        ("runs", "Reconciliation runs", _runs(audit)),
        ("drift", "Drift over time by cell", _drift(audit)),
        ("commands", "Commands by rule and outcome", _commands(audit)),
        ("converge", "Time to converge", _converge(audit)),
        ("tasks", "Tasks that drifted or were acted on", _tasks(audit)),
    ]
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{html}</section>'
        for key, title, html in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<link rel="icon" href="data:,">'
        f"<title>taskledger audit: {escape(audit.log)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>taskledger audit</h1>{summary}<nav>{nav}</nav>{body}"
        "</body></html>\n"
    )
