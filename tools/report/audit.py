"""What the audit report shows, gathered from the log in one pass (no rendering here)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from projections.queries import natural_key
from tools.forensics.history import HistoryRow, history
from tools.forensics.index import Command, Episode, LogIndex, Moment, Run, build, moment
from tools.forensics.launches import split
from tools.forensics.times import datable
from tools.forensics.why import Chain, chains, finder_of
from tools.readonly import ReadOnlyLedger

MAX_POINTS = 600  # drift samples kept per chart (the last of each stretch)
IN_FLIGHT_SERIES = "launches in flight"


@dataclass
class TaskPage:
    task_id: str
    now: Moment
    chains: list[Chain]
    history: list[HistoryRow]


@dataclass
class EpisodeRow:
    """A drift episode as the report shows it: what found it and what the saga did."""

    episode: Episode
    found_by: str | None  # the first command's word (tools/forensics/found_by.py)
    rules: list[str]  # the commands' "KIND RULE", in order


@dataclass
class Audit:
    log: str
    upto: int
    last_id: int
    index: LogIndex
    runs: list[Run]
    commands: list[Command]
    drift_series: dict[str, list[tuple[float, int]]]
    commands_by_rule: dict[str, dict[str, int]]
    converge_seconds: list[float]
    pages: list[TaskPage]
    tasks_total: int
    tasks_left_out: int
    drift_now: list[Any] = field(default_factory=list)
    in_flight_now: list[Any] = field(default_factory=list)
    in_flight_series: list[tuple[float, int]] = field(default_factory=list)
    tasks_drifted: int = 0
    tasks_acted_on: int = 0
    tasks_involved: int = 0  # drifted or acted on
    episodes: list[EpisodeRow] = field(default_factory=list)
    detection_seconds: list[float] = field(default_factory=list)
    undated: int = 0  # events whose time makes no date (left out of the charts)

    @property
    def first_time(self) -> float:
        return self.index.time_low or 0.0

    @property
    def last_time(self) -> float:
        return self.index.time_high or self.first_time

    @property
    def paged(self) -> set[str]:
        """The tasks with a section of their own."""
        return {p.task_id for p in self.pages}

    @property
    def reconciles(self) -> list[Command]:
        return [c for c in self.commands if c.kind == "RECONCILE"]


def _thinned(samples: list[Any]) -> list[Any]:
    samples = [s for s in samples if datable(s.time)]
    if len(samples) > MAX_POINTS:
        step = len(samples) / MAX_POINTS
        samples = [samples[int(i * step)] for i in range(MAX_POINTS)] + [samples[-1]]
    return samples


def drift_series(index: LogIndex) -> dict[str, list[tuple[float, int]]]:
    """Per drift cell, (time, tasks in it) at each change, thinned to MAX_POINTS; samples
    whose time makes no date are left out (a chart cannot place them)."""
    samples = _thinned(index.drift_samples)
    cells = sorted({cell for s in samples for cell in s.by_cell})
    return {cell: [(s.time, s.by_cell.get(cell, 0)) for s in samples] for cell in cells}


def in_flight_series(index: LogIndex) -> list[tuple[float, int]]:
    """(time, launches in flight) at each change, thinned like drift_series."""
    samples = _thinned(index.drift_samples)
    if not any(s.in_flight for s in samples):
        return []
    return [(s.time, s.in_flight) for s in samples]


def episode_rows(index: LogIndex) -> list[EpisodeRow]:
    """The drift episodes with what found each (its first command) and what was done."""
    rows = []
    for e in index.episodes:
        commands = [index.commands[c] for c in e.commands]
        finder = None
        if commands:
            first = commands[0]
            finder = finder_of(index, first, lambda n, t=first.event.task_id: index.event_of(t, n))
        rows.append(EpisodeRow(e, finder, [f"{c.kind} {c.rule}" for c in commands]))
    return rows


def collect(
    ledger: ReadOnlyLedger, upto: int, *, all_tasks: bool = False, max_tasks: int = 500
) -> Audit:
    """Everything the report needs about the log up to notification id `upto`."""
    index = build(ledger.events(1, upto), timeline=True)
    by_rule: dict[str, Counter[str]] = defaultdict(Counter)
    for command in index.commands.values():
        by_rule[command.rule][command.shown_status] += 1
    acted_on = {c.event.task_id for c in index.commands.values() if c.event.task_id is not None}
    known = set(index.task_events)
    involved = (acted_on | index.ever_drifted) & known
    candidates = sorted(known if all_tasks else involved, key=natural_key)
    chosen = candidates[:max_tasks]
    pages = [
        TaskPage(
            task_id,
            moment(index.state, upto, task_id),
            chains(index, task_id, ledger.event_at),
            history(index, task_id),
        )
        for task_id in chosen
    ]
    drift_now, in_flight_now = split(index.state, index.state.views.drift.drift())
    episodes = episode_rows(index)
    return Audit(
        log=ledger.path,
        upto=upto,
        last_id=ledger.last_id,
        index=index,
        runs=sorted(index.runs.values(), key=lambda r: r.nid),
        commands=list(index.commands.values()),
        drift_series=drift_series(index),
        commands_by_rule={rule: dict(c) for rule, c in sorted(by_rule.items())},
        converge_seconds=list(index.converge_seconds),
        pages=pages,
        tasks_total=len(index.task_events),
        tasks_left_out=len(candidates) - len(chosen),
        drift_now=drift_now,
        in_flight_now=in_flight_now,
        in_flight_series=in_flight_series(index),
        tasks_drifted=len(index.ever_drifted & known),
        tasks_acted_on=len(acted_on & known),
        tasks_involved=len(involved),
        episodes=episodes,
        detection_seconds=[r.episode.detection_seconds for r in episodes],
        undated=index.undated,
    )
