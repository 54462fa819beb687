"""The outbox and the dispatcher: records, failures, crash safety, dry run, breaker, rate."""

from __future__ import annotations

import pytest
from saga_cluster import FakeMaster, issued, status, topics

from engine.events import TaskCreated
from engine.ledger import Ledger
from engine.outbox import DispatchConfig, replacement_id
from engine.saga import SagaConfig


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "l") as opened:
        yield opened


def running(ledger: Ledger, count: int, prefix: str = "web") -> list[str]:
    tasks = [f"{prefix}/{i}" for i in range(count)]
    for task in tasks:
        ledger.task_created(task, job=prefix, instance=int(task.split("/")[1]), time=0)
        ledger.task_assigned(task, agent_id="a1", time=0)
        ledger.status_update(status(task, "TASK_RUNNING"), time=0)
    return tasks


def rogues(ledger: Ledger, count: int) -> list[str]:
    tasks = [f"rogue/{i}" for i in range(count)]
    for task in tasks:
        ledger.status_update(status(task, "TASK_RUNNING"), time=1)
    return tasks


def test_pending_commands_are_records_with_kind_task_rule_evidence(ledger):
    running(ledger, 1)
    ledger.kill_requested("web/0", time=1)
    ledger.tick(now=1)
    (command,) = ledger.pending_commands()
    assert command.kind == "KILL" and command.task_id == "web/0"
    assert command.rule == "R-KILL-REQUESTED"
    assert command.evidence == (4,) and command.agent_id == "a1"
    assert command.status == "issued"
    report = ledger.dispatch(lambda c: None, now=1)
    assert report.dispatched == [command.command_id]
    assert ledger.pending_commands() == []
    assert ledger.saga.outbox.commands[command.command_id].status == "dispatched"


def test_a_failed_send_is_recorded_and_tried_again_with_backoff(ledger):
    running(ledger, 1)
    ledger.kill_requested("web/0", time=1)
    ledger.tick(now=1)

    def broken(command):
        raise ConnectionError("master unreachable")

    report = ledger.dispatch(broken, now=1)
    assert report.failed and not report.dispatched
    (failed,) = topics(ledger, "CommandFailed")
    assert "master unreachable" in failed.error and failed.retry_at == 2.0
    assert ledger.dispatch(broken, now=1.5).failed == []  # not before retry_at
    assert ledger.dispatch(broken, now=2).failed  # again, now waits 2 s
    assert topics(ledger, "CommandFailed")[-1].retry_at == 4.0
    sent = []
    assert ledger.dispatch(sent.append, now=4).dispatched
    assert [c.kind for c in sent] == ["KILL"]


def test_crash_before_dispatch_loses_no_command(tmp_path):
    path = tmp_path / "l"
    with Ledger.open(path) as ledger:
        running(ledger, 1)
        ledger.kill_requested("web/0", time=1)
        ledger.tick(now=1)  # decided and durable; the process dies before dispatching
    with Ledger.open(path) as ledger:
        assert [c.kind for c in ledger.pending_commands()] == ["KILL"]
        assert ledger.tick(now=2) == []  # not decided twice


def test_crash_between_send_and_record_resends_only_idempotent_commands(tmp_path):
    path = tmp_path / "l"
    master = FakeMaster()
    with Ledger.open(path) as ledger:
        running(ledger, 2)
        ledger.kill_requested("web/0", time=1)
        ledger.status_update(status("web/1", "TASK_GONE"), time=1)  # -> RESCHEDULE
        ledger.tick(now=1)
        kinds = sorted(c.kind for c in ledger.pending_commands())
        assert kinds == ["KILL", "RESCHEDULE"]

        class Crash(BaseException):
            pass

        def send_then_die(command):
            master.sent.append(command)
            raise Crash  # sent, but the process dies before recording it

        with pytest.raises(Crash):
            ledger.dispatch(send_then_die, now=1)
        # The local RESCHEDULE was not reached; the KILL went out without a record.
        assert [c.kind for c in master.sent] == ["KILL"]
    with Ledger.open(path) as ledger:
        pending = {c.kind: c for c in ledger.pending_commands()}
        assert set(pending) == {"KILL", "RESCHEDULE"}  # nothing lost
        ledger.dispatch(master.send, now=2)  # the KILL again: harmless
        assert [c.kind for c in master.sent] == ["KILL", "KILL"]
        created = [e for _, e in ledger.events() if type(e) is TaskCreated]
        assert [e.task_id for e in created[2:]] == [
            replacement_id("web/1", "web", 1, pending["RESCHEDULE"].command_id)
        ]
        ledger.dispatch(master.send, now=3)
        assert len([e for _, e in ledger.events() if type(e) is TaskCreated]) == 3  # once


def test_reschedule_is_deduplicated_by_its_derived_task_id(ledger):
    running(ledger, 1)
    ledger.status_update(status("web/0", "TASK_GONE"), time=1)
    ledger.tick(now=1)
    (command,) = ledger.pending_commands()
    new_id = replacement_id("web/0", "web", 0, command.command_id)
    # Someone created the replacement already (e.g. an earlier attempt): no second launch.
    ledger.task_created(new_id, job="web", time=1)
    ledger.dispatch(lambda c: None, now=2)
    assert sum(1 for _, e in ledger.events() if type(e) is TaskCreated and e.task_id == new_id) == 1
    (confirmed,) = topics(ledger, "CommandConfirmed")
    assert "exists" in confirmed.outcome
    assert ledger.saga.replaced_by == {"web/0": new_id}


def test_dry_run_decides_and_records_but_never_acts(ledger):
    ledger.saga_config = SagaConfig(dry_run=True)
    running(ledger, 3)
    rogues(ledger, 1)
    ledger.reconcile("explicit", now=2)
    sent = []
    report = ledger.dispatch(sent.append, now=2)
    assert [c.kind for c in sent] == ["RECONCILE"]  # read-only questions still go out
    assert [why for _, why in report.held] == ["dry run"]
    (kill,) = [c for c in ledger.pending_commands() if c.kind == "KILL"]
    assert kill.dry_run and kill.rule == "R-IMPLICIT-KILL-UNKNOWN"
    for now in range(3, 100):
        ledger.tick(now=now)
        ledger.dispatch(sent.append, now=now)
    assert [c.kind for c in sent if c.kind != "RECONCILE"] == []
    assert len([1 for _, e in issued(ledger) if e.kind == "KILL"]) == 1  # decided once
    ledger.saga_config = SagaConfig()  # live again: the dry-run decision is re-made for real
    ledger.tick(now=100)
    ledger.dispatch(sent.append, now=100)
    assert [(c.kind, c.dry_run) for c in sent if c.kind == "KILL"] == [("KILL", False)]


def test_blast_radius_breaker_halts_until_an_operator_resumes(ledger):
    ledger.saga_config = SagaConfig(dispatch=DispatchConfig(breaker_min=3))
    running(ledger, 10)
    rogues(ledger, 1)
    for task in ("web/0", "web/1", "web/2"):  # a disaster: 3 of 10 tasks killed at once
        ledger.kill_requested(task, time=2)
    ledger.tick(now=2)
    sent = []
    report = ledger.dispatch(sent.append, now=2)
    assert report.halted and sent == []
    (halted,) = topics(ledger, "DispatchHalted")
    assert halted.affected == 4 and halted.total == 11 and "4 of 11" in halted.reason
    assert all(why == "breaker halted dispatch" for _, why in report.held)
    assert ledger.dispatch(sent.append, now=3).held and sent == []  # stays halted
    assert ledger.resume(now=4, operator="alice", reason="planned drain") is not None
    assert ledger.resume(now=4, operator="alice") is None  # not halted any more
    ledger.dispatch(sent.append, now=4)
    assert sorted(c.task_id for c in sent) == ["rogue/0", "web/0", "web/1", "web/2"]


def test_kills_of_tasks_mesos_does_not_run_do_not_count_for_the_breaker(ledger):
    # After a scheduler crash: tasks assigned but never launched (or reported lost) are
    # killed (Aurora's kill on ASSIGNED -> LOST), which destroys nothing on the cluster.
    ledger.saga_config = SagaConfig(dispatch=DispatchConfig(breaker_min=3))
    running(ledger, 10)
    ghosts = [f"ghost/{i}" for i in range(6)]
    for i, task in enumerate(ghosts):
        ledger.task_created(task, job="ghost", instance=i, time=1)
        ledger.task_assigned(task, agent_id="a1", time=1)
    ledger.status_update(status("ghost/5", "TASK_LOST"), time=1)
    for task in ghosts:
        ledger.kill_requested(task, time=2)
    ledger.tick(now=2)
    sent = []
    report = ledger.dispatch(sent.append, now=2)
    assert not report.halted and topics(ledger, "DispatchHalted") == []
    assert sorted(c.task_id for c in sent if c.kind == "KILL") == ghosts
    # Kills of running tasks still count, and the ghosts' kills did not make them cheaper.
    for task in ("web/0", "web/1", "web/2", "web/3"):
        ledger.kill_requested(task, time=3)
    ledger.tick(now=3)
    assert ledger.dispatch(sent.append, now=3).halted
    (halted,) = topics(ledger, "DispatchHalted")
    assert halted.affected == 4


def test_breaker_does_not_trip_for_a_normal_share(ledger):
    ledger.saga_config = SagaConfig(dispatch=DispatchConfig(breaker_min=1))
    running(ledger, 10)
    ledger.kill_requested("web/0", time=2)
    ledger.tick(now=2)
    assert not ledger.dispatch(lambda c: None, now=2).halted


def test_kills_are_rate_limited(ledger):
    ledger.saga_config = SagaConfig(
        dispatch=DispatchConfig(kill_rate_limit=2, kill_rate_window=10, breaker_min=10**6)
    )
    running(ledger, 1)
    rogues(ledger, 5)
    ledger.tick(now=2)
    sent = []
    report = ledger.dispatch(sent.append, now=2)
    assert len(sent) == 2 and [why for _, why in report.held] == ["kill rate limit"] * 3
    ledger.dispatch(sent.append, now=5)
    assert len(sent) == 2
    ledger.dispatch(sent.append, now=12.5)
    assert len(sent) == 4
