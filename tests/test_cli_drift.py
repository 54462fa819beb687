"""`taskledger drift`: launches in flight apart from the drift, and since-times read from the
views (one read of the log for the rest), equal to the log's own."""

from __future__ import annotations

import json

import pytest
from cli_log import T0, as_json, run
from hypothesis import given, settings
from hypothesis import strategies as st
from view_histories import histories

from engine.drift_table import Cell, FoundBy, Holds
from engine.ledger import Ledger
from projections.drift_view import Drift
from projections.views import Views
from tools.commands import drift as drift_command_module
from tools.commands.common import _finite
from tools.readonly import ReadOnlyLedger


def test_a_launch_in_flight_is_not_drift(story_log):
    # id 3: web/0 assigned to agent-1; Mesos has not spoken of it yet.
    data = as_json("drift", "--log", story_log, "--as-of", "3")
    assert data["total"] == 0 and data["cells"] == []
    assert data["in_flight"]["count"] == 1
    (task,) = data["in_flight"]["tasks"]
    assert task["task_id"] == "web/0" and task["scheduler_state"] == "ASSIGNED"
    assert task["mesos_state"] is None and task["since"] == 3
    assert task["since_iso"] == "2024-05-01T03:00:02Z"
    text = run("drift", "--log", story_log, "--as-of", "3").stdout
    assert "no drift" in text and "1 launch(es) in flight" in text and "web/0" in text
    # Its first update ends the flight: nothing in flight, nothing drifting.
    after = as_json("drift", "--log", story_log, "--as-of", "4")
    assert after["in_flight"] == {"count": 0, "tasks": []} and after["total"] == 0
    # --cell of another cell leaves launches out.
    other = as_json("drift", "--log", story_log, "--as-of", "3", "--cell", "non-terminal/absent")
    assert other["in_flight"]["count"] == 0


def test_a_launch_the_saga_finds_overdue_is_drift(tmp_path):
    path = str(tmp_path / "log")
    with Ledger.open(path, durable=False) as ledger:
        ledger.framework_registered("fw-1", "master-1", time=T0)
        ledger.task_created("web/0/g0", job="web", instance=0, time=T0 + 1)
        ledger.task_assigned("web/0/g0", agent_id="agent-1", time=T0 + 2)
        before = ledger.last_id
        ledger.tick(now=T0 + 400)  # past the transient timeout: R-TRANSIENT-RECONCILE
        asked = [c for c in ledger.pending_commands() if c.rule == "R-TRANSIENT-RECONCILE"]
        assert asked, "the saga did not ask about the overdue launch"
    flying = as_json("drift", "--log", path, "--as-of", str(before))
    assert flying["total"] == 0 and flying["in_flight"]["count"] == 1
    overdue = as_json("drift", "--log", path)
    assert overdue["in_flight"]["count"] == 0
    assert [(c["cell"], c["count"]) for c in overdue["cells"]] == [("absent/non-terminal", 1)]


def since_times_from_the_log(path: str, upto: int, data: dict) -> list[tuple]:
    with ReadOnlyLedger.open(path) as ledger:
        tasks = [t for c in data["cells"] for t in c["tasks"]] + data["in_flight"]["tasks"]
        return [(t["since_time"], ledger.event_at(t["since"]).time) for t in tasks]


@pytest.mark.parametrize("upto", [3, 12, 21])
def test_since_times_are_the_log_s_own_story(story_log, upto):
    data = as_json("drift", "--log", story_log, "--as-of", str(upto))
    pairs = since_times_from_the_log(story_log, upto, data)
    assert pairs and all(a == b for a, b in pairs)


def test_since_times_are_the_log_s_own_partition(partition_log):
    path, ids = partition_log
    for upto in range(ids["unreachable"], ids["last"] + 1):
        data = as_json("drift", "--log", path, "--as-of", str(upto))
        assert all(a == b for a, b in since_times_from_the_log(path, upto, data))


def test_text_lists_show_tasks_per_cell(tmp_path):
    path = str(tmp_path / "log")
    with Ledger.open(path, durable=False) as ledger:
        for n in range(25):
            ledger.status_update(
                {"task_id": {"value": f"rogue/{n}"}, "state": "TASK_RUNNING"}, time=T0 + n
            )
    text = run("drift", "--log", path, "--show", "3").stdout
    assert "25 task(s) in disagreement" in text and "... and 22 more" in text
    assert as_json("drift", "--log", path)["cells"][0]["count"] == 25
    assert len(as_json("drift", "--log", path)["cells"][0]["tasks"]) == 25


@given(
    st.text(),
    st.sampled_from([None, "ASSIGNED", "RUNNING"]),
    st.sampled_from([None, "TASK_RUNNING", "TASK_UNKNOWN"]),
    st.integers(0, 2**62),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_the_json_fast_path_writes_what_the_dict_would(task_id, scheduler, mesos, since, when):
    cell = Cell(Holds.ABSENT, Holds.NON_TERMINAL)
    d = Drift(task_id, cell, FoundBy.EXPLICIT, since, scheduler, mesos)
    times = {} if when is None else {since: when}
    expected = json.loads(json.dumps(_finite(drift_command_module.task_json(d, times))))
    assert json.loads(drift_command_module.task_text(d, times)) == expected


@settings(max_examples=100)
@given(histories)
def test_what_changed_a_task_is_what_its_record_says(history):
    views = Views.rebuild(history)
    for view in (views.scheduler, views.mesos):
        for task_id in views.drift.cells:
            record = view.record(task_id)
            expected = None if record is None else (record.nid, record.time)
            assert view.changed(task_id) == expected
    assert views.mesos.changed("never-seen") is None
