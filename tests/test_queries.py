"""Queries over the views: filters, counts and pages."""

from __future__ import annotations

from collections import Counter

import pytest
from builders import status_event
from hypothesis import given, settings
from hypothesis import strategies as st
from view_histories import histories, run

from engine.drift_table import Cell, Holds
from engine.events import TaskAssigned, TaskCreated
from projections import queries as q
from projections.queries import InvalidQuery
from projections.views import Views


def fleet() -> Views:
    """t1 RUNNING on a1, t2 ASSIGNED to a2 (no word from Mesos), t3 PENDING,
    t4 FINISHED on a1, ghost RUNNING on a2 but unknown to the scheduler."""
    return run(
        TaskCreated(0.0, None, "t1", "web", 0),
        TaskCreated(0.0, None, "t2", "web", 1),
        TaskCreated(0.0, None, "t3", "batch", 0),
        TaskCreated(0.0, None, "t4", "batch", 1),
        TaskAssigned(0.0, None, "t1", "a1"),
        TaskAssigned(0.0, None, "t2", "a2"),
        TaskAssigned(0.0, None, "t4", "a1"),
        status_event("t1", "TASK_RUNNING", agent_id="a1"),
        status_event("t4", "TASK_RUNNING", agent_id="a1"),
        status_event("t4", "TASK_FINISHED", agent_id="a1"),
        status_event("ghost", "TASK_RUNNING", agent_id="a2"),
    )


def ids(page: q.Page) -> list[str]:
    return [row.task_id for row in page.items]


def test_one_task():
    views = fleet()
    row = q.task(views, "t1")
    assert row == q.TaskRow(
        "t1",
        "RUNNING",
        "TASK_RUNNING",
        "web",
        "a1",
        "a1",
        "non-terminal/non-terminal",
        "consistent",
        8,
    )
    ghost = q.task(views, "ghost")
    assert ghost.scheduler_state is None and ghost.job is None and ghost.mesos_agent_id == "a2"
    assert ghost.found_by == "implicit"
    assert q.task(views, "nope") is None


def test_filters():
    views = fleet()
    assert ids(q.tasks(views)) == ["ghost", "t1", "t2", "t3", "t4"]
    assert ids(q.tasks(views, job="web")) == ["t1", "t2"]
    assert ids(q.tasks(views, state="PENDING")) == ["t3"]
    assert ids(q.tasks(views, mesos_state="TASK_RUNNING")) == ["ghost", "t1"]
    assert ids(q.tasks(views, agent="a2")) == ["ghost", "t2"]  # assigned or reported
    assert ids(q.tasks(views, cell="absent/non-terminal")) == ["t2"]
    assert ids(q.tasks(views, cell=Cell(Holds.NON_TERMINAL, Holds.ABSENT))) == ["ghost"]
    assert ids(q.tasks(views, found_by="explicit")) == ["t2"]
    assert ids(q.tasks(views, job="batch", state="FINISHED", agent="a1")) == ["t4"]
    assert ids(q.tasks(views, job="batch", state="RUNNING")) == []


def test_counts():
    views = fleet()
    assert q.count_by(views, "job") == {"web": 2, "batch": 2, None: 1}
    assert q.count_by(views, "state") == {
        "RUNNING": 1,
        "ASSIGNED": 1,
        "PENDING": 1,
        "FINISHED": 1,
        None: 1,
    }
    assert q.count_by(views, "found_by") == {"consistent": 3, "explicit": 1, "implicit": 1}
    assert q.count_by(views, "cell")["absent/absent"] == 1
    assert q.count_by(views, "agent") == {"a1": 2, "a2": 1, None: 2}


def test_paging_by_offset_and_after():
    views = fleet()
    first = q.tasks(views, limit=2)
    assert ids(first) == ["ghost", "t1"] and first.total == 5
    assert (first.next_offset, first.next_after) == (2, "t1")
    assert ids(q.tasks(views, limit=2, offset=first.next_offset)) == ["t2", "t3"]
    assert ids(q.tasks(views, limit=2, after=first.next_after)) == ["t2", "t3"]
    last = q.tasks(views, limit=2, offset=4)
    assert ids(last) == ["t4"] and last.next_offset is None and last.next_after is None
    assert ids(q.tasks(views, after="t4")) == []


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"cell": "sideways"}, "cell"),
        ({"found_by": "magic"}, "found_by"),
        ({"state": "BOGUS"}, "state"),
        ({"state": "TASK_RUNNING"}, "state"),
        ({"mesos_state": "RUNNING"}, "mesos_state"),
        ({"state": "DELETED"}, "state"),
    ],
)
def test_invalid_arguments_are_named(kwargs, argument):
    with pytest.raises(InvalidQuery) as info:
        q.tasks(fleet(), **kwargs)
    assert info.value.argument == argument and isinstance(info.value, ValueError)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_count_by_an_unknown_key():
    with pytest.raises(InvalidQuery, match="'color'"):
        q.count_by(fleet(), "color")


@settings(max_examples=100)
@given(histories, st.integers(1, 4))
def test_pages_cover_everything_once_and_counts_add_up(history, limit):
    views = Views.rebuild(history)
    everything = q.tasks(views, limit=1000)
    assert ids(everything) == sorted(views.drift.cells, key=q.natural_key)
    by_after, after = [], None
    while True:
        page = q.tasks(views, limit=limit, after=after)
        by_after += ids(page)
        if page.next_after is None:
            break
        after = page.next_after
    by_offset, offset = [], 0
    while offset is not None:
        page = q.tasks(views, limit=limit, offset=offset)
        by_offset += ids(page)
        offset = page.next_offset
    assert by_after == by_offset == ids(everything)
    for key, field in q.KEYS.items():
        assert q.count_by(views, key) == Counter(getattr(r, field) for r in everything.items)
    for row in everything.items:
        assert row.scheduler_state == views.scheduler.get(row.task_id)
        assert row.mesos_state == views.mesos.get(row.task_id)
        assert (
            q.tasks(views, cell=row.cell, limit=1000).total == q.count_by(views, "cell")[row.cell]
        )


def test_task_ids_sort_naturally_numbers_as_numbers():
    views = run(*(TaskCreated(0.0, None, f"web/{n}", "web", n) for n in (10, 2, 1, 0, 11, 100)))
    assert ids(q.tasks(views)) == ["web/0", "web/1", "web/2", "web/10", "web/11", "web/100"]
    assert ids(q.tasks(views, after="web/2", limit=2)) == ["web/10", "web/11"]
    assert ids(q.tasks(views, after="web/10a")) == ["web/11", "web/100"]  # any text pages


@given(st.lists(st.from_regex(r"[a-c/]{0,2}[0-9]{0,3}[a-c]?", fullmatch=True), unique=True))
def test_natural_order_is_total_and_distinct_ids_keep_distinct_keys(task_ids):
    keys = [q.natural_key(t) for t in task_ids]
    assert len(set(keys)) == len(task_ids)
    ordered = sorted(task_ids, key=q.natural_key)
    assert sorted(reversed(ordered), key=q.natural_key) == ordered


def test_state_filters_take_any_case_and_name_the_nearest_state():
    views = fleet()
    assert ids(q.tasks(views, state="running")) == ids(q.tasks(views, state="RUNNING")) == ["t1"]
    assert ids(q.tasks(views, mesos_state="task_running")) == ["ghost", "t1"]
    with pytest.raises(InvalidQuery, match="did you mean TASK_RUNNING"):
        q.tasks(views, mesos_state="RUNNING")
    with pytest.raises(InvalidQuery, match="did you mean RUNNING"):
        q.tasks(views, state="RUNING")
    with pytest.raises(InvalidQuery, match="not a scheduler state") as info:
        q.tasks(views, state="BOGUS")
    assert "did you mean" not in str(info.value) and "PARTITIONED" in str(info.value)
    assert q.canonical(state="lost", mesos_state=None) == {"state": "LOST", "mesos_state": None}


def test_counts_count_the_filtered_tasks():
    views = fleet()
    assert q.count_by(views, "state", job="web") == {"RUNNING": 1, "ASSIGNED": 1}
    assert q.count_by(views, "cell", mesos_state="TASK_RUNNING") == {
        "non-terminal/non-terminal": 1,
        "non-terminal/absent": 1,
    }
    assert q.counts(q.select(views, agent="a1"), "job") == {"web": 1, "batch": 1}
