"""Replicas of `taskledger run` as processes, and the log of record they share, read back:
the harness of the replicated scheduler's tests, its failover benchmark (benchmarks/ha.py)
and its demo.

``Replicas`` starts each replica as its own process (so it can be SIGKILLed, SIGSTOPped,
SIGTERMed, and started again as a supervisor would), against one master, one PostgreSQL
log of record and one ZooKeeper election. ``LogOfRecord`` reads what the log holds, each
event with the epoch and replica that wrote it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from engine.events import CommandDispatched, LeaderElected, StatusUpdateReceived
from engine.ledger_state import STREAM_WIRE, decode_records
from engine.log_address import LogAddress
from engine.replication import connect, read_written
from tools.sim_master.client import get_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIVE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING")


@dataclass
class Replicas:
    """The replicas' processes, each with its mirror folder and stderr file in ``folder``.
    ``options`` are more `taskledger run` options, the same for every replica."""

    master: str
    log: LogAddress
    password: str
    zk_hosts: str
    folder: str
    session_timeout: float = 1.0
    options: tuple[str, ...] = ()
    election: str = field(default_factory=lambda: f"/taskledger-{uuid.uuid4().hex[:8]}")
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, *extra: str) -> subprocess.Popen:
        """Starts replica ``name`` (a follower until elected), with ``extra`` options."""
        with open(self.stderr_path(name), "ab") as err:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tools.cli", "run", "--master", self.master),
                    *("--log", self.log.text, "--zk", self.zk_hosts + self.election),
                    *("--replica", name, "--local", os.path.join(self.folder, name)),
                    *("--session-timeout", str(self.session_timeout), *self.options, *extra),
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PGPASSWORD": self.password},
            )
        self.procs[name] = proc
        return proc

    def mirror(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def stderr_path(self, name: str) -> str:
        return os.path.join(self.folder, f"{name}.stderr")

    def stderr(self, name: str, tail: int = 3000) -> str:
        with open(self.stderr_path(name), errors="replace") as f:
            return f.read()[-tail:]

    def stop(self) -> None:
        """Kills every replica still running (resumed first, if stopped)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(10)


def replicas_of(
    master: str,
    postgres: Any,
    schema: str,
    zk_hosts: str,
    folder: str,
    *,
    session_timeout: float,
    instances: int,
    time_scale: float,
) -> Replicas:
    """Replicas of one job against a simulated master whose clock runs ``time_scale`` times
    fast (the saga's schedules and the heartbeat compressed alike), logging to ``schema`` of
    ``postgres`` (a server with ``user``, ``port``, ``dbname`` and ``password`` on
    127.0.0.1, as tests/servers.py's); no operator API."""
    address = LogAddress(postgres.user, "127.0.0.1", postgres.port, postgres.dbname, schema)
    return Replicas(
        master,
        address,
        postgres.password,
        zk_hosts,
        folder,
        session_timeout=session_timeout,
        options=(
            *("--instances", str(instances), "--time-scale", str(time_scale)),
            *("--heartbeat", str(15.0 / time_scale), "--api", "off"),
        ),
    )


class LogOfRecord:
    """The replicated log in PostgreSQL, read by a client of its own."""

    def __init__(self, address: LogAddress, password: str) -> None:
        self.datastore, self.recorder = connect(address, password)

    def written(self) -> list[tuple[Any, Any]]:
        """(notification with its epoch and replica, event), in notification order."""
        try:
            rows = list(read_written(self.recorder))
        except Exception:  # the replicas have not created the tables yet
            return []
        decoded = decode_records(
            (0, [STREAM_WIRE, n.originator_version, n.topic, n.state]) for n in rows
        )
        return list(zip(rows, (event for _, event in decoded), strict=True))

    def leaders(self) -> list[LeaderElected]:
        return [e for _, e in self.written() if type(e) is LeaderElected]

    def sessions(self) -> list[tuple]:
        """What each PostgreSQL session is doing (for a failure's message)."""
        with self.datastore.get_connection() as conn:
            return [
                tuple(row.values())
                for row in conn.execute(
                    "SELECT pid, state, wait_event, left(query, 80), now() - state_change "
                    "FROM pg_stat_activity WHERE backend_type = 'client backend'"
                )
            ]

    def close(self) -> None:
        self.datastore.close()


def wait(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.01) -> Any:
    """Polls until ``predicate()`` is truthy (returned); TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")


def leader_after(log: LogOfRecord, epoch: int, timeout: float = 30.0) -> LeaderElected:
    """The first LeaderElected in the log with an epoch above ``epoch``."""

    def elected() -> LeaderElected | None:
        return next((e for e in log.leaders() if e.epoch > epoch), None)

    try:
        return wait(elected, timeout, f"a leader after epoch {epoch}")
    except TimeoutError:
        raise TimeoutError(
            f"no leader after epoch {epoch} within {timeout} s; sessions: {log.sessions()}"
        ) from None


def converged(master: str, instances: int) -> bool:
    """Each instance runs exactly once on the master's cluster, every update about it
    acknowledged."""
    tasks = get_json(master, "/state")["tasks"]
    live = sorted(int(t["task_id"].split("/")[1]) for t in tasks if t["agent_state"] in LIVE)
    return live == list(range(instances)) and all(
        t["pending_updates"] == 0 and t["agent_state"] == "TASK_RUNNING" for t in tasks
    )


def streams(master: str) -> set[str]:
    """The stream ids of the frameworks subscribed to the master now."""
    return {f["stream_id"] for f in get_json(master, "/state")["frameworks"] if f["connected"]}


def log_problems(log: LogOfRecord, master: str) -> list[str]:
    """What the log of record gets wrong (none: an empty list): epochs never decrease along
    it; versions are the positions 0, 1, ...; every event is written at the epoch of the
    last LeaderElected before it (so no deposed leader's write was accepted); every update
    the master saw acknowledged is in the log, none twice."""
    written = log.written()
    problems = []
    epochs = [n.epoch for n, _ in written]
    if epochs != sorted(epochs):
        problems.append("an epoch decreased along the log")
    if [n.originator_version for n, _ in written] != list(range(len(written))):
        problems.append("the versions are not the positions 0, 1, 2, ...")
    led = 0  # the epoch of the last LeaderElected: every event after it was written at it
    for n, event in written:
        if type(event) is LeaderElected:
            if (event.epoch, event.replica) != (n.epoch, n.replica):
                problems.append(f"LeaderElected {n.id} written by {n.replica} at {n.epoch}")
            led = event.epoch
        elif n.epoch != led:
            problems.append(f"event {n.id} written at epoch {n.epoch}, led by {led}")
    logged = [
        (e.task_id, e.uuid)
        for _, e in written
        if type(e) is StatusUpdateReceived and e.uuid is not None
    ]
    if len(logged) != len(set(logged)):
        problems.append("an update recorded twice")
    missing = acknowledged(master) - set(logged)
    if missing:
        problems.append(f"acknowledged, not in the log of record: {sorted(missing)}")
    return problems


def acknowledged(master: str) -> set[tuple[str, str]]:
    """(task id, uuid) of every status update the master saw acknowledged."""
    return {(a["task_id"], a["uuid"]) for a in get_json(master, "/state")["acknowledged"]}


def stale_writes(log: LogOfRecord, elected: LeaderElected) -> list[int]:
    """The notification ids of events written below ``elected``'s epoch after it: a
    deposed leader's appends the fence let through (there must be none)."""
    written = log.written()
    taken = next(n.id for n, e in written if e == elected)
    return [n.id for n, _ in written if n.id > taken and n.epoch < elected.epoch]


def first_dispatch(log: LogOfRecord, epoch: int) -> tuple[LeaderElected, CommandDispatched] | None:
    """The first leader above ``epoch`` and the first command it dispatched, once it has:
    the end of a failover (the new leader acting on Mesos)."""
    written = [e for _, e in log.written()]
    at = next(
        (i for i, e in enumerate(written) if type(e) is LeaderElected and e.epoch > epoch), None
    )
    if at is None:
        return None
    first = next((e for e in written[at:] if type(e) is CommandDispatched), None)
    return None if first is None else (written[at], first)


class StaleStreams(logging.Handler):
    """Counts the simulated master's refusals of calls on a stream it failed over: a
    deposed leader's calls, sent after it resumed (the master's one-line log of each
    refusal, tools/sim_master/server.py; the master must run in this process)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "didn't match the stream ID" in record.getMessage():
            self.count += 1

    @classmethod
    @contextmanager
    def counting(cls, *, quiet: bool = False) -> Iterator[StaleStreams]:
        """Counts while in the block; ``quiet``: the master's log says nothing meanwhile."""
        handler = cls()
        master_log = logging.getLogger("taskledger.sim")
        master_log.addHandler(handler)
        propagate = master_log.propagate
        master_log.propagate = propagate and not quiet
        try:
            yield handler
        finally:
            master_log.removeHandler(handler)
            master_log.propagate = propagate
