"""A scheduler of your own with taskledger as its storage and state engine.

    .venv/bin/python examples/embedded_scheduler.py [LOG_FOLDER]

Mesos is played here by a few lines (`FakeMesos`) so that the example runs anywhere; in a
real scheduler the same calls come from your driver's callbacks (pymesos's statusUpdate,
resourceOffers, ...) and `send` calls the driver. The order is always: append to the Ledger
(durable), then act on Mesos; acknowledge an update only after `status_update` returned.
"""

from __future__ import annotations

import base64
import sys
import tempfile

from engine import Ledger

T0 = 1_714_532_400.0  # every time is given explicitly: the same log decides the same


def uuid(n: int) -> str:
    """A status update's uuid as Mesos sends it: base64 of 16 bytes."""
    return base64.b64encode(n.to_bytes(16, "big")).decode()


def status(task: str, state: str, *, at: float, n: int | None = None, **more: str) -> dict:
    """A Mesos v1 TaskStatus dict, as pymesos hands it to statusUpdate."""
    update = {
        "task_id": {"value": task},
        "state": state,
        "agent_id": {"value": "agent-1"},
        "source": "SOURCE_EXECUTOR",
        "timestamp": at,
        **more,
    }
    if n is not None:  # agent and executor updates carry a uuid (and must be acknowledged)
        update["uuid"] = uuid(n)
    return update


class FakeMesos:
    """What `send` talks to here; your driver in a real scheduler."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def kill(self, task_id: str, agent_id: str | None) -> None:
        self.calls.append(f"KILL {task_id} on {agent_id}")

    def reconcile(self, tasks: list[tuple[str, str | None]]) -> None:
        self.calls.append(f"RECONCILE {tasks or 'implicit'}")


def make_send(mesos: FakeMesos):
    """The dispatcher's `send`: carry one remote command to Mesos, or raise (it stays
    pending and is tried again with backoff). Only KILL and RECONCILE ever reach it; the
    local kinds (RESCHEDULE, MARK_LOST) are applied by the dispatcher itself, in the log."""

    def send(command) -> None:
        if command.kind == "KILL":
            # Name the agent: the master's answer depends on it (GONE, UNREACHABLE, ...).
            mesos.kill(command.task_id, command.agent_id)
        elif command.kind == "RECONCILE":
            # () is an implicit request; otherwise each task goes with its agent.
            mesos.reconcile(list(zip(command.tasks or (), command.agents or (), strict=True)))
        else:
            raise ValueError(f"not a remote command: {command.kind}")

    return send


def main(folder: str) -> int:
    mesos = FakeMesos()
    send = make_send(mesos)
    with Ledger.open(folder) as ledger:
        # 1. The scheduler's facts: two instances of a job, created and assigned (launched).
        for instance in (0, 1):
            task = f"web/{instance}/a"
            ledger.task_created(task, job="web", instance=instance, time=T0)
            ledger.task_assigned(task, agent_id="agent-1", time=T0 + 1)
        # 2. What Mesos says: each update is durable when status_update returns; only then
        #    acknowledge it (driver.acknowledgeStatusUpdate). A re-delivery returns None.
        n = 0
        for task in ("web/0/a", "web/1/a"):
            for state in ("TASK_STARTING", "TASK_RUNNING"):
                n += 1
                assert ledger.status_update(status(task, state, at=T0 + 2, n=n), time=T0 + 2)
        again = status("web/1/a", "TASK_RUNNING", at=T0 + 2, n=n)
        assert ledger.status_update(again, time=T0 + 3) is None  # the agent re-sent it
        print(
            "scheduler view:",
            ledger.scheduler_view.get("web/0/a"),
            "| Mesos view:",
            ledger.mesos_view.get("web/0/a"),
            "| drift:",
            ledger.drift(),
        )

        # 3. Reconcile: an explicit run asks Mesos about every launched task.
        run = ledger.reconcile("explicit", now=T0 + 10)
        print(f"run {run}: pending", [(c.kind, c.tasks) for c in ledger.pending_commands()])
        print("dispatch:", ledger.dispatch(send, now=T0 + 10).dispatched, mesos.calls[-1])
        for task in ("web/0/a", "web/1/a"):  # the master's answers: no uuid, never acked
            answer = status(
                task,
                "TASK_RUNNING",
                at=T0 + 11,
                source="SOURCE_MASTER",
                reason="REASON_RECONCILIATION",
            )
            ledger.status_update(answer, time=T0 + 11)
        ledger.tick(now=T0 + 17)  # past the round's backoff: the answers are counted
        (done,) = [e for _, e in ledger.events() if e.topic == "ReconciliationCompleted"]
        print(f"run {done.run_id} {done.outcome}: {done.answered} of {done.asked} answered")

        # 4. A task fails: the lifecycle's RESCHEDULE becomes a command with its rule and
        #    evidence; dispatching it creates the replacement, PENDING in the scheduler view.
        ledger.status_update(status("web/1/a", "TASK_FAILED", at=T0 + 20, n=99), time=T0 + 20)
        ledger.tick(now=T0 + 21)
        (resched,) = [c for c in ledger.pending_commands() if c.kind == "RESCHEDULE"]
        print(
            f"pending: {resched.kind} {resched.task_id} by {resched.rule}, "
            f"evidence {list(resched.evidence)}"
        )
        print("dispatch applied:", ledger.dispatch(send, now=T0 + 21).applied)
        replacement = ledger.saga.replaced_by["web/1/a"]
        print(f"replacement {replacement}:", ledger.scheduler_view.get(replacement))
        # Launching it is yours: on the next offers, assign the PENDING tasks of your job
        # (task_assigned, durable) and then send the ACCEPT with their TaskInfos.
        pending = [t for t, r in ledger.scheduler_view.tasks.items() if r.state == "PENDING"]
        for task in pending:
            ledger.task_assigned(task, agent_id="agent-2", time=T0 + 22)
        print("launched:", pending)

        # 5. The scheduler decides to kill a task: the saga sends the KILL (and retries it
        #    until a terminal update confirms it).
        ledger.kill_requested("web/0/a", time=T0 + 30)
        ledger.tick(now=T0 + 30)
        (kill,) = [c for c in ledger.pending_commands() if c.kind == "KILL"]
        print(f"pending: KILL {kill.task_id} on {kill.agent_id} by {kill.rule}")
        ledger.dispatch(send, now=T0 + 30)
        print("sent:", mesos.calls[-1])
        ledger.status_update(status("web/0/a", "TASK_KILLED", at=T0 + 31, n=100), time=T0 + 31)
        ledger.tick(now=T0 + 31)  # the terminal update confirms the KILL
        print(
            "web/0/a:",
            ledger.scheduler_view.get("web/0/a"),
            "| pending:",
            ledger.pending_commands(),
        )
        print(
            f"log {ledger.path}: {ledger.last_id} events; try `taskledger why web/1/a "
            f"--log {ledger.path}`"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()))
