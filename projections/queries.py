"""Queries over the views: tasks by id, job, state, agent and drift cell; counts; pages.

Read-only functions over a `projections.views.Views` (anything with .scheduler, .mesos
and .drift). They scan the views' dicts: O(tasks) per query, with no index to keep up to date
on the replay path; results are ordered by task id, naturally (numbers as numbers: web/2
before web/10), so pages are stable.

State filters name a state of their view (engine/lifecycle.py's ScheduleStatus for `state`,
engine/mesos_states.py's for `mesos_state`), in any case ("running" is RUNNING); anything
else is an InvalidQuery naming the nearest valid value.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from engine.drift_table import TABLE, Cell, FoundBy, Holds
from engine.lifecycle import ScheduleStatus
from engine.mesos_states import BY_NAME as MESOS_STATES


class InvalidQuery(ValueError):
    """A query argument that cannot be answered (names the argument and value)."""

    def __init__(self, argument: str, value: object, problem: str) -> None:
        super().__init__(f"query argument {argument}={value!r}: {problem}")
        self.argument = argument
        self.value = value


class TaskRow(NamedTuple):
    """One task as both views and the drift table see it."""

    task_id: str
    scheduler_state: str | None  # None: unknown to the scheduler, or DELETED
    mesos_state: str | None  # None: Mesos never spoke of it
    job: str | None
    agent_id: str | None  # the agent the scheduler assigned
    mesos_agent_id: str | None  # the agent Mesos last named
    cell: str  # e.g. "non-terminal/absent" (Mesos first)
    found_by: str  # "consistent", "explicit" or "implicit"
    since: int  # notification id at which the task entered its cell


class Page(NamedTuple):
    """A page of rows; pass next_after (or next_offset) to get the next one."""

    items: list[TaskRow]
    total: int  # rows matching the filters, over all pages
    next_offset: int | None  # offset of the next page from the first matching row
    next_after: str | None


# The keys count_by() and the filters of tasks() understand, and the row field each reads.
KEYS: dict[str, str] = {
    "job": "job",
    "state": "scheduler_state",
    "mesos_state": "mesos_state",
    "agent": "agent_id",
    "cell": "cell",
    "found_by": "found_by",
}

_CELL_LABELS = frozenset(cell.label for cell in TABLE)
_FOUND_BY = frozenset(FoundBy)
# The values a state filter can match: DELETED tasks are not in the scheduler view (their
# state reads as None), so no filter finds them.
SCHEDULER_STATES: tuple[str, ...] = tuple(
    s.value for s in ScheduleStatus if s is not ScheduleStatus.DELETED
)
MESOS_STATE_NAMES: tuple[str, ...] = tuple(MESOS_STATES)
_STATE_FILTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "state": ("scheduler", SCHEDULER_STATES),
    "mesos_state": ("Mesos", MESOS_STATE_NAMES),
}

_NUMBERS = re.compile(r"(\d+)", re.ASCII)


def natural_key(task_id: str) -> tuple:
    """The sort key of a task id with its numbers as numbers: web/2 < web/10 < web/10a.
    Text and numbers alternate in the key, so any two keys compare; the id itself breaks
    the tie between spellings of one number (web/01, web/1)."""
    parts = _NUMBERS.split(task_id)  # text, number, text, ...: always text at even places
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), task_id


def nearest(value: str, choices: Iterable[str]) -> str | None:
    """The valid value closest to a mistyped one (None if nothing is close)."""
    options = list(choices)
    by_upper = {c.upper(): c for c in options}
    upper = value.upper()
    for guess in (upper, "TASK_" + upper):  # RUNNING for a Mesos state: TASK_RUNNING
        if guess in by_upper and by_upper[guess] != value:
            return by_upper[guess]
    close = difflib.get_close_matches(upper, list(by_upper), n=1, cutoff=0.5)
    return by_upper[close[0]] if close else None


def _state(argument: str, value: str) -> str:
    """A state filter's value as its view spells it (any case); InvalidQuery otherwise."""
    view, valid = _STATE_FILTERS[argument]
    for name in valid:
        if name == value.upper():
            return name
    guess = nearest(value, valid)
    hint = f"did you mean {guess}? " if guess else ""
    problem = f"not a {view} state ({hint}one of {', '.join(valid)})"
    raise InvalidQuery(argument, value, problem)


def _row(views: Any, task_id: str) -> TaskRow | None:
    entry = views.drift.cells.get(task_id)
    if entry is None:
        return None
    cell, since = entry
    scheduler_task = views.scheduler.tasks.get(task_id)
    mesos_task = views.mesos.tasks.get(task_id)
    return TaskRow(
        task_id,
        views.scheduler.get(task_id),
        None if mesos_task is None else mesos_task.state,
        None if scheduler_task is None else scheduler_task.job,
        None if scheduler_task is None else scheduler_task.agent_id,
        None if mesos_task is None else mesos_task.agent_id,
        cell.label,
        str(TABLE[cell]),
        since,
    )


def task(views: Any, task_id: str) -> TaskRow | None:
    """The row of one task, or None if neither view knows it."""
    return _row(views, task_id)


def _rows(views: Any) -> Iterator[TaskRow]:
    for task_id in sorted(views.drift.cells, key=natural_key):
        row = _row(views, task_id)
        if row is not None:
            yield row


def _check_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """The filters with each state as its view spells it; InvalidQuery for a bad one."""
    checked = dict(filters)
    for argument in _STATE_FILTERS:
        value = filters.get(argument)
        if value is not None:
            checked[argument] = _state(argument, str(value))
    cell = filters.get("cell")
    if cell is not None and cell not in _CELL_LABELS:
        raise InvalidQuery("cell", cell, f"not a cell (one of {sorted(_CELL_LABELS)})")
    found_by = filters.get("found_by")
    if found_by is not None and found_by not in _FOUND_BY:
        raise InvalidQuery("found_by", found_by, f"not one of {sorted(_FOUND_BY)}")
    return checked


def canonical(**filters: Any) -> dict[str, Any]:
    """The given filters (None: not given) as `tasks` applies them: each state as its view
    spells it. InvalidQuery names the first bad one."""
    cell = filters.get("cell")
    if isinstance(cell, tuple):
        filters["cell"] = Cell(Holds(cell[0]), Holds(cell[1])).label
    return _check_filters(filters)


def select(
    views: Any,
    *,
    job: str | None = None,
    state: str | None = None,
    mesos_state: str | None = None,
    agent: str | None = None,
    cell: str | Cell | None = None,
    found_by: str | None = None,
) -> list[TaskRow]:
    """Every row matching every given filter, in natural task-id order (see `tasks`)."""
    filters = canonical(job=job, state=state, mesos_state=mesos_state, cell=cell, found_by=found_by)
    wanted = [(KEYS[key], value) for key, value in filters.items() if value is not None]
    return [
        row
        for row in _rows(views)
        if (agent is None or agent in (row.agent_id, row.mesos_agent_id))
        and all(getattr(row, name) == value for name, value in wanted)
    ]


def page(
    rows: list[TaskRow], *, offset: int = 0, limit: int = 100, after: str | None = None
) -> Page:
    """One page of rows in natural task-id order: after the task id `after` (exclusive, any
    text), then `offset` rows on."""
    if type(offset) is not int or offset < 0:
        raise InvalidQuery("offset", offset, "must be an int >= 0")
    if type(limit) is not int or limit < 1:
        raise InvalidQuery("limit", limit, "must be an int >= 1")
    start = offset
    if after is not None:
        start += bisect_right([natural_key(row.task_id) for row in rows], natural_key(after))
    items = rows[start : start + limit]
    more = start + limit < len(rows)
    return Page(
        items,
        len(rows),
        start + limit if more else None,
        items[-1].task_id if more and items else None,
    )


def counts(rows: Iterable[TaskRow], key: str) -> dict[str | None, int]:
    """How many of `rows` have each value of `key` (one of KEYS); None counts "not known"."""
    if key not in KEYS:
        raise InvalidQuery("key", key, f"not one of {sorted(KEYS)}")
    name = KEYS[key]
    return dict(Counter(getattr(row, name) for row in rows))


def tasks(
    views: Any,
    *,
    job: str | None = None,
    state: str | None = None,
    mesos_state: str | None = None,
    agent: str | None = None,
    cell: str | Cell | None = None,
    found_by: str | None = None,
    offset: int = 0,
    limit: int = 100,
    after: str | None = None,
) -> Page:
    """Rows matching every given filter, ordered by task id (naturally), one page of them.

    `agent` matches the scheduler's assigned agent or the agent Mesos last named. `cell` is a
    Cell or its label ("non-terminal/absent"). `state` / `mesos_state` are states of their
    view, in any case. Page with `after` (the last task id seen, exclusive) or `offset`;
    both apply in that order.
    """
    rows = select(
        views,
        job=job,
        state=state,
        mesos_state=mesos_state,
        agent=agent,
        cell=cell,
        found_by=found_by,
    )
    return page(rows, offset=offset, limit=limit, after=after)


def count_by(views: Any, key: str, **filters: Any) -> dict[str | None, int]:
    """How many tasks (of those matching `filters`, as `tasks` takes them: all by default)
    have each value of `key` (one of KEYS); None counts "not known".

    "agent" counts by the scheduler's assigned agent."""
    if key not in KEYS:
        raise InvalidQuery("key", key, f"not one of {sorted(KEYS)}")
    return counts(select(views, **filters), key)
