"""Reconciliation at scale: answers ingested durably, every command decided.

    python -m benchmarks.reconcile [--tasks N] [--json OUT]

A cluster of N tasks (1M by default) with 1% drifted in every disagreeing cell of the drift
table, built through the Ledger API (`ledger.append` of many events at a time):
- non-terminal/absent: 1% rogue tasks the master runs and the scheduler never launched;
- non-terminal/terminal: 1% the scheduler holds LOST (an earlier TASK_LOST) that still run;
- terminal/non-terminal: 1% PARTITIONED for the scheduler that the master holds TASK_KILLED;
- absent/non-terminal: 1% ASSIGNED whose launch never reached the agent (TASK_GONE).
Then one explicit and one implicit run: the master's answers (Mesos v1 TaskStatus dicts) go
through status_from_mesos and `ledger.append` in batches of 1000 (Aurora's), durably, and
`ledger.tick` decides every command. Timed: ingest (validate, append, fsync, views and saga
state), and deciding (reconcile + tick: rounds, rules, commands). The same answers are also
ingested into a second Ledger with the saga's evolve switched off: the baseline the saga's
whole cost (its state on the ingest path + deciding) is measured against.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from typing import Any

from benchmarks.common import Result, print_table, write_json
from engine import saga as saga_mod
from engine.events import StatusUpdateReceived, TaskAssigned, TaskCreated
from engine.ledger import Ledger
from engine.task_status import status_from_mesos

BATCH = 1000
SETUP_BATCH = 20_000
AURORA_PER_SECOND = 1000 / 5  # one batch of 1000 every 5 s


def _running(task: str, agent: str) -> StatusUpdateReceived:
    return StatusUpdateReceived(0.0, None, task, "TASK_RUNNING", agent, None, "SOURCE_EXECUTOR")


def build(ledger: Ledger, n: int) -> dict[str, list[str]]:
    """Appends the cluster's history; returns the task ids by role."""
    drift = max(1, n // 100)
    tasks = [f"job-{i % 500}/{i}" for i in range(n)]
    groups = {
        "lost_running": tasks[0:drift],  # non-terminal/terminal, found by implicit
        "partitioned_killed": tasks[drift : 2 * drift],  # terminal/non-terminal
        "assigned_gone": tasks[2 * drift : 3 * drift],  # absent/non-terminal
        "running": tasks[3 * drift :],
        "rogue": [f"rogue-{i % 50}/{i}" for i in range(drift)],  # non-terminal/absent
    }
    events: list[Any] = []

    def flush(force: bool = False) -> None:
        if events and (force or len(events) >= SETUP_BATCH):
            ledger.append(events)
            events.clear()

    for i, task in enumerate(tasks):
        agent = f"agent-{i % 200}"
        events.append(TaskCreated(0.0, None, task, task.split("/")[0], i))
        events.append(TaskAssigned(0.0, None, task, agent))
        flush()
    flush(True)
    for task in groups["running"] + groups["lost_running"] + groups["partitioned_killed"]:
        events.append(_running(task, "agent-0"))
        flush()
    for task in groups["lost_running"]:
        events.append(events_status(task, "TASK_LOST"))
    for task in groups["partitioned_killed"]:
        events.append(events_status(task, "TASK_UNREACHABLE"))
    flush(True)
    return groups


def events_status(task: str, state: str) -> StatusUpdateReceived:
    return StatusUpdateReceived(1.0, None, task, state, "agent-0", None, "SOURCE_MASTER")


def answer(task: str, state: str) -> dict[str, Any]:
    """The master's reconciliation answer, as pymesos delivers it."""
    return {
        "task_id": {"value": task},
        "state": state,
        "agent_id": {"value": "agent-0"},
        "source": "SOURCE_MASTER",
        "reason": "REASON_RECONCILIATION",
        "timestamp": 1_700_000_000.0,
    }


def explicit_answers(asked: list[str], groups: dict[str, list[str]]) -> list[dict[str, Any]]:
    killed = set(groups["partitioned_killed"])
    gone = set(groups["assigned_gone"])
    out = []
    for task in asked:
        if task in killed:
            out.append(answer(task, "TASK_KILLED"))
        elif task in gone:
            out.append(answer(task, "TASK_GONE"))
        else:
            out.append(answer(task, "TASK_RUNNING"))
    return out


def implicit_answers(groups: dict[str, list[str]]) -> list[dict[str, Any]]:
    alive = groups["running"] + groups["lost_running"] + groups["rogue"]
    return [answer(task, "TASK_RUNNING") for task in alive]


def ingest(ledger: Ledger, answers: list[dict[str, Any]], now: float) -> float:
    """Validates and appends the answers durably in batches; returns the seconds taken."""
    start = time.perf_counter()
    for first in range(0, len(answers), BATCH):
        ledger.append([status_from_mesos(a, time=now) for a in answers[first : first + BATCH]])
    return time.perf_counter() - start


def timed(action: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def run_with_saga(folder: str, n: int) -> dict[str, Any]:
    with Ledger.open(folder, max_map_size=1 << 40) as ledger:
        groups, setup = timed(lambda: build(ledger, n))
        _, setup_decide = timed(lambda: ledger.tick(now=10))  # the TASK_LOSTs' replacements
        decide = 0.0
        first = ledger.last_id + 1
        _, seconds = timed(lambda: ledger.reconcile("explicit", now=10))
        decide += seconds
        asked = [t for c in ledger.pending_commands() if c.kind == "RECONCILE" for t in c.tasks]
        ledger.dispatch(lambda command: None, now=10)
        explicit = explicit_answers(asked, groups)
        ingest_explicit = ingest(ledger, explicit, 11)
        run = ledger.saga.runs.active["explicit"]
        _, seconds = timed(lambda: ledger.tick(now=run.next_at + 0.01))
        decide += seconds
        now = run.next_at + 1
        _, seconds = timed(lambda: ledger.reconcile("implicit", now=now))
        decide += seconds
        ledger.dispatch(lambda command: None, now=now)
        implicit = implicit_answers(groups)
        ingest_implicit = ingest(ledger, implicit, now + 1)
        _, seconds = timed(lambda: ledger.tick(now=now + 40))
        decide += seconds
        rules = Counter(
            rec.rule
            for rec in ledger.saga.outbox.commands.values()
            if rec.kind != "RECONCILE" and rec.issued_at > 10
        )
        outcomes = {
            e.run_id: e.outcome
            for _, e in ledger.events(first)
            if e.topic == "ReconciliationCompleted"
        }
        return {
            "setup": setup,
            "setup_decide": setup_decide,
            "asked": len(asked),
            "answers": len(explicit) + len(implicit),
            "ingest": ingest_explicit + ingest_implicit,
            "decide": decide,
            "commands_by_rule": dict(sorted(rules.items())),
            "runs": outcomes,
            # Decided, not yet dispatched (kills, losses, replacements): still drift.
            "drift_left": len(ledger.drift()),
        }


def run_without_saga(folder: str, n: int, asked_count: int) -> float:
    """The same ingest with the saga's evolve switched off: the baseline."""
    original = saga_mod.evolve
    saga_mod.evolve = lambda state, nid, event, views: state  # type: ignore[assignment]
    try:
        with Ledger.open(folder, max_map_size=1 << 40) as ledger:
            groups = build(ledger, n)
            asked = groups["running"] + groups["partitioned_killed"] + groups["assigned_gone"]
            assert len(asked) == asked_count
            explicit = explicit_answers(asked, groups)
            implicit = implicit_answers(groups)
            return ingest(ledger, explicit, 11) + ingest(ledger, implicit, 20)
    finally:
        saga_mod.evolve = original


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    base = tempfile.mkdtemp(prefix="tl-reconcile-")
    try:
        saga = run_with_saga(os.path.join(base, "saga"), args.tasks)
        baseline = run_without_saga(os.path.join(base, "plain"), args.tasks, saga["asked"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    answers = saga["answers"]
    overhead = saga["decide"] / saga["ingest"]
    whole = (saga["ingest"] + saga["decide"] - baseline) / baseline
    results = [
        Result("ingest, saga off", answers, baseline, "validate + append + fsync + views"),
        Result("ingest, saga on", answers, saga["ingest"], "... + the saga's state"),
        Result("decide", answers, saga["decide"], "reconcile + tick: rounds, rules, commands"),
        Result("ingest + decide", answers, saga["ingest"] + saga["decide"]),
        Result(
            "Aurora's pace",
            saga["asked"],
            saga["asked"] / AURORA_PER_SECOND,
            "1000 tasks per 5 s, just to ask (explicit)",
        ),
    ]
    print_table(
        f"reconciliation, {args.tasks:,} tasks, 1% drifted per disagreeing cell, durable",
        results,
        baseline="ingest, saga off",
    )
    print(
        f"\nanswers ingested: {answers:,} ({saga['asked']:,} explicit asks); "
        f"{answers / saga['ingest']:,.0f} answers/s durable with the saga on"
    )
    print(f"deciding adds {overhead:.1%} on top of ingest (target < 20%)")
    print(f"the saga as a whole (state on the ingest path + deciding) adds {whole:.1%}")
    print(f"commands decided by rule: {saga['commands_by_rule']}")
    print(f"runs: {saga['runs']}; drift awaiting dispatch of its commands: {saga['drift_left']:,}")
    print(f"setup {saga['setup']:.1f} s; setup's own decisions {saga['setup_decide']:.2f} s")
    write_json(
        args.json,
        "reconcile",
        results,
        {
            "tasks": args.tasks,
            "answers": answers,
            "answers_per_second": answers / saga["ingest"],
            "decide_overhead": overhead,
            "saga_overhead": whole,
            "commands_by_rule": saga["commands_by_rule"],
            "runs": saga["runs"],
            "drift_left": saga["drift_left"],
        },
    )


if __name__ == "__main__":
    main()
