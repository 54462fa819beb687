"""The audit report as one self-contained HTML file: no network, no script, inline SVG.

A Content-Security-Policy in the page forbids every external fetch, so a browser that opens
it offline renders exactly what an auditor saw online. Every table sits in a box of the
page's width and wraps long words (agent ids, reasons) rather than overflowing it; a box
scrolls sideways only if a table still cannot fit.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections.abc import Iterable, Sequence
from html import escape

from tools.forensics.found_by import cell_finder
from tools.forensics.outcomes import ANSWERED, PARTLY, UNANSWERED, run_story
from tools.forensics.times import clock, datable
from tools.forensics.times import when as _time
from tools.report import svg
from tools.report.audit import IN_FLIGHT_SERIES, Audit, EpisodeRow, TaskPage

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
    ANSWERED: svg.PALETTE[5],
    PARTLY: svg.PALETTE[6],
    UNANSWERED: svg.PALETTE[4],
}
MAX_EPISODES = 20  # rows of the longest drift episodes
MAX_RECONCILES = 200  # rows of RECONCILE commands (the newest)

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1000px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
h3 { margin-top: 1.6em; }
.box { max-width: 100%; overflow-x: auto; margin: .6em 0 1.2em; }
table { border-collapse: collapse; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; white-space: nowrap; }
td.long { overflow-wrap: anywhere; }
table.wide { width: 100%; } table.wide td, table.wide th { padding: .2em .3em; }
nav a { margin-right: 1em; } .muted { color: #777; } .sentence { font-weight: bold; }
section.task { border-top: 2px solid #eee; margin-top: 2em; }
svg.chart { display: block; margin: .5em 0; max-width: 100%; height: auto; }
"""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
SLUG_LENGTH = 48


def anchor(task_id: str) -> str:
    """The page anchor of a task: a readable slug of the id and a digest of the whole id,
    e.g. "task-web-0-abc-1-3b7e0d3b4c9f1a2e". Stable (a function of the id alone: a link
    to it keeps working in the next report) and unique (64 bits of SHA-256 of the whole id:
    two ids that slug alike, web/0/abc:1 and web/0/abc.1, still differ)."""
    slug = _UNSAFE.sub("-", task_id).strip("-")[:SLUG_LENGTH].strip("-") or "id"
    digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"task-{slug}-{digest}"


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else escape(str(value))


_TAG = re.compile(r"(<[^>]*>)")
# Where a word may break besides spaces: after "_" or "/", and between a lower-case letter
# and a capital (StatusUpdate|Received, TASK_|RUNNING, web/|0).
_SOFT = re.compile(r"(?<=[_/])(?=\w)|(?<=[a-z])(?=[A-Z])")
LONG = 12  # characters: a piece this long (an agent id) may break anywhere


def _soft(cell: str) -> str:
    """The cell with a <wbr> at each soft break of its text (never inside a tag)."""
    return "".join(
        part if part.startswith("<") else _SOFT.sub("<wbr>", part) for part in _TAG.split(cell)
    )


def _wrap(cell: str) -> str:
    """Cells wrap at spaces and soft breaks; one with a piece longer than LONG may break
    anywhere (an agent id has no place to break at), so the table fits its box."""
    pieces = _TAG.sub(" ", cell).split()
    return ' class="long"' if any(len(p) > LONG for p in pieces) else ""


def _td(cell: str) -> str:
    soft = _soft(cell)
    return f"<td{_wrap(soft)}>{soft}</td>"


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: set[int] = frozenset(),
    *,
    wide: bool = False,
) -> str:
    """A table of already-escaped cells, in a box that keeps it inside the page."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in numeric else _td(c) for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    kind = ' class="wide"' if wide else ""
    return (
        f'<div class="box"><table{kind}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _task_link(audit: Audit, task_id: str) -> str:
    if task_id in audit.paged:
        return f'<a href="#{anchor(task_id)}">{escape(task_id)}</a>'
    return escape(task_id)


def _runs(audit: Audit) -> str:
    kinds = sorted({r.kind for r in audit.runs}) or ["explicit", "implicit"]
    bars = []
    commands = audit.index.commands
    for r in audit.runs:
        if not datable(r.time):
            continue  # no place on a time axis; the table below still lists it
        end = r.end_time if datable(r.end_time) else audit.last_time
        outcome = r.outcome or "running"
        tip = (
            f"run #{r.ordinal} {r.run_id} ({r.kind}, {r.trigger}): {_time(r.time)} - "
            f"{_time(r.end_time)}: {run_story(r, commands)}"
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
            escape(run_story(r, commands)),
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
            "what happened",
            "rounds",
            "commands",
            "answers",
        ),
        rows,
        {0, 6, 8, 9, 10},
        wide=True,
    )
    return chart + (table if rows else "")


def _drift(audit: Audit) -> str:
    chart = svg.step_lines(
        audit.drift_series, audit.first_time, audit.last_time, "drift over time by cell"
    )
    parts = [chart]
    if audit.undated:
        parts.append(
            f'<p class="muted">{audit.undated} event(s) have a time that makes no date: '
            "the charts leave them out (`taskledger verify` names them).</p>"
        )
    parts.append(
        '<h3>Launches in flight</h3><p class="muted">Tasks launched (ASSIGNED) that Mesos '
        "has not spoken of yet, before the saga finds their update overdue: not drift, "
        "counted apart.</p>"
    )
    parts.append(
        svg.step_lines(
            {IN_FLIGHT_SERIES: audit.in_flight_series} if audit.in_flight_series else {},
            audit.first_time,
            audit.last_time,
            "launches in flight over time",
            empty="no launch in flight in this period",
        )
    )
    if audit.in_flight_now:
        parts.append(
            f"<p>{len(audit.in_flight_now)} launch(es) in flight as of notification id "
            f"{audit.upto}.</p>"
        )
    if not audit.drift_now:
        parts.append(f'<p class="muted">No drift as of notification id {audit.upto}.</p>')
        return "".join(parts)
    rows = [
        (
            _task_link(audit, d.task_id),
            escape(d.cell.label),
            escape(str(d.found_by)),
            _cell(d.scheduler_state),
            _cell(d.mesos_state),
            str(d.since),
        )
        for d in audit.drift_now
    ]
    parts.append(f"<h3>Drift as of notification id {audit.upto}: {len(rows)} task(s)</h3>")
    parts.append(
        _table(
            ("task", "cell (Mesos/scheduler)", "found by", "scheduler", "Mesos", "since id"),
            rows,
            {5},
        )
    )
    return "".join(parts)


def _commands(audit: Audit) -> str:
    chart = svg.stacked_bars(audit.commands_by_rule, STATUS_COLOURS, "commands by rule and outcome")
    rows = []
    shown = [s for s in STATUS_COLOURS if any(s in c for c in audit.commands_by_rule.values())]
    for rule, by_status in audit.commands_by_rule.items():
        rows.append(
            (
                escape(rule),
                *(str(by_status.get(s, 0)) for s in shown),
                str(sum(by_status.values())),
            )
        )
    if not rows:
        return chart
    parts = [
        chart,
        _table(("rule", *shown, "total"), rows, set(range(1, len(shown) + 2))),
        _reconciles(audit),
    ]
    return "".join(parts)


def _reconciles(audit: Audit) -> str:
    """When the answers to each RECONCILE came (the master answers; nothing confirms)."""
    asks = audit.reconciles
    if not asks:
        return ""
    newest = asks[-MAX_RECONCILES:]
    rows = [
        (
            str(c.nid),
            escape(c.rule),
            _cell(c.run_id),
            _time(c.event.time),
            "every task" if c.asked is None else str(c.asked),
            str(c.answered),
            _time(c.first_answer_time),
            _time(c.last_answer_time),
            escape(c.shown_status),
        )
        for c in newest
    ]
    note = ""
    if len(asks) > len(newest):
        note = f'<p class="muted">The newest {len(newest)} of {len(asks)} shown.</p>'
    return (
        "<h3>RECONCILE commands: when their answers came</h3>"
        + note
        + _table(
            (
                "#",
                "rule",
                "run",
                "issued",
                "asked",
                "answers",
                "first answer",
                "last answer",
                "answered?",
            ),
            rows,
            {0, 4, 5},
            wide=True,
        )
    )


def _summary(values: list[float], what: str) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"{what}: median {statistics.median(ordered):.1f} s, 90th percentile {p90:.1f} s, "
        f"longest {ordered[-1]:.1f} s"
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _episode_row(audit: Audit, row: EpisodeRow) -> tuple[str, ...]:
    e = row.episode
    first = "-" if e.evidence_nid is None else f"#{e.evidence_nid} {clock(e.evidence_time)}"
    ended = "not yet" if e.end_nid is None else f"#{e.end_nid} {clock(e.end_time)}"
    return (
        _task_link(audit, e.task_id),
        escape(e.cell),
        _cell(row.found_by),
        escape(", ".join(row.rules)) or "-",
        first,
        f"#{e.nid} {clock(e.time)}",
        ended,
        _seconds(e.detection_seconds if e.evidence_nid is not None else 0.0),
        _seconds(e.converge_seconds),
    )


def _finite(values: Iterable[float]) -> list[float]:
    """The durations a histogram can show: finite and not negative (a clock that went
    backwards makes a negative one)."""
    return [v for v in values if v == v and 0 <= v < float("inf")]


def _span(row: EpisodeRow) -> float:
    """An episode's length from first evidence to agreement (or to now), for ordering."""
    e = row.episode
    return sum(_finite([e.detection_seconds, e.converge_seconds or 0.0]))


def _converge(audit: Audit) -> str:
    converge = _finite(audit.converge_seconds)
    detect = _finite(audit.detection_seconds)
    parts = [
        "<p>Each drift episode is measured twice: from the fault's first evidence in the log "
        "(the earliest event the saga's commands about the task rest on: for a partition, "
        "the TASK_UNREACHABLE update) to the ledger learning of the drift (the event that put "
        "the task in a disagreeing cell), and from then to the two sides agreeing again. "
        "Where no earlier evidence is in the log (a rogue task the master reports when asked), "
        "the first is 0.</p>",
        "<h3>From the fault's first evidence to detection</h3>",
        svg.histogram(
            detect, "fault's first evidence to detection", empty="no drift in this period"
        ),
        "<h3>From detection to convergence</h3>",
        svg.histogram(converge, "detection to convergence"),
    ]
    if detect:
        what = f"{len(detect)} drift episode(s), first evidence to detection"
        parts.append(f"<p>{_summary(detect, what)}.</p>")
    if converge:
        what = f"{len(converge)} episode(s) converged, detection to agreement"
        parts.append(f"<p>{_summary(converge, what)}.</p>")
    left = len(audit.converge_seconds) - len(converge)
    if left:
        parts.append(f'<p class="muted">{left} duration(s) not finite or negative: left out.</p>')
    if audit.episodes:
        longest = sorted(audit.episodes, key=_span, reverse=True)[:MAX_EPISODES]
        parts.append(
            f"<h3>The longest drift episodes ({len(longest)} of {len(audit.episodes)})</h3>"
        )
        parts.append(
            _table(
                (
                    "task",
                    "cell",
                    "found by",
                    "commands (rule)",
                    "first evidence",
                    "detected",
                    "converged",
                    "evidence to detection",
                    "detection to agreement",
                ),
                (_episode_row(audit, r) for r in longest),
                {7, 8},
                wide=True,
            )
        )
    return "".join(parts)


def _task_page(page: TaskPage) -> str:
    now = page.now
    parts = [
        f'<section class="task" id="{anchor(page.task_id)}">',
        f"<h3>{escape(page.task_id)}</h3>",
        f"<p>Now: scheduler {_cell(now.scheduler_state)}, Mesos {_cell(now.mesos_state)}, "
        f"cell {_cell(now.cell)} ({escape(cell_finder(now.found_by))}).</p>",
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
                wide=True,
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
            wide=True,
        )
    )
    parts.append('<p><a href="#tasks">back to the tasks</a></p></section>')
    return "".join(parts)


def _tasks(audit: Audit) -> str:
    counts = (
        f"<p>{audit.tasks_involved} of {audit.tasks_total} task(s) drifted or were acted on: "
        f"{audit.tasks_drifted} drifted (launches in flight do not count), "
        f"{audit.tasks_acted_on} were acted on by a command.</p>"
    )
    if not audit.pages:
        return counts + '<p class="muted">No task drifted or was acted on in this period.</p>'
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
    index = _table(("task", "scheduler", "Mesos", "cell", "commands", "events"), rows, {4, 5})
    return counts + index + note + "".join(_task_page(p) for p in audit.pages)


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
            ("tasks that drifted", f"{audit.tasks_drifted:,}"),
            ("tasks acted on", f"{audit.tasks_acted_on:,}"),
            ("reconciliation runs", str(len(audit.runs))),
            ("commands", str(len(audit.commands))),
            ("drift now", f"{len(audit.drift_now)} task(s)"),
            ("launches in flight now", f"{len(audit.in_flight_now)} task(s)"),
        ],
    )
    sections = [
        ("runs", "Reconciliation runs", _runs(audit)),
        ("drift", "Drift over time by cell", _drift(audit)),
        ("commands", "Commands by rule and outcome", _commands(audit)),
        ("converge", "Time to detect and to converge", _converge(audit)),
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
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<link rel="icon" href="data:,">'
        f"<title>taskledger audit: {escape(audit.log)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>taskledger audit</h1>{summary}<nav>{nav}</nav>{body}"
        "</body></html>\n"
    )
