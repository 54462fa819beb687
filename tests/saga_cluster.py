"""Test helpers for the saga: a TaskStatus builder, a small pure fake Mesos master, checks.

The fake master (the real simulated master is tools/sim_master) keeps just what
reconciliation needs: which tasks it holds in which state on which agent, which agents are
registered, unreachable, removed by the operator, or not yet re-registered after a master
failover, and it answers an explicit reconciliation as Mesos's master does
(Master::reconcile, silence included).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from builders import task_status

from engine.events import (
    CommandConfirmed,
    CommandIssued,
    KillRequested,
    SagaReacted,
    StatusUpdateReceived,
)
from engine.ledger import Ledger, LedgerState
from engine.mesos_states import BY_NAME
from engine.rules import MESOS_SAYS, RULE_FOR, RULES, MesosSays, Outcome
from engine.saga import drift_triggers

ALIVE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING")
_uuids = iter(range(1, 10**9))


def status(
    task: str,
    state: str,
    *,
    agent: str | None = "a1",
    answer: bool = False,
    source: str = "SOURCE_EXECUTOR",
) -> dict[str, Any]:
    """A TaskStatus dict as pymesos delivers it: an agent/executor update (with a fresh uuid)
    or, with answer=True, the master's reconciliation answer (no uuid)."""
    if answer:
        return task_status(
            task, state, agent=agent, source="SOURCE_MASTER", reason="REASON_RECONCILIATION"
        )
    return task_status(task, state, agent=agent, source=source, uuid=f"u{next(_uuids)}")


@dataclass
class FakeMaster:
    """What the master holds, and its answers. Pure: no I/O, no clock."""

    tasks: dict[str, tuple[str, str]] = field(default_factory=dict)  # task -> (state, agent)
    agents: dict[str, str] = field(default_factory=dict)  # agent -> registered/unreachable/...
    outbox: list[dict[str, Any]] = field(default_factory=list)  # updates not yet delivered
    sent: list[Any] = field(default_factory=list)  # every command the dispatcher sent

    # -- the cluster ---------------------------------------------------------------------------
    def agent(self, agent: str, condition: str = "registered") -> None:
        self.agents[agent] = condition

    def launch(self, task: str, agent: str, state: str = "TASK_RUNNING") -> None:
        if self.agents.get(agent, "registered") != "registered":
            return  # a launch to an agent that is not there is dropped
        self.agents.setdefault(agent, "registered")
        self.tasks[task] = (state, agent)
        self.outbox.append(status(task, state, agent=agent))

    def end(self, task: str, state: str) -> None:
        if task in self.tasks:
            agent = self.tasks[task][1]
            self.tasks[task] = (state, agent)
            self.outbox.append(status(task, state, agent=agent))

    def partition(self, agent: str) -> None:
        if self.agents.get(agent) == "removed":
            return  # a removed agent is gone for good: it cannot become unreachable ...
        self.agents[agent] = "unreachable"
        for task, (state, where) in list(self.tasks.items()):
            if where == agent and state in ALIVE:
                self.outbox.append(status(task, "TASK_UNREACHABLE", agent=agent, answer=False))

    def heal(self, agent: str) -> None:
        if self.agents.get(agent) == "removed":
            return  # ... nor come back: Mesos refuses a removed agent's re-registration
        self.agents[agent] = "registered"
        for task, (state, where) in self.tasks.items():
            if where == agent and state in ALIVE:
                self.outbox.append(status(task, state, agent=agent))

    def remove(self, agent: str) -> None:
        """The operator removes the agent: its tasks are gone."""
        self.agents[agent] = "removed"
        for task, (state, where) in list(self.tasks.items()):
            if where == agent and state in ALIVE:
                self.tasks[task] = ("TASK_GONE_BY_OPERATOR", agent)
                self.outbox.append(status(task, "TASK_GONE_BY_OPERATOR", agent=agent))

    def failover(self) -> None:
        """A new master: it knows no agent (and so no task) until each re-registers."""
        for agent, condition in self.agents.items():
            if condition == "registered":
                self.agents[agent] = "failover"

    def reregister(self, agent: str) -> None:
        if self.agents.get(agent) == "failover":
            self.agents[agent] = "registered"

    def held(self, task: str) -> tuple[str, str] | None:
        """The task as the master knows it: None for tasks on agents not back yet."""
        entry = self.tasks.get(task)
        if entry is None or self.agents.get(entry[1]) == "failover":
            return None
        if self.agents.get(entry[1]) == "unreachable" and entry[0] in ALIVE:
            return ("TASK_UNREACHABLE", entry[1])
        return entry

    # -- answers ---------------------------------------------------------------------------------
    def answer_explicit(self, task: str, agent: str | None) -> dict[str, Any] | None:
        """The master's answer for one task (Master::reconcile), or None: silence."""
        held = self.held(task)
        if held is not None:
            return status(task, held[0], agent=held[1], answer=True)
        where = agent or (self.tasks[task][1] if task in self.tasks else None)
        condition = self.agents.get(where) if where else None
        if condition == "failover" or (
            where is None and any(c == "failover" for c in self.agents.values())
        ):
            return None  # 2. agent not re-registered since the failover: no answer at all
        if condition == "registered":
            return status(task, "TASK_GONE", agent=where, answer=True)
        if condition == "unreachable":
            return status(task, "TASK_UNREACHABLE", agent=where, answer=True)
        if condition == "removed":
            return status(task, "TASK_GONE_BY_OPERATOR", agent=where, answer=True)
        return status(task, "TASK_UNKNOWN", agent=where, answer=True)

    def answer_implicit(self) -> list[dict[str, Any]]:
        out = []
        for task in self.tasks:
            held = self.held(task)
            if held is not None and not BY_NAME[held[0]].terminal:
                out.append(status(task, held[0], agent=held[1], answer=True))
        return out

    def send(self, command: Any) -> None:
        """The dispatcher's `send`: a KILL or a RECONCILE, as the pymesos adapter would."""
        self.sent.append(command)
        if command.kind == "RECONCILE":
            if command.tasks:
                for task, agent in zip(command.tasks, command.agents, strict=True):
                    answer = self.answer_explicit(task, agent)
                    if answer is not None:
                        self.outbox.append(answer)
            else:
                self.outbox.extend(self.answer_implicit())
        elif command.kind == "KILL":
            held = self.held(command.task_id)
            if held is not None and held[0] in ALIVE:
                self.tasks[command.task_id] = ("TASK_KILLED", held[1])
                self.outbox.append(status(command.task_id, "TASK_KILLED", agent=held[1]))
            elif held is None or held[0] != "TASK_UNREACHABLE":
                # Unknown or already terminal: the master reconciles the task instead.
                answer = self.answer_explicit(command.task_id, command.agent_id)
                if answer is not None:
                    self.outbox.append(answer)

    def deliver(self, ledger: Ledger, now: float, limit: int | None = None) -> int:
        """Hands queued updates to the Ledger (the adapter's job); returns how many."""
        batch = self.outbox[:] if limit is None else self.outbox[:limit]
        del self.outbox[: len(batch)]
        for update in batch:
            ledger.status_update(update, time=now)
        return len(batch)


def step(ledger: Ledger, master: FakeMaster, now: float) -> None:
    """One turn of the runtime loop: decide, dispatch, deliver what the master said."""
    ledger.tick(now=now)
    ledger.dispatch(master.send, now=now)
    master.deliver(ledger, now)
    ledger.tick(now=now)


def run_for(ledger: Ledger, master: FakeMaster, start: float, seconds: float, dt: float = 1.0):
    now = start
    while now < start + seconds:
        step(ledger, master, now)
        now += dt
    return now


def issued(ledger: Ledger) -> list[tuple[int, CommandIssued]]:
    """Every CommandIssued in the log, with its id."""
    return [(nid, e) for nid, e in ledger.events() if type(e) is CommandIssued]


def rules_fired(ledger: Ledger, kind: str | None = None) -> list[str]:
    return [e.rule for _, e in issued(ledger) if kind is None or e.kind == kind]


def rules_in_log(events: Iterable[tuple[int, Any]]) -> set[str]:
    """Every rule that fired in a log, found from the log alone (folded as the Ledger folds
    it), through the decision table:

    - a rule that issues commands: the `rule` of its CommandIssued events;
    - a rule that confirms (R-KILL-CONFIRMED): a CommandConfirmed of a KILL caused by a
      status update (a local command's confirmation is caused by the command itself);
    - a rule whose question the explicit run asks (R-*-ASK-AGAIN): a later round of that run
      asks about a task while the task's drift cell and Mesos's word are the rule's trigger;
    - a rule that holds (issues nothing): the saga decided something (a command, a
      SagaReacted) while some task's drift trigger was the rule's.
    """
    state = LedgerState()
    confirming = RULE_FOR[Outcome.KILL_TOOK_EFFECT]
    fired: set[str] = set()
    for nid, e in events:
        kind = type(e)
        if kind is CommandIssued:
            fired.add(e.rule)
            if e.attempt > 1:
                fired |= _asked_again(state, e)
        elif kind is CommandConfirmed and e.causation != e.command_id:
            record = state.saga.outbox.commands.get(e.command_id)
            if record is not None and record.kind == "KILL":
                fired.add(confirming)
        if kind is CommandIssued or kind is SagaReacted:
            for _task, cell, says in drift_triggers(state.views):
                rule_id = RULE_FOR.get((cell, says))  # type: ignore[call-overload]
                if rule_id is not None and not RULES[rule_id].commands:
                    fired.add(rule_id)
        state.apply(nid, e)
    return fired


def _asked_again(state: LedgerState, e: CommandIssued) -> set[str]:
    views, found = state.views, set()
    for task_id in e.tasks or ():
        cell = views.drift.cell(task_id)
        name = views.mesos.get(task_id)
        says = MesosSays.SILENT if name is None else MESOS_SAYS[name]
        rule_id = RULE_FOR.get((cell, says))  # type: ignore[call-overload]
        if rule_id is not None and RULES[rule_id].asked_by == e.rule:
            found.add(rule_id)
    return found


def kills(ledger: Ledger, task: str | None = None) -> list[tuple[int, CommandIssued]]:
    return [
        (nid, e)
        for nid, e in issued(ledger)
        if e.kind == "KILL" and (task is None or e.task_id == task)
    ]


def topics(ledger: Ledger, topic: str) -> list[Any]:
    return [e for _, e in ledger.events() if e.topic == topic]


def check_commands_have_rule_and_evidence(ledger: Ledger) -> None:
    """Every command names a rule of the table and rests on earlier events."""
    for nid, e in issued(ledger):
        assert e.rule in RULES, (nid, e.rule)
        assert e.kind in RULES[e.rule].commands, (nid, e.kind, e.rule)
        assert e.evidence, (nid, e)
        assert all(0 < ev < nid for ev in e.evidence), (nid, e.evidence)


def check_no_kill_from_silence(ledger: Ledger) -> None:
    """Every KILL rests on something said about that task: a Mesos update, the scheduler's own
    kill, or the KILL it retries (itself resting on one of those)."""
    events = dict(ledger.events())
    for nid, e in kills(ledger):
        chain = [nid]
        while events[chain[-1]].retry_of is not None:
            chain.append(events[chain[-1]].retry_of)
        first = events[chain[-1]]
        spoken = [
            events[ev]
            for ev in first.evidence
            if type(events[ev]) in (StatusUpdateReceived, KillRequested)
            and events[ev].task_id == e.task_id
        ]
        assert spoken, f"KILL {nid} of {e.task_id} rests on no update: {first}"


def ids_in(events: Iterable[tuple[int, Any]], topic: str) -> list[int]:
    return [nid for nid, e in events if e.topic == topic]
