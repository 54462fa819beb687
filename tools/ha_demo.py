"""`taskledger demo --ha`: the replicated scheduler losing its leader, and losing nothing.

It starts everything on this machine: a throwaway PostgreSQL (the log of record) and
ZooKeeper (the election), both from Debian's packages (installed with apt-get if missing;
tools/local_servers.py), the simulated Mesos master (a thread of this process) and three
replicas of `taskledger run` (child processes; tools/ha_cluster.py). Once the first leader
keeps a small job running, the leader is SIGKILLed, or SIGSTOPped longer than its ZooKeeper
session and then resumed, in turn (``kills`` and ``pauses`` of each). For each it prints how
long the job went without a leader: from the signal to the new leader's first command
dispatched to the master. A paused leader, resumed, must write nothing and exit with status
3 (it learns it was deposed); each stopped replica is started again as a follower, as its
supervisor would.

At the end it checks, and prints, that nothing was lost: every update the master saw
acknowledged is in the log of record once, no write below the current epoch was accepted
after a new leader took over, `taskledger verify --log postgresql://...` is clean, and each
instance of the job runs exactly once. Exit status 0 if all hold, 1 if not, 130 on Ctrl-C.
Everything it started is stopped on the way out, Ctrl-C and SIGTERM included; the
replicas' mirrors (ordinary taskledger logs) stay in var/ha-demo for the forensic commands.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from engine.events import LeaderElected
from engine.replication import DEPOSED_EXIT
from tools.demo import inject
from tools.ha_cluster import (
    ROOT,
    LogOfRecord,
    Replicas,
    StaleStreams,
    acknowledged,
    converged,
    first_dispatch,
    leader_after,
    log_problems,
    replicas_of,
    stale_writes,
    wait,
)
from tools.sim_master.client import get_json

REPLICAS = ("a", "b", "c")
SESSION = 1.0  # seconds: a vanished leader is replaced about this long after it went
TICK_MS = 500  # ZooKeeper's tick: sessions are 2..20 ticks, so 1 s needs 500 ms
TIME_SCALE = 20.0  # the master's clock and the saga's schedules run this much faster
AGENTS = 3
STEP_TIMEOUT = 60.0  # seconds for a failover, or for the job to converge, before it fails


@dataclass
class Failover:
    """One fault and what followed it."""

    fault: str  # "kill" or "pause"
    old: LeaderElected
    new: LeaderElected
    leaderless_s: float  # from the signal to the new leader's first dispatch
    converged_s: float  # from the signal to every instance running once again
    stale: list[int]  # writes below the new epoch after it took over (none: correct)
    exit_status: int | None  # the old leader's (a resumed one must exit DEPOSED_EXIT)
    refused: int  # calls the master refused meanwhile because their stream was failed over
    lost_task: str | None  # the task that failed while there was no leader


def faults(kills: int, pauses: int) -> list[str]:
    """Kills and pauses alternating, kill first, the longer kind's rest at the end."""
    order = []
    for n in range(max(kills, pauses)):
        order += (["kill"] if n < kills else []) + (["pause"] if n < pauses else [])
    return order


def fail_over(
    group: Replicas,
    log: LogOfRecord,
    *,
    fault: str,
    old: LeaderElected,
    instances: int,
    refusals: StaleStreams,
) -> Failover:
    """SIGKILLs or pauses the leader ``old``, and fails one of its tasks meanwhile (its
    update waits on the agent for the next leader to acknowledge); waits for the new leader
    to dispatch, the old one to be gone and the job of ``instances`` to converge; starts the
    old one again as a follower."""
    proc = group.procs[old.replica]
    refused = refusals.count
    signalled = time.time()
    proc.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    running = sorted(t["task_id"] for t in get_json(group.master, "/state")["tasks"])
    lost = running[0] if running else None
    if lost is not None:
        inject(group.master, {"kind": "executor_lost", "task_id": lost})
    try:
        new, first = wait(lambda: first_dispatch(log, old.epoch), STEP_TIMEOUT, "a new leader")
        if fault == "pause":
            # Resumed past its session, it must find its appends refused and step down.
            time.sleep(max(0.0, signalled + 2 * SESSION - time.time()))
            proc.send_signal(signal.SIGCONT)
        try:
            status = proc.wait(30)
        except subprocess.TimeoutExpired:
            status = None  # the resumed leader did not step down: reported as a failure
        wait(lambda: converged(group.master, instances), STEP_TIMEOUT, "convergence")
    except TimeoutError as e:
        said = {name: group.stderr(name, 600) for name in group.procs}
        raise TimeoutError(f"{fault} of {old.replica}: {e}; the replicas said: {said}") from None
    converged_s = time.time() - signalled
    if status is None:
        proc.kill()
        proc.wait(10)
    group.start(old.replica)  # as its supervisor would: a follower now
    return Failover(
        fault,
        old,
        new,
        leaderless_s=first.time - signalled,
        converged_s=converged_s,
        stale=stale_writes(log, new),
        exit_status=status,
        refused=refusals.count - refused,
        lost_task=lost,
    )


def describe(n: int, f: Failover) -> str:
    how = {"kill": "SIGKILLed", "pause": f"SIGSTOPped > {SESSION:g} s session, resumed"}
    line = (
        f"{f.fault} {n}: leader {f.old.replica} (epoch {f.old.epoch}) {how[f.fault]}; "
        f"{f.new.replica} leads at epoch {f.new.epoch}, dispatching [bold]{f.leaderless_s:.2f} s"
        f"[/] after the signal; the job converged in {f.converged_s:.1f} s"
    )
    if f.lost_task:
        line += f" ({f.lost_task}, lost meanwhile, replaced)"
    if f.fault == "pause":
        line += (
            f"; {f.old.replica} resumed, the master refused {f.refused} call(s) it still sent "
            f"(its stream failed over), and it exited with status {f.exit_status}"
        )
    if f.stale:
        line += f"; [red]stale writes accepted: {f.stale}[/]"
    return line


def verify(group: Replicas) -> tuple[bool, str]:
    """`taskledger verify` on the log of record, as a user would run it."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "verify", "--log", group.log.text],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PGPASSWORD": group.password},
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def final_checks(
    console: Console, group: Replicas, log: LogOfRecord, done: list[Failover], instances: int
) -> bool:
    """Prints each of the end's checks with its verdict; True if all hold."""
    problems = log_problems(log, group.master)
    verified, said = verify(group)
    stale = [n for f in done for n in f.stale]
    deposed = [f for f in done if f.fault == "pause" and f.exit_status != DEPOSED_EXIT]
    checks = [
        (
            f"every acknowledged update in the log of record, once "
            f"({len(acknowledged(group.master))} acknowledged)",
            not problems,
            "; ".join(problems),
        ),
        ("no stale epoch write accepted", not stale, f"notifications {stale}"),
        (
            f"each resumed leader stepped down (exit status {DEPOSED_EXIT})",
            not deposed,
            ", ".join(f"{f.old.replica}: {f.exit_status}" for f in deposed),
        ),
        (f"taskledger verify --log {group.log.text}", verified, said),
        (
            f"each of the {instances} instances RUNNING once",
            converged(group.master, instances),
            "not converged",
        ),
    ]
    for what, ok, why in checks:
        verdict = "[green]ok[/]" if ok else "[red]FAILED[/]"
        console.print(f"  {verdict}  {what}", highlight=False, soft_wrap=True)
        if not ok or why is said:  # verify's own lines, whatever it found
            console.print(
                "        " + why.replace("\n", "\n        "), markup=False, soft_wrap=True
            )
    return all(ok for _, ok, _ in checks)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so everything started is stopped either way."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(console: Console, *, kills: int = 2, pauses: int = 2, instances: int = 5) -> int:
    """The demo (see the module); its exit status."""
    try:
        with sigterm_as_interrupt():
            return _run(console, kills=kills, pauses=pauses, instances=instances)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: everything the demo started is stopped")
        return 130


def _run(console: Console, *, kills: int, pauses: int, instances: int) -> int:
    from tools.local_servers import ServerError, install_missing

    folder = os.path.abspath(os.path.join("var", "ha-demo"))  # the mirrors, kept
    shutil.rmtree(folder, ignore_errors=True)  # the previous demo's
    os.makedirs(folder)
    try:
        install_missing(say=console.print)
    except ServerError as e:
        console.print(f"[bold red]FAILED[/]: {e}", highlight=False)
        return 1
    console.print(
        f"[bold]taskledger demo --ha[/]: three replicas, a job of {instances} tasks on "
        f"{AGENTS} simulated agents, time x{TIME_SCALE:g}, ZooKeeper session {SESSION:g} s; "
        f"then {kills} kill(s) and {pauses} pause(s) of the leader"
    )
    ok = False
    # Each thing started is stopped on the way out, last started first, whatever happens.
    with ExitStack() as started:
        try:
            ok = _failovers(
                console, started, folder=folder, kills=kills, pauses=pauses, instances=instances
            )
        except (TimeoutError, ServerError) as e:
            console.print(f"[bold red]FAILED[/]: {e}", highlight=False)
    console.print("[bold green]nothing lost[/]" if ok else "[bold red]FAILED[/]")
    console.print(
        f"the replicas' mirrors stay in {folder}/{{{','.join(REPLICAS)}}}; e.g. "
        f"taskledger verify --log {os.path.join(folder, REPLICAS[0])}",
        markup=False,
        soft_wrap=True,
    )
    return 0 if ok else 1


def _failovers(
    console: Console, started: ExitStack, *, folder: str, kills: int, pauses: int, instances: int
) -> bool:
    """Starts the servers, the master and the replicas (mirrors in ``folder``; each stopped
    by ``started``), then the faults and the end's checks; whether nothing was lost."""
    from tools.local_servers import PostgresServer, ZooKeeperServer
    from tools.sim_master.cluster import SimConfig
    from tools.sim_master.server import BackgroundSim

    postgres = PostgresServer(durable=True).start()
    started.callback(postgres.stop)
    zookeeper = ZooKeeperServer(tick_ms=TICK_MS).start()
    started.callback(zookeeper.stop)
    config = SimConfig(agents=AGENTS, seed=1, wire_time_scale=TIME_SCALE)
    sim = started.enter_context(BackgroundSim(config, time_scale=TIME_SCALE))
    console.print(
        f"PostgreSQL on 127.0.0.1:{postgres.port}, ZooKeeper on {zookeeper.hosts}, "
        f"the simulated master on {sim.address}",
        highlight=False,
    )
    group = replicas_of(
        sim.address,
        postgres,
        "public",
        zookeeper.hosts,
        folder,
        session_timeout=SESSION,
        instances=instances,
        time_scale=TIME_SCALE,
    )
    started.callback(group.stop)
    log = LogOfRecord(group.log, postgres.password)
    started.callback(log.close)
    for name in REPLICAS:
        group.start(name)
    elected = leader_after(log, 0, timeout=STEP_TIMEOUT)
    wait(lambda: converged(sim.address, instances), STEP_TIMEOUT, "the job to run")
    console.print(
        f"{elected.replica} leads at epoch {elected.epoch}; the job runs "
        f"({instances} instances RUNNING, every update acknowledged)"
    )
    refusals = started.enter_context(StaleStreams.counting(quiet=True))
    done: list[Failover] = []
    for n, fault in enumerate(faults(kills, pauses), 1):
        failover = fail_over(
            group, log, fault=fault, old=elected, instances=instances, refusals=refusals
        )
        console.print(describe(n, failover), highlight=False, soft_wrap=True)
        done.append(failover)
        elected = failover.new
    if done:
        times = sorted(f.leaderless_s for f in done)
        console.print(
            f"leader gone -> new leader dispatching: median {times[len(times) // 2]:.2f} s, "
            f"max {times[-1]:.2f} s over {len(done)} failover(s)"
        )
    console.print("[bold]nothing lost?[/]")
    return final_checks(console, group, log, done, instances)
