"""The drift view: the reconciliation table as data, every cell, and the incremental property."""

from __future__ import annotations

from typing import Any

import pytest
from builders import status_event
from expected_tables import EXPECTED_TERMINAL
from hypothesis import given, settings
from view_histories import histories, run

from engine import drift_table as dv
from engine.drift_table import TABLE, Cell, FoundBy, Holds
from engine.events import KillRequested, TaskAssigned, TaskCreated
from projections.views import Views

# The reconciliation table, rows = Mesos, columns = scheduler; written out independently of
# engine/drift_table.py.
REFERENCE = {
    ("non-terminal", "non-terminal"): "consistent",
    ("non-terminal", "terminal"): "implicit",
    ("non-terminal", "absent"): "implicit",
    ("terminal", "non-terminal"): "explicit",
    ("terminal", "terminal"): "consistent",
    ("terminal", "absent"): "consistent",
    ("absent", "non-terminal"): "explicit",
    ("absent", "terminal"): "consistent",
    ("absent", "absent"): "consistent",
}
MESOS_TERMINAL = EXPECTED_TERMINAL
SCHEDULER_LIVE = {
    "ASSIGNED",
    "STARTING",
    "RUNNING",
    "KILLING",
    "PREEMPTING",
    "RESTARTING",
    "DRAINING",
    "PARTITIONED",
}
SCHEDULER_TERMINAL = {"FINISHED", "FAILED", "KILLED", "LOST"}


def test_table_is_the_reference_table():
    assert {(str(c.mesos), str(c.scheduler)): str(f) for c, f in TABLE.items()} == REFERENCE
    assert len(TABLE) == len(Holds) ** 2


def test_table_prints_as_documentation():
    text = dv.describe()
    assert text.splitlines()[0] == "| Mesos \\ scheduler | non-terminal | terminal | absent |"
    assert "| non-terminal | consistent | implicit | implicit |" in text
    assert "| terminal | explicit | consistent | consistent |" in text
    assert "| absent | explicit | consistent | consistent |" in text
    assert len(dv.as_rows()) == 9


def test_row_and_column_maps_cover_every_state():
    assert dv.MESOS_ROW["TASK_UNKNOWN"] is Holds.ABSENT
    assert dv.MESOS_ROW["TASK_UNREACHABLE"] is Holds.NON_TERMINAL
    for column in ("INIT", "THROTTLED", "PENDING", "DELETED"):
        assert dv.SCHEDULER_COLUMN[column] is Holds.ABSENT


# --- one scenario per cell --------------------------------------------------------------------

created = TaskCreated(0.0, None, "t1", "job", 0)
assigned = TaskAssigned(0.0, None, "t1", "a1")
running = status_event("t1", "TASK_RUNNING", agent_id="a1")
unknown_answer = status_event(
    "t1", "TASK_UNKNOWN", source="SOURCE_MASTER", reason="REASON_RECONCILIATION"
)

CELL_SCENARIOS = {
    ("non-terminal", "non-terminal"): [created, assigned, running],
    # Scheduler believes LOST; the agent came back and Mesos says RUNNING.
    ("non-terminal", "terminal"): [
        created,
        assigned,
        running,
        status_event("t1", "TASK_LOST"),
        running,
    ],
    # A task the scheduler never created (or only has PENDING) runs on the cluster.
    ("non-terminal", "absent"): [running],
    # PARTITIONED -> KILLED is not a legal scheduler transition: the scheduler stays put.
    ("terminal", "non-terminal"): [
        created,
        assigned,
        running,
        status_event("t1", "TASK_UNREACHABLE"),
        status_event("t1", "TASK_KILLED"),
    ],
    ("terminal", "terminal"): [created, assigned, running, status_event("t1", "TASK_FINISHED")],
    ("terminal", "absent"): [status_event("t1", "TASK_FINISHED")],
    # Launched, but Mesos has said nothing yet (a lost launch looks exactly like this).
    ("absent", "non-terminal"): [created, assigned],
    # Finished, acknowledged, forgotten by the master.
    ("absent", "terminal"): [
        created,
        assigned,
        running,
        status_event("t1", "TASK_FINISHED"),
        unknown_answer,
    ],
    ("absent", "absent"): [created],
}


@pytest.mark.parametrize("cell", sorted(CELL_SCENARIOS))
def test_every_cell_has_a_scenario(cell):
    views = run(*CELL_SCENARIOS[cell])
    got = views.drift.cell("t1")
    assert (str(got.mesos), str(got.scheduler)) == cell
    found_by = REFERENCE[cell]
    drift = views.drift.drift()
    if found_by == "consistent":
        assert drift == []
    else:
        (only,) = drift
        assert only.task_id == "t1" and only.found_by == found_by
        assert only.since == len(CELL_SCENARIOS[cell])  # the last event moved it there
        assert only.scheduler_state == views.scheduler.get("t1")
        assert only.mesos_state == views.mesos.get("t1")


def test_pending_task_reported_running_is_found_by_implicit():
    views = run(created, running)
    assert views.scheduler.get("t1") == "PENDING"
    assert views.drift.cell("t1") == Cell(Holds.NON_TERMINAL, Holds.ABSENT)


def test_task_unknown_for_a_running_task_is_found_by_explicit():
    views = run(created, assigned, running, unknown_answer)
    assert views.scheduler.get("t1") == "PARTITIONED"
    (only,) = views.drift.drift()
    assert only.cell == Cell(Holds.ABSENT, Holds.NON_TERMINAL)
    assert only.found_by is FoundBy.EXPLICIT and only.since == 4


def test_since_stays_while_in_the_cell_and_resets_on_a_new_cell():
    views = run(created, assigned, assigned, KillRequested(0.0, None, "t1"))
    # ASSIGNED at 2, a noop at 3, KILLING at 4: the same cell (absent/non-terminal) all along.
    (only,) = views.drift.drift()
    assert only.since == 2 and only.scheduler_state == "KILLING"
    views = run(created, assigned, running, unknown_answer, status_event("t1", "TASK_KILLED"))
    (only,) = views.drift.drift()
    assert only.cell == Cell(Holds.TERMINAL, Holds.NON_TERMINAL) and only.since == 5


def test_consistent_again_leaves_the_drift_list():
    views = run(created, assigned)
    assert len(views.drift.drift()) == 1
    views.apply(3, running._replace(time=3.0))
    assert views.drift.drift() == [] and views.drift.disagreements == {}
    assert views.drift.cells["t1"] == (Cell(Holds.NON_TERMINAL, Holds.NON_TERMINAL), 3)


def test_a_task_neither_view_knows_has_no_cell():
    views = run(TaskAssigned(0.0, None, "ghost", "a1"))  # illegal for an unknown task
    assert views.drift.cell("ghost") is None and views.drift.cells == {}


# --- the property -----------------------------------------------------------------------------


def direct_cell(views: Views, task_id: str) -> tuple[str, str] | None:
    """The cell computed from the two views' answers and the reference sets alone."""
    mesos = views.mesos.get(task_id)
    record = views.scheduler.record(task_id)
    if mesos is None and record is None:
        return None
    if mesos is None or mesos == "TASK_UNKNOWN":
        row = "absent"
    else:
        row = "terminal" if mesos in MESOS_TERMINAL else "non-terminal"
    state = None if record is None else record.state
    if state in SCHEDULER_LIVE:
        column = "non-terminal"
    elif state in SCHEDULER_TERMINAL:
        column = "terminal"
    else:
        column = "absent"
    return row, column


@settings(max_examples=300)
@given(histories)
def test_every_task_in_exactly_one_cell_matching_a_direct_computation(history: list[Any]):
    views = Views()
    entered: dict[str, tuple[tuple[str, str], int]] = {}
    for nid, event in history:
        views.apply(nid, event)
        # Brute force: recompute every task's cell after every event.
        for task_id in set(views.scheduler.tasks) | set(views.mesos.tasks):
            cell = direct_cell(views, task_id)
            if task_id not in entered or entered[task_id][0] != cell:
                entered[task_id] = (cell, nid)
    drift = views.drift
    assert set(drift.cells) == set(views.scheduler.tasks) | set(views.mesos.tasks)
    for task_id, (cell, since) in drift.cells.items():
        assert isinstance(cell, Cell) and cell in TABLE  # exactly one, and a real one
        assert ((str(cell.mesos), str(cell.scheduler)), since) == entered[task_id]
    disagreeing = {
        task_id: entry
        for task_id, entry in drift.cells.items()
        if REFERENCE[(str(entry[0].mesos), str(entry[0].scheduler))] != "consistent"
    }
    assert drift.disagreements == disagreeing
    listed = drift.drift()
    assert {d.task_id for d in listed} == set(disagreeing)
    assert [(d.since, d.task_id) for d in listed] == sorted((d.since, d.task_id) for d in listed)
    for d in listed:
        assert str(d.found_by) == REFERENCE[(str(d.cell.mesos), str(d.cell.scheduler))]
