"""What the audit report shows, gathered from the log in one pass (no rendering here)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tools.forensics.history import HistoryRow, history
from tools.forensics.index import Command, LogIndex, Moment, Run, build, moment
from tools.forensics.why import Chain, chains
from tools.readonly import ReadOnlyLedger

MAX_POINTS = 600  # drift samples kept per chart (the last of each stretch)


@dataclass
class TaskPage:
    task_id: str
    now: Moment
    chains: list[Chain]
    history: list[HistoryRow]


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

    @property
    def first_time(self) -> float:
        return self.index.first_time or 0.0

    @property
    def last_time(self) -> float:
        return self.index.last_time or self.first_time


def drift_series(index: LogIndex) -> dict[str, list[tuple[float, int]]]:
    """Per drift cell, (time, tasks in it) at each change, thinned to MAX_POINTS."""
    samples = index.drift_samples
    if len(samples) > MAX_POINTS:
        step = len(samples) / MAX_POINTS
        samples = [samples[int(i * step)] for i in range(MAX_POINTS)] + [samples[-1]]
    cells = sorted({cell for s in samples for cell in s.by_cell})
    return {cell: [(s.time, s.by_cell.get(cell, 0)) for s in samples] for cell in cells}


def collect(
    ledger: ReadOnlyLedger, upto: int, *, all_tasks: bool = False, max_tasks: int = 500
) -> Audit:
    """Everything the report needs about the log up to notification id `upto`."""
    index = build(ledger.events(1, upto), timeline=True)
    by_rule: dict[str, Counter[str]] = defaultdict(Counter)
    for command in index.commands.values():
        by_rule[command.rule][command.status] += 1
    involved = {c.event.task_id for c in index.commands.values() if c.event.task_id is not None}
    involved |= index.ever_drifted
    candidates = (
        sorted(index.task_events) if all_tasks else sorted(involved & set(index.task_events))
    )
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
        drift_now=index.state.views.drift.drift(),
    )
