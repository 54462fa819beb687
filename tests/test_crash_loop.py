"""Crash loops: the real program is SIGKILLed at random moments, restarted, and checked.

After every kill:
- every append that returned (every update the scheduler acknowledged to the master) is in
  the log, at the id it was given;
- notification ids have no gaps;
- `taskledger verify --log` exits 0;
- the views of the reopened Ledger (newest snapshot + replay) equal a replay from scratch.

Three programs are killed: a writer on the Ledger API (4 threads, group commit, snapshots)
that prints each id only after its append returned; `taskledger ingest` (whose log must
always be a prefix of its input, and which finishes the job when run again); and
`taskledger run` against the simulated master (every update the master saw acknowledged must
be in the log). Two more tests kill the scheduler between receiving an update and committing
it, and between committing it and acknowledging it (the test hooks in tools/run_command.py),
and show the master re-sends it and the log ends up holding it exactly once. Another kills
it at random moments during a burst of thousands of updates (the ingest pipelined: many
updates in flight between arrival, commit and acknowledgement): nothing acknowledged is
missing, nothing is recorded twice, every task's updates are in the log in their order.

TASKLEDGER_CRASH_SEED picks the random moments (printed on failure); TASKLEDGER_CRASH_SCALE
multiplies the number of kills (e.g. 10 for a long soak).
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from click.testing import CliRunner
from sim_session import state, wait_until

from engine.events import StatusUpdateReceived
from engine.ledger import Ledger, LedgerState, state_digest
from tools.cli import cli
from tools.run_command import CRASH_BEFORE_ACK, CRASH_BEFORE_APPEND
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = int(os.environ.get("TASKLEDGER_CRASH_SEED", "7"))
SCALE = float(os.environ.get("TASKLEDGER_CRASH_SCALE", "1"))
API_KILLS = int(50 * SCALE)
INGEST_KILLS = int(25 * SCALE)
RUN_KILLS = int(25 * SCALE)
SIM_SCALE = 20.0
INSTANCES = 6

# Appends through the Ledger API from 4 threads (so kills land inside group commits), with
# snapshots now and then; each line is printed only after the append returned.
_WRITER = r"""
import base64, os, random, sys, threading, time
from engine.ledger import Ledger, TaskExists

path, seed = sys.argv[1], int(sys.argv[2])
ledger = Ledger.open(path)
STATES = ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED", "TASK_FAILED",
          "TASK_LOST", "TASK_KILLING", "TASK_UNREACHABLE", "TASK_UNKNOWN"]
run = os.getpid()

def say(nid, kind, key):
    os.write(1, f"{nid} {kind} {key}\n".encode())

def worker(n):
    rng = random.Random(seed * 10 + n)
    i = 0
    while True:
        i += 1
        task = f"job/{rng.randrange(30)}"
        roll = rng.random()
        if roll < 0.05:
            try:  # a task id is created once; the second creator is refused, writing nothing
                say(ledger.task_created(task, job="job", instance=0), "TaskCreated", task)
            except TaskExists:
                pass
        elif roll < 0.08:
            say(ledger.task_assigned(task, agent_id=f"agent-{n}"), "TaskAssigned", task)
        elif roll < 0.09 and n == 0:
            info = ledger.snapshot()
            say(info.nid, "Snapshot", "-")
        else:
            uuid = base64.b64encode(f"{run}-{n}-{i}".encode()).decode()
            status = {"task_id": {"value": task}, "state": rng.choice(STATES),
                      "agent_id": {"value": f"agent-{n}"}, "source": "SOURCE_EXECUTOR",
                      "timestamp": time.time(), "uuid": uuid}
            say(ledger.status_update(status), "StatusUpdateReceived", uuid)

os.write(1, b"ready\n")
threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def spawn(args: list[str], out: Any, err: Any = subprocess.DEVNULL, env: dict | None = None):
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=out,
        stderr=err,
        env={**os.environ, **(env or {})},
    )


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILLs the process; True if it was still running (a crash, not a clean exit)."""
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return alive


def check_log(path: str, context: str) -> list[tuple[int, Any]]:
    """The invariants every kill must leave intact; returns the log's events."""
    with Ledger.open(path) as ledger:
        events = list(ledger.events())
        ids = [nid for nid, _ in events]
        assert ids == list(range(1, len(ids) + 1)), f"{context}: ids have gaps"
        assert ledger.last_id == len(ids), context
        assert ledger.snapshot_problems == [], (context, ledger.snapshot_problems)
        replay = LedgerState()
        for nid, event in events:
            replay.apply(nid, event)
        # The reopened Ledger starts from its newest snapshot: it must equal a full replay.
        assert ledger.digest() == state_digest(replay), f"{context}: views differ from replay"
    result = CliRunner().invoke(cli, ["verify", "--log", path])
    assert result.exit_code == 0, (context, result.output)
    return events


def read_lines(path: str) -> list[str]:
    with open(path, "rb") as f:
        data = f.read().decode()
    lines = data.split("\n")
    return lines[:-1]  # a line cut by the kill (no newline) promises nothing


def _wait_for_line(path: str, line: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while line not in read_lines(path):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, f"the writer did not print {line!r} in {timeout} s"
        time.sleep(0.01)


def test_ledger_api_writer_survives_sigkill_at_random_moments(tmp_path):
    rng = random.Random(SEED)
    kills = 0
    promised_total = 0
    log = None
    for attempt in range(API_KILLS):
        if attempt % 5 == 0:  # a fresh log now and then keeps each check short
            log = str(tmp_path / f"log{attempt}")
        out_path = str(tmp_path / f"out{attempt}")
        with open(out_path, "wb") as out:
            proc = spawn(["-c", _WRITER, log, str(SEED * 1000 + attempt)], out, subprocess.PIPE)
        if attempt % 2:
            # From 0.2 s the kill may land while it opens the log (replays, takes the lock).
            time.sleep(rng.uniform(0.15, 0.6))
        else:
            # Half the kills land while it appends, however long a loaded machine takes
            # to start Python: otherwise no append might ever be checked.
            _wait_for_line(out_path, "ready", proc)
            time.sleep(rng.uniform(0.0, 0.3))
        assert proc.poll() is None, proc.stderr.read().decode()  # it never stops by itself
        kills += kill(proc)
        assert proc.stderr.read() == b"", "the writer failed before it was killed"
        context = f"seed {SEED}, kill {attempt}, log {log}"
        events = dict(check_log(log, context))
        for line in read_lines(out_path):
            if line == "ready":
                continue
            nid_text, kind, key = line.split(" ")
            if kind == "Snapshot":
                continue  # snapshots are checked by check_log (none is damaged)
            event = events.get(int(nid_text))
            assert event is not None, f"{context}: returned append {line!r} is not in the log"
            assert type(event).__name__ == kind, (context, line, event)
            assert (event.uuid if kind == "StatusUpdateReceived" else event.task_id) == key
            promised_total += 1
    assert kills == API_KILLS
    assert promised_total > 0
    print(f"ledger API writer: {kills} kills survived, {promised_total} returned appends checked")


def _status_line(n: int) -> str:
    status = {
        "task_id": {"value": f"ingest/{n}"},
        "state": ("TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED")[n % 3],
        "agent_id": {"value": f"agent-{n % 5}"},
        "timestamp": 1_700_000_000.0 + n,
        "uuid": base64.b64encode(n.to_bytes(16, "big")).decode(),
    }
    return json.dumps(status)


def test_ingest_killed_at_random_moments_keeps_a_prefix_and_finishes_when_rerun(tmp_path):
    """`taskledger ingest` prints nothing per line, so the promise checked is: the log is
    always a prefix of the input, each line once (a rerun skips what is in, as duplicates),
    and an uninterrupted rerun completes it."""
    rng = random.Random(SEED + 1)
    lines = 12_000
    feed = tmp_path / "updates.jsonl"
    feed.write_text("".join(_status_line(n) + "\n" for n in range(lines)))
    expected = [base64.b64encode(n.to_bytes(16, "big")).decode() for n in range(lines)]
    kills = attempts = 0
    log = None
    while kills < INGEST_KILLS:
        attempts += 1
        assert attempts < INGEST_KILLS * 3, "ingest keeps finishing before the kill"
        if log is None:
            log = str(tmp_path / f"log{attempts}")
        batch = rng.choice([1, 1, 2, 5, 20])
        proc = spawn(
            ["-m", "tools.cli", "ingest", str(feed), "--log", log, "--batch", str(batch)],
            subprocess.DEVNULL,
            subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.2, 0.7))
        crashed = kill(proc)
        kills += crashed
        if not crashed:
            assert proc.returncode == 0, proc.stderr.read().decode()
        context = f"seed {SEED}, ingest attempt {attempts}, log {log}"
        events = check_log(log, context)
        uuids = [e.uuid for _, e in events]
        assert uuids == expected[: len(uuids)], f"{context}: the log is not a prefix of the input"
        if len(uuids) == lines:
            log = None  # done: the next kills get a new log
    # An uninterrupted run completes a partly ingested log, each line exactly once.
    log = log or str(tmp_path / "last")
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "ingest", str(feed), "--log", log, "--json"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    events = check_log(log, "after the last rerun")
    assert [e.uuid for _, e in events] == expected
    print(f"taskledger ingest: {kills} kills survived in {attempts} runs")


# -- taskledger run against the simulated master --------------------------------------------------
def run_scheduler(
    address: str,
    log: str,
    env: dict | None = None,
    err: Any = None,
    labels: tuple = (),
    *,
    instances: int = INSTANCES,
    small: bool = False,  # tasks of 0.01 cpus and 1 MB, thousands to an agent
    job: str = "web",
):
    return spawn(
        [
            "-m",
            "tools.cli",
            "run",
            "--master",
            address,
            "--log",
            log,
            "--instances",
            str(instances),
            "--job",
            job,
            *(("--cpus", "0.01", "--mem", "1") if small else ()),
            "--time-scale",
            str(SIM_SCALE),
            "--heartbeat",
            str(15.0 / SIM_SCALE),
            *(arg for label in labels for arg in ("--label", label)),
        ],
        subprocess.DEVNULL,
        err if err is not None else subprocess.DEVNULL,
        env,
    )


def logged_updates(events: list[tuple[int, Any]]) -> list[tuple[str, str]]:
    return [
        (e.task_id, e.uuid)
        for _, e in events
        if type(e) is StatusUpdateReceived and e.uuid is not None
    ]


def acknowledged(address: str) -> list[tuple[str, str]]:
    return [(a["task_id"], a["uuid"]) for a in state(address)["acknowledged"]]


def running_instances(address: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for task in state(address)["tasks"]:
        if task["agent_state"] in ("TASK_RUNNING", "TASK_STARTING", "TASK_STAGING"):
            instance = int(task["task_id"].split("/")[1])
            counts[instance] = counts.get(instance, 0) + 1
    return counts


def converged(address: str) -> bool:
    """Each instance runs exactly once, and every update about it has been acknowledged
    (a task just launched is still STAGING with nothing queued yet: not converged)."""
    tasks = state(address)["tasks"]
    return running_instances(address) == dict.fromkeys(range(INSTANCES), 1) and all(
        t["pending_updates"] == 0 and t["agent_state"] == "TASK_RUNNING" for t in tasks
    )


def streams(address: str) -> set[str]:
    return {f["stream_id"] for f in state(address)["frameworks"] if f["connected"]}


def wait_subscribed(address: str, before: set[str]) -> None:
    """Until a scheduler started after `before` was taken has subscribed (by then its
    SIGTERM handler is installed)."""
    wait_until(lambda: streams(address) - before, 45, what="the scheduler's subscription")


def diagnosis(address: str, log: str) -> str:
    """What the cluster and the log say, for a convergence that did not come."""
    cluster_state = state(address)
    odd = [
        (t["task_id"], t["agent_state"], t["master_state"], t["pending_updates"])
        for t in cluster_state["tasks"]
        if t["agent_state"] != "TASK_RUNNING" or t["pending_updates"]
    ]
    with Ledger.open(log) as ledger:
        live = sorted(
            (task, r.state)
            for task, r in ledger.scheduler_view.tasks.items()
            if r.state not in ("FAILED", "FINISHED", "KILLED", "LOST")
        )
        kinds: dict[str, int] = {}
        for _, event in ledger.events():
            name = type(event).__name__
            kinds[name] = kinds.get(name, 0) + 1
        return (
            f"running on the cluster: {running_instances(address)}; other tasks: {odd}; "
            f"live in the scheduler view: {live}; drift: {ledger.drift()}; "
            f"pending commands: {ledger.pending_commands()}; halted: "
            f"{ledger.saga.outbox.halted}; events: {kinds}"
        )


def converge_then_stop(
    proc: subprocess.Popen, address: str, log: str, what: str, err_path: Any = None
) -> None:
    try:
        # Generous: a loaded CI machine is slower; a real failure still fails, with a diagnosis.
        wait_until(lambda: converged(address), 90, what=what)
        # And still so a while later: a task an earlier run launched with a short duration
        # may have been running at the first look and fail right after (its replacement
        # then launches), so one look can catch a moment, not the end. 1 s is 20 simulated
        # seconds, longer than any task's duration (at most 6).
        time.sleep(1.0)
        wait_until(lambda: converged(address), 90, what=what)
    except TimeoutError:
        stop_cleanly(proc, err_path)
        raise AssertionError(f"no {what}: {diagnosis(address, log)}") from None
    stop_cleanly(proc, err_path)


def stop_cleanly(proc: subprocess.Popen, err_path: Any = None) -> None:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    said = err_path.read_text()[-3000:] if err_path is not None else "(stderr not kept)"
    assert code == 0, f"taskledger run exited {code} on SIGTERM; stderr: {said}"


@pytest.fixture
def cluster():
    config = SimConfig(agents=3, seed=SEED, wire_time_scale=SIM_SCALE)
    with BackgroundSim(config, time_scale=SIM_SCALE) as sim:
        yield sim


def test_run_killed_at_random_moments_loses_no_acknowledged_update(cluster, tmp_path):
    rng = random.Random(SEED + 2)
    log = str(tmp_path / "log")
    kills = 0
    for attempt in range(RUN_KILLS):
        # Tasks that fail after a few (simulated) seconds keep updates, acknowledgements,
        # replacements and launches flowing, so the kills land among them. (FINISHED is not
        # replaced: the job is not a service.)
        labels = (f"sim.duration={rng.uniform(1, 6):.1f}", "sim.outcome=FAILED")
        proc = run_scheduler(cluster.address, log, labels=labels)
        time.sleep(rng.uniform(0.3, 2.0))
        assert proc.poll() is None, "the scheduler stopped by itself"
        kills += kill(proc)
        context = f"seed {SEED}, run kill {attempt}"
        events = check_log(log, context)
        missing = set(acknowledged(cluster.address)) - set(logged_updates(events))
        assert not missing, f"{context}: acknowledged but not in the log: {sorted(missing)}"
    # Restarted once more and left alone, it converges: each instance runs once, every
    # update is acknowledged, and everything acknowledged is in the log exactly once.
    before = streams(cluster.address)
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = run_scheduler(cluster.address, log, err=err)
    try:
        wait_subscribed(cluster.address, before)
    except TimeoutError:
        kill(proc)
        raise
    converge_then_stop(proc, cluster.address, log, "convergence after the crashes", err_path)
    events = check_log(log, "after the crash loop")
    acked = acknowledged(cluster.address)
    logged = logged_updates(events)
    assert set(acked) <= set(logged)
    assert len(logged) == len(set(logged)), "an update was recorded twice"
    with Ledger.open(log) as ledger:
        running = [r for r in ledger.scheduler_view.tasks.values() if r.state == "RUNNING"]
        agrees = len(running) == INSTANCES and ledger.drift() == []
    assert agrees, diagnosis(cluster.address, log)
    print(f"taskledger run: {kills} kills survived, {len(acked)} acknowledged updates checked")


def test_killed_between_receiving_and_committing_an_update_the_master_resends_it(cluster, tmp_path):
    """The scheduler dies after receiving an update and before committing it. The
    update was not acknowledged, so the master re-sends it to the restarted scheduler,
    which records it once and acknowledges it."""
    log = str(tmp_path / "log")
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = run_scheduler(cluster.address, log, {CRASH_BEFORE_APPEND: "3"}, err)
    assert proc.wait(30) == -signal.SIGKILL
    hook = [
        line
        for line in err_path.read_text().splitlines()
        if line.startswith("taskledger: test hook: killed before appending ")
    ]
    assert len(hook) == 1, err_path.read_text()
    task_id, uuid = hook[0].split()[-2:]
    events = check_log(log, "after the hook's kill")
    assert (task_id, uuid) not in logged_updates(events)
    assert (task_id, uuid) not in acknowledged(cluster.address)
    pending = [t for t in state(cluster.address)["tasks"] if t["task_id"] == task_id]
    assert pending and pending[0]["pending_updates"] >= 1

    before = streams(cluster.address)
    proc = run_scheduler(cluster.address, log)
    try:
        wait_subscribed(cluster.address, before)
        wait_until(lambda: (task_id, uuid) in acknowledged(cluster.address), 20, what="the re-send")
    except TimeoutError:
        kill(proc)
        raise
    converge_then_stop(proc, cluster.address, log, "convergence")
    logged = logged_updates(check_log(log, "after the restart"))
    assert logged.count((task_id, uuid)) == 1
    assert set(acknowledged(cluster.address)) <= set(logged)


# -- the pipelined ingest under a burst -----------------------------------------------------------
BURST_TASKS = 1500
BURST_KILLS = max(2, int(6 * SCALE))
_ORDER = {"TASK_STAGING": 0, "TASK_STARTING": 1, "TASK_RUNNING": 2}


@pytest.fixture
def big_cluster():
    config = SimConfig(
        agents=6, seed=SEED, agent_cpus=100.0, agent_mem=100_000.0, wire_time_scale=SIM_SCALE
    )
    with BackgroundSim(config, time_scale=SIM_SCALE) as sim:
        yield sim


def check_burst(events: list[tuple[int, Any]], address: str, context: str, job: str) -> None:
    """Nothing acknowledged is missing, nothing recorded twice, each task's updates in order
    (for the job's tasks: other jobs, of other logs, share the master)."""
    logged = logged_updates(events)
    mine = {(t, u) for t, u in acknowledged(address) if t.startswith(f"{job}/")}
    missing = mine - set(logged)
    assert not missing, f"{context}: acknowledged but not in the log: {sorted(missing)[:5]}"
    assert len(logged) == len(set(logged)), f"{context}: an update recorded twice"
    last: dict[str, int] = {}
    for _, e in events:
        if type(e) is StatusUpdateReceived and e.uuid is not None:
            rank = _ORDER.get(e.state, 3)
            assert rank >= last.get(e.task_id, 0), f"{context}: {e.task_id} out of order"
            last[e.task_id] = rank


def test_run_killed_during_a_burst_of_thousands_of_updates(big_cluster, tmp_path):
    rng = random.Random(SEED + 3)
    address = big_cluster.address
    for attempt in range(BURST_KILLS):
        # A new log (a new framework, a new burst of launches) every other kill; in between,
        # the killed one restarts: re-sent updates, duplicates, the rest of its burst.
        job = f"burst{attempt // 2}"
        log = str(tmp_path / job)
        before, subscribed = acked_of(address, job), streams(address)
        proc = run_scheduler(address, log, instances=BURST_TASKS, small=True, job=job)
        if attempt % 2 == 0:
            # Into the launch's burst (thousands of updates arriving, committing,
            # acknowledged): once the master has seen acknowledgements of this job.
            wait_until(
                lambda job=job, before=before: acked_of(address, job) > before,
                60,
                what="the burst",
            )
        else:
            # The restart: once subscribed (the master re-sends what was not acknowledged).
            wait_subscribed(address, subscribed)
        time.sleep(rng.uniform(0.0, 1.0))
        assert proc.poll() is None, "the scheduler stopped by itself"
        kill(proc)
        context = f"seed {SEED}, burst kill {attempt}"
        check_burst(check_log(log, context), address, context, job)
    print(f"burst: {BURST_KILLS} kills survived, {len(acknowledged(address))} acknowledged")


def acked_of(address: str, job: str) -> int:
    return sum(1 for task, _ in acknowledged(address) if task.startswith(f"{job}/"))


def test_killed_between_committing_and_acknowledging_the_master_resends_it(big_cluster, tmp_path):
    """The update is durable, its acknowledgement never left: after the restart the master
    sends it again, the log keeps it once (a re-delivery) and it is acknowledged then."""
    log = str(tmp_path / "log")
    address = big_cluster.address
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = run_scheduler(
            address, log, {CRASH_BEFORE_ACK: "700"}, err, instances=BURST_TASKS, small=True
        )
    assert proc.wait(60) == -signal.SIGKILL
    hook = [
        line
        for line in err_path.read_text().splitlines()
        if line.startswith("taskledger: test hook: killed before acknowledging ")
    ]
    assert len(hook) == 1, err_path.read_text()[-2000:]
    task_id, uuid = hook[0].split()[-2:]
    events = check_log(log, "after the hook's kill")
    assert (task_id, uuid) in logged_updates(events)  # committed ...
    assert (task_id, uuid) not in acknowledged(address)  # ... not acknowledged
    check_burst(events, address, "after the hook's kill", "web")

    proc = run_scheduler(address, log, instances=BURST_TASKS, small=True)
    try:
        wait_until(lambda: (task_id, uuid) in acknowledged(address), 60, what="the re-send")
    finally:
        stop_cleanly(proc)
    events = check_log(log, "after the restart")
    assert logged_updates(events).count((task_id, uuid)) == 1
    check_burst(events, address, "after the restart", "web")
