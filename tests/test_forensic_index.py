"""The forensic index sees what the saga saw: its runs and commands are the saga's records."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from saga_cluster import FakeMaster, run_for, status

from engine.events import LeaderElected, TaskCreated
from engine.ledger import Ledger
from tools.forensics.index import build


def test_runs_and_commands_are_the_sagas_own_records(tmp_path):
    master = FakeMaster()
    master.agent("a1")
    with Ledger.open(tmp_path / "l") as ledger:
        ledger.task_created("web/0", job="web", time=0)
        ledger.task_assigned("web/0", agent_id="a1", time=0)
        master.launch("web/0", "a1")
        master.launch("ghost/1", "a1")  # a rogue: killed by the implicit run
        master.deliver(ledger, 0)
        ledger.status_update(status("web/0", "TASK_FAILED"), time=1)  # rescheduled
        ledger.reconcile("implicit", now=2)
        run_for(ledger, master, 2, 60)
        ledger.reconcile("explicit", now=70)  # still running at the end of the log
        index = build(ledger.events())
        saga = ledger.saga
        assert index.state.saga == saga
        assert set(index.commands) == set(saga.outbox.commands)
        for cid, command in index.commands.items():
            record = saga.outbox.commands[cid]
            assert command.record is index.state.saga.outbox.commands[cid]
            assert command.record == record and command.event == record.issued
            settled = record.status in ("confirmed", "cancelled")
            assert command.outcome_time == (record.settled_at if settled else None)
        statuses = {c.kind: c.status for c in index.commands.values()}
        assert statuses["KILL"] == "confirmed" and statuses["RESCHEDULE"] == "confirmed"
        implicit, explicit = index.runs["implicit-1"], index.runs["explicit-2"]
        assert index.runs["explicit-1"].superseded_by == "explicit-2"  # the schedule's, at 60
        assert implicit.outcome == "quiet"
        assert implicit.saga.answered == implicit.completed.answered == 1  # ghost/1 answered
        assert sum(implicit.completed.by_rule.values()) == len(implicit.commands) == 2
        assert explicit.outcome is None  # still running: the saga's live record of it
        assert explicit.saga is index.state.saga.runs.active["explicit"]
        assert explicit.saga == saga.runs.active["explicit"]


@given(st.lists(st.booleans(), max_size=40))
def test_each_event_is_written_by_the_leader_elected_last_before_it(elections: list[bool]):
    """A LeaderElected wherever `elections` says True, a task's event elsewhere: every
    event's writer is the last LeaderElected at or before it, and none before the first."""
    events, epoch = [], 0
    for nid, elected in enumerate(elections, start=1):
        if elected:
            epoch += 1
            events.append((nid, LeaderElected(float(nid), None, epoch, f"r{epoch}")))
        else:
            events.append((nid, TaskCreated(float(nid), None, f"web/{nid}/x", "web", nid)))
    leaders = build(events).leaders
    latest = None
    for nid, event in events:
        if type(event) is LeaderElected:
            latest = (nid, event.epoch, event.replica)
        writer = leaders.writer_of(nid)
        assert (None if writer is None else (writer.nid, writer.epoch, writer.replica)) == latest
