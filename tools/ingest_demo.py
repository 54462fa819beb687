"""The ingest demo: a stream of Mesos status updates appended durably, then replayed.

What `make demo` shows until the full cluster demo (simulated master, faults) replaces it:
a few thousand tasks go through their lifecycle, a few drift on purpose (a rogue task Mesos
runs that the scheduler never created; launches Mesos never heard of), every
update is appended durably through group commit by concurrent feeders, and the log is then
replayed from scratch and compared with the live views.
"""

from __future__ import annotations

import base64
import random
import tempfile
import threading
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from engine.events import TaskAssigned, TaskCreated
from engine.ledger import Ledger
from projections.views import Views

_LIFECYCLE = ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"]


@dataclass
class DemoResult:
    tasks: int
    events: int
    append_seconds: float
    replay_seconds: float
    commits: int
    drift: int
    replay_equal: bool


def run(console: Console, *, tasks: int = 3000, feeders: int = 8, seed: int = 1) -> DemoResult:
    rng = random.Random(seed)
    folder = tempfile.mkdtemp(prefix="taskledger-demo-")
    console.print(f"[bold]taskledger ingest demo[/]: {tasks} tasks, log in {folder}")
    with Ledger.open(folder) as ledger:
        # The scheduler creates and assigns its tasks (one batch each: a launch wave).
        t0 = 1_700_000_000.0
        wave = []
        for i in range(tasks):
            wave.append(TaskCreated(t0, None, f"web/{i}/{i:06x}", "web", i))
            wave.append(TaskAssigned(t0, None, f"web/{i}/{i:06x}", f"agent-{i % 12}"))
        ledger.append(wave)
        commits_before = ledger._store.commits
        started = time.perf_counter()
        shares = [list(range(n, tasks, feeders)) for n in range(feeders)]

        def feed(share: list[int]) -> None:
            local = random.Random(seed * 1000 + share[0] if share else seed)
            for i in share:
                task = f"web/{i}/{i:06x}"
                states = list(_LIFECYCLE)
                if i % 97 == 0:
                    states = []  # the launch was lost: Mesos never heard of the task
                elif i % 89 == 0:
                    states.append("TASK_LOST")  # reported: the scheduler follows Mesos
                elif local.random() < 0.2:
                    states.append("TASK_FINISHED")
                for k, state in enumerate(states):
                    ledger.status_update(
                        {
                            "task_id": {"value": task},
                            "state": state,
                            "agent_id": {"value": f"agent-{i % 12}"},
                            "source": "SOURCE_EXECUTOR",
                            "timestamp": t0 + 1 + k,
                            "uuid": base64.b64encode(local.randbytes(16)).decode(),
                        },
                        time=t0 + 1 + k,
                    )

        threads = [threading.Thread(target=feed, args=(s,)) for s in shares if s]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        # A rogue task: Mesos runs it, the scheduler never created it.
        ledger.status_update(
            {
                "task_id": {"value": f"rogue/{rng.randrange(1 << 32):08x}"},
                "state": "TASK_RUNNING",
                "source": "SOURCE_MASTER",
                "reason": "REASON_RECONCILIATION",
            },
            time=t0 + 10,
        )
        append_seconds = time.perf_counter() - started
        commits = ledger._store.commits - commits_before
        events = ledger.last_id
        drift = ledger.drift()
        live = ledger.views

        started = time.perf_counter()
        replayed = Views.rebuild(ledger.events())
        replay_seconds = time.perf_counter() - started
        equal = replayed == live

        table = Table(title="what the log says")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("events in the log", f"{events:,}")
        table.add_row(
            "durable appends",
            f"{events / append_seconds:,.0f}/s ({feeders} feeders, "
            f"{(events - tasks * 2) / max(commits, 1):.1f} updates per fsync)",
        )
        table.add_row("replay from scratch", f"{events / replay_seconds:,.0f} events/s")
        table.add_row("replay equals live views", "yes" if equal else "NO")
        by_state: dict[str, int] = {}
        for task_id in live.scheduler.tasks:
            state = live.scheduler.get(task_id) or "-"
            by_state[state] = by_state.get(state, 0) + 1
        table.add_row("scheduler view", ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())))
        table.add_row("drift", f"{len(drift)} task(s)")
        console.print(table)
        if drift:
            cells = Table(title="drift by cell (Mesos / scheduler)")
            for name in ("task", "cell", "found by", "scheduler", "mesos", "since id"):
                cells.add_column(name)
            for d in drift[:6]:
                cells.add_row(
                    d.task_id,
                    d.cell.label,
                    str(d.found_by),
                    str(d.scheduler_state),
                    str(d.mesos_state),
                    str(d.since),
                )
            console.print(cells)
            if len(drift) > 6:
                console.print(f"... and {len(drift) - 6} more")
        return DemoResult(tasks, events, append_seconds, replay_seconds, commits, len(drift), equal)
