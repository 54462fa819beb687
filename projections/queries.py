"""Queries over the views: tasks by id, job, state, agent and drift cell; counts; pages.

Read-only functions over a `projections.views.Views` (anything with .scheduler, .mesos
and .drift). They scan the views' dicts: O(tasks) per query, with no index to keep up to date
on the replay path; results are ordered by task id so pages are stable.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

from engine.drift_table import TABLE, Cell, FoundBy, Holds


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
    for task_id in sorted(views.drift.cells):
        row = _row(views, task_id)
        if row is not None:
            yield row


def _check_filters(filters: dict[str, Any]) -> None:
    cell = filters.get("cell")
    if cell is not None and cell not in _CELL_LABELS:
        raise InvalidQuery("cell", cell, f"not a cell (one of {sorted(_CELL_LABELS)})")
    found_by = filters.get("found_by")
    if found_by is not None and found_by not in _FOUND_BY:
        raise InvalidQuery("found_by", found_by, f"not one of {sorted(_FOUND_BY)}")


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
    """Rows matching every given filter, ordered by task id, one page of them.

    `agent` matches the scheduler's assigned agent or the agent Mesos last named. `cell` is a
    Cell or its label ("non-terminal/absent"). Page with `after` (the last task id seen,
    exclusive) or `offset`; both apply in that order.
    """
    if isinstance(cell, tuple):
        cell = Cell(Holds(cell[0]), Holds(cell[1])).label
    filters = {
        "job": job,
        "state": state,
        "mesos_state": mesos_state,
        "cell": cell,
        "found_by": found_by,
    }
    _check_filters(filters)
    if type(offset) is not int or offset < 0:
        raise InvalidQuery("offset", offset, "must be an int >= 0")
    if type(limit) is not int or limit < 1:
        raise InvalidQuery("limit", limit, "must be an int >= 1")
    wanted = [(KEYS[key], value) for key, value in filters.items() if value is not None]
    matched = []
    for row in _rows(views):
        if agent is not None and agent not in (row.agent_id, row.mesos_agent_id):
            continue
        if all(getattr(row, name) == value for name, value in wanted):
            matched.append(row)
    start = offset
    if after is not None:
        start += bisect_right([row.task_id for row in matched], after)
    items = matched[start : start + limit]
    more = start + limit < len(matched)
    return Page(
        items,
        len(matched),
        start + limit if more else None,
        items[-1].task_id if more and items else None,
    )


def count_by(views: Any, key: str) -> dict[str | None, int]:
    """How many tasks have each value of `key` (one of KEYS); None counts "not known".

    "agent" counts by the scheduler's assigned agent."""
    if key not in KEYS:
        raise InvalidQuery("key", key, f"not one of {sorted(KEYS)}")
    name = KEYS[key]
    counts: Counter[str | None] = Counter(getattr(row, name) for row in _rows(views))
    return dict(counts)
