"""`taskledger demo`: the main job, as a new user first sees it.

One command, one process tree: the simulated Mesos master runs in this process (a thread),
the embedded scheduler (`taskledger run`) in a child process against it over real HTTP.
A job of a few hundred tasks is kept running while faults are injected one after another:
a scheduler crash (SIGKILL) and restart, a master failover, an agent partition and heal, an
agent removed by the operator, dropped and duplicated updates, and a rogue task. For each,
the demo reads the log (read-only, as the scheduler writes it) and shows the drift found,
which reconciliation found it, the commands issued and the rules behind them, and the time
to converge. It ends with an audit: the scheduler writes a digest of its live state when it
stops, and a replay of the log from scratch must give the same digest.

Time is compressed (--time-scale): the master's clock and the saga's schedules and timeouts
run that many times faster, so an hour of reconciliation schedule passes in seconds.
Exit status: 0 if every step converged and the audit agrees, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from tools.forensics.found_by import found_by
from tools.sim_master.client import call, get_json

_LIVE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING")


@dataclass
class StepResult:
    name: str
    converged: bool
    seconds: float
    drift: Counter = field(default_factory=Counter)  # cell -> tasks seen drifting
    found_by: Counter = field(default_factory=Counter)  # run kind -> commands
    commands: Counter = field(default_factory=Counter)  # (kind, rule) -> count
    examples: list[str] = field(default_factory=list)


class SchedulerProcess:
    """`taskledger run` as a child process (so a crash is a real SIGKILL)."""

    def __init__(self, master: str, log: str, instances: int, scale: float, heartbeat: float):
        self.master, self.log, self.instances = master, log, instances
        self.scale, self.heartbeat = scale, heartbeat
        self.digest = os.path.join(os.path.dirname(log), "live-digest")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "tools.cli",
            "run",
            "--master",
            self.master,
            "--log",
            self.log,
            "--job",
            "web",
            "--instances",
            str(self.instances),
            "--time-scale",
            str(self.scale),
            "--heartbeat",
            str(self.heartbeat),
            "--digest",
            self.digest,
        ]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Observer:
    """Reads the log the scheduler writes (read-only) and the master's state."""

    def __init__(self, log: str, master: str, instances: int) -> None:
        self.log, self.master, self.instances = log, master, instances
        self.problems = ""

    def ledger_state(self) -> Any:
        from tools.readonly import ReadOnlyLedger

        if not os.path.exists(os.path.join(self.log, "data.mdb")):
            return None, []  # the scheduler has not created its log yet
        with ReadOnlyLedger.open(self.log) as ledger:
            return ledger.state, list(ledger.events())

    def running(self, count: int) -> list[str]:
        """Some tasks of the job the agents are running now."""
        tasks = [t["task_id"] for t in self.cluster() if t["agent_state"] == "TASK_RUNNING"]
        return sorted(t for t in tasks if t.startswith("web/"))[:count]

    def cluster(self) -> list[dict]:
        try:
            return get_json(self.master, "/state", timeout=2.0)["tasks"]
        except OSError:
            return []  # the master is down (failover): nothing to see yet

    def converged(self) -> tuple[bool, Any]:
        if not os.path.exists(os.path.join(self.log, "data.mdb")):
            return False, None
        state, events = self.ledger_state()
        views = state.views
        running = [t for t, r in views.scheduler.tasks.items() if r.state == "RUNNING"]
        per_instance: Counter = Counter()
        unknown_to_master = 0
        for task in self.cluster():
            if task["agent_state"] in _LIVE and task["master_state"] is None:
                unknown_to_master += 1  # after a failover, until its agent re-registers
            if task["agent_state"] in _LIVE:
                parts = task["task_id"].split("/")
                per_instance[parts[1] if parts[0] == "web" else task["task_id"]] += 1
        drift = views.drift.drift()
        wanted = {str(i) for i in range(self.instances)}
        problems = []
        if len(running) != self.instances:
            problems.append(f"{len(running)}/{self.instances} RUNNING in the ledger")
        if drift:
            problems.append(
                f"drift {len(drift)}: "
                + ", ".join(f"{d.task_id} {d.scheduler_state}/{d.mesos_state}" for d in drift[:3])
            )
        missing = wanted - set(per_instance)
        if missing:
            problems.append(f"instances not running on the cluster: {sorted(missing)[:5]}")
        if unknown_to_master:
            problems.append(f"{unknown_to_master} running tasks not yet known to the master")
        twice = sorted(k for k, n in per_instance.items() if n > 1 or k not in wanted)
        if twice:
            problems.append(f"running twice or unknown: {twice[:5]}")
        self.problems = "; ".join(problems)
        return not problems, (state, events)


def inject(master: str, fault: dict | list) -> None:
    """Injects ``fault`` (or several) into the simulated master; RuntimeError if refused."""
    status, text = call(master, fault, path="/admin/fault")
    if status != 200:
        raise RuntimeError(f"fault {fault} refused: {status} {text}")


def _summarise(result: StepResult, events: list[tuple[int, Any]], since: int) -> None:
    runs: dict[str, str] = {}
    for nid, event in events:
        topic = type(event).__name__
        if topic == "ReconciliationStarted":
            runs[event.run_id] = event.kind
        if nid <= since:
            continue
        if topic == "CommandIssued" and event.kind != "RECONCILE":
            result.commands[(event.kind, event.rule)] += 1
            # The forensic commands' words (tools/forensics/found_by.py): `why` says the same.
            result.found_by[found_by(event.rule, runs.get(event.run_id or ""))] += 1
            if len(result.examples) < 2:
                result.examples.append(f"{event.kind} {event.task_id} ({event.rule})")
        elif topic == "ReconciliationCompleted":
            for cell, count in event.by_cell.items():
                if cell != "consistent" and count:
                    result.drift[f"{cell} ({event.kind})"] += count


def run_step(
    console: Console,
    observer: Observer,
    name: str,
    action: Callable[[], None],
    *,
    timeout: float,
) -> StepResult:
    _, before = observer.ledger_state()
    since = before[-1][0] if before else 0
    started = time.monotonic()
    action()
    result = StepResult(name, False, 0.0)
    seen_drift: Counter = Counter()
    time.sleep(0.5)
    while time.monotonic() - started < timeout:
        ok, data = observer.converged()
        if data is not None:
            for d in data[0].views.drift.drift():
                seen_drift[d.cell.label] += 0  # remember the cell
                seen_drift[d.cell.label] = max(seen_drift[d.cell.label], 1)
        if ok:
            result.converged = True
            break
        time.sleep(0.3)
    result.seconds = time.monotonic() - started
    _, events = observer.ledger_state()
    _summarise(result, events, since)
    if not result.drift:
        result.drift = seen_drift
    verdict = (
        "[green]converged[/]"
        if result.converged
        else f"[red]did NOT converge[/] ({observer.problems})"
    )
    commands = ", ".join(f"{k} x{n} ({rule})" for (k, rule), n in result.commands.items())
    drift = ", ".join(f"{cell}: {n}" for cell, n in result.drift.items()) or "none"
    found = ", ".join(f"{kind}" for kind in result.found_by) or "-"
    console.print(
        f"[bold]{name}[/]: drift {drift}; found by {found}; commands {commands or 'none'}; "
        f"{verdict} in {result.seconds:.1f} s"
    )
    return result


def audit(console: Console, log: str, digest_file: str) -> bool:
    """Replays the log from scratch and compares with the scheduler's live state digest."""
    from engine.ledger import LedgerState, state_digest
    from tools.readonly import ReadOnlyLedger

    with ReadOnlyLedger.open(log) as ledger:
        started = time.perf_counter()
        state = LedgerState()
        count = ledger.replay(state).events  # from scratch: no snapshot is trusted here
        seconds = time.perf_counter() - started
    replayed = state_digest(state)
    try:
        with open(digest_file) as f:
            live = f.read().strip()
    except OSError:
        console.print("[red]audit: the scheduler wrote no digest of its live state[/]")
        return False
    same = live == replayed
    console.print(
        f"audit: replayed {count:,} events in {seconds:.2f} s; live state digest "
        f"{live[:12]} {'==' if same else '!='} replay {replayed[:12]}"
    )
    show_views(console, state.views)
    return same


def show_views(console: Console, views: Any) -> None:
    """The two views and the drift view as the log leaves them: tasks by state, and the
    disagreements by cell of the reconciliation table."""
    scheduler = Counter(r.state for r in views.scheduler.tasks.values())
    mesos = Counter(r.state for r in views.mesos.tasks.values())
    drift = Counter(d.cell.label for d in views.drift.drift())

    def counts(counter: Counter) -> str:
        return ", ".join(f"{name} {n}" for name, n in counter.most_common()) or "-"

    console.print(f"scheduler view: {counts(scheduler)}")
    console.print(f"Mesos view: {counts(mesos)}")
    console.print(f"drift: {sum(drift.values())} task(s){': ' + counts(drift) if drift else ''}")


def main(
    console: Console,
    *,
    instances: int = 200,
    agents: int = 8,
    scale: float = 120.0,
    seed: int = 1,
    step_timeout: float = 40.0,
) -> int:
    from tools.sim_master.cluster import SimConfig
    from tools.sim_master.server import BackgroundSim

    folder = os.path.abspath(os.path.join("var", "demo"))  # kept for `taskledger why` after
    shutil.rmtree(folder, ignore_errors=True)  # the previous demo's
    os.makedirs(folder)
    log = os.path.join(folder, "log")
    heartbeat_sim = 60.0  # simulated seconds: 0.5 s real at the default scale
    config = SimConfig(
        agents=agents,
        seed=seed,
        wire_time_scale=scale,
        heartbeat_interval=heartbeat_sim,
        agent_cpus=max(4.0, instances * 0.1 / max(1, agents - 2) + 1),
        agent_mem=max(8192.0, instances * 32.0 / max(1, agents - 2) + 1024),
    )
    console.print(
        f"[bold]taskledger demo[/]: {agents} agents, a job of {instances} tasks, time x{scale:g}, "
        f"log in {log}"
    )
    results: list[StepResult] = []
    with BackgroundSim(config, time_scale=scale) as sim:
        master = sim.address
        scheduler = SchedulerProcess(master, log, instances, scale, heartbeat_sim / scale)
        observer = Observer(log, master, instances)
        try:
            scheduler.start()
            results.append(run_step(console, observer, "start", lambda: None, timeout=step_timeout))

            def crash_and_restart() -> None:
                scheduler.crash()
                # While it is down, a task fails: its update waits on the agent (re-sent).
                for task_id in observer.running(1):
                    inject(master, {"kind": "executor_lost", "task_id": task_id})
                time.sleep(1.0)
                scheduler.start()

            def partition_and_heal() -> None:
                inject(master, {"kind": "agent_partition", "agent_id": 1})
                time.sleep(40.0 / 4)  # past the saga's partition timeout: replaced
                inject(master, {"kind": "agent_heal", "agent_id": 1})

            def drop_and_duplicate() -> None:
                lost = [{"kind": "executor_lost", "task_id": t} for t in observer.running(3)]
                inject(
                    master,
                    [
                        {"kind": "drop_updates", "count": 2},
                        {"kind": "duplicate_updates", "count": 5},
                        *lost,
                    ],
                )

            steps: list[tuple[str, Callable[[], None]]] = [
                ("scheduler crash and restart", crash_and_restart),
                (
                    "master failover",
                    lambda: inject(
                        master,
                        {"kind": "master_failover", "down_for": 120, "reregister_after": 240},
                    ),
                ),
                ("agent partition and heal", partition_and_heal),
                (
                    "agent removed by the operator",
                    lambda: inject(master, {"kind": "agent_remove", "agent_id": 2}),
                ),
                ("dropped and duplicated updates", drop_and_duplicate),
                ("a rogue task", lambda: inject(master, {"kind": "rogue_task"})),
            ]
            for name, action in steps:
                if not scheduler.alive():
                    console.print("[red]the scheduler process died[/]")
                    break
                results.append(run_step(console, observer, name, action, timeout=step_timeout))
        finally:
            code = scheduler.stop()
            if code not in (0, None):
                console.print(f"[red]scheduler exited with status {code}[/]")
                if scheduler.proc is not None and scheduler.proc.stderr is not None:
                    console.print(scheduler.proc.stderr.read().decode(errors="replace")[-2000:])
    agreed = audit(console, log, scheduler.digest)
    table = Table(title="summary")
    for column in ("step", "drift found", "found by", "commands (rule)", "converged in"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.name,
            ", ".join(f"{c}: {n}" for c, n in r.drift.items()) or "-",
            ", ".join(r.found_by) or "-",
            "\n".join(f"{k} x{n} {rule}" for (k, rule), n in r.commands.items()) or "-",
            f"{r.seconds:.1f} s" if r.converged else "[red]no[/]",
        )
    console.print(table)
    ok = agreed and all(r.converged for r in results) and len(results) == 7
    console.print("[bold green]converged, audit agrees[/]" if ok else "[bold red]FAILED[/]")
    from tools.next_steps import next_steps

    console.print(f"the log is kept in {log}; next:", *next_steps(log), sep="\n  ", markup=False)
    return 0 if ok else 1


def scale_main(console: Console, *, tasks: int, scale: float = 10.0) -> int:
    """`taskledger demo --tasks N`: the production path at scale, shown as it goes. The
    simulated master and the scheduler run as two processes (`taskledger sim`, `taskledger
    run`) over HTTP; N tasks are launched, the master fails over and every task is
    reconciled explicitly, then an operator's implicit run asks about them all again
    (tools/scale_run.py; benchmarks/e2e.py measures the same run against its ceilings)."""
    from tools.scale_run import ScaleRun

    # Kept for the forensic commands afterwards (`taskledger replay --log var/scale-demo/log`).
    folder = os.path.abspath(os.path.join("var", "scale-demo"))
    shutil.rmtree(folder, ignore_errors=True)  # the previous run's
    os.makedirs(folder)
    run = ScaleRun(tasks=tasks, folder=folder, time_scale=scale, progress=console.print)
    console.print(
        f"[bold]taskledger demo --tasks {tasks:,}[/]: {run.agents} agents, time x{scale:g}, "
        f"logs in {folder}"
    )
    bursts = []
    try:
        run.start()
        for title, phase in (
            (f"launching {tasks:,} tasks (each RUNNING and acknowledged)", run.launch),
            ("a master failover: the explicit reconciliation of every task", run.failover),
            ("an operator's implicit reconciliation (SIGUSR2)", run.implicit),
        ):
            console.print(f"[bold]{title}[/]")
            bursts.append(phase())
        run.stop_scheduler()
    except (RuntimeError, TimeoutError) as e:
        console.print(f"[bold red]FAILED[/]: {e}")
        return 1
    finally:
        run.stop()
    table = Table(title=f"{tasks:,} tasks")
    for column in ("phase", "took", "answers", "answers/s", "events per commit"):
        table.add_column(column)
    for b in bursts:
        rate = f"{b.answers_per_second:,.0f}" if b.answers else "-"
        table.add_row(
            b.name, f"{b.seconds:.1f} s", f"{b.answers:,}", rate, f"{b.events_per_commit:,.0f}"
        )
    console.print(table)
    memory = run.memory
    extra = (memory["scheduler_full"]["rss"] - memory["scheduler_empty"]["rss"]) / tasks
    console.print(f"scheduler memory beyond its empty baseline: {extra:,.0f} bytes a task")
    console.print("[bold green]done[/]")
    return 0
