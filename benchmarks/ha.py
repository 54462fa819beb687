"""Durable appends to the replicated log: the fenced recorder beside eventsourcing's PostgreSQL
module and bare psycopg, and how far behind a follower is.

    python -m benchmarks.ha [--events N] [--single N] [--json OUT] [--only-run-lag]

One throwaway PostgreSQL server (tools/local_servers.py, fsync and synchronous_commit on) serves
every path, one after another, in one run, so the ratios hold on a noisy machine. Every
path appends the same events (one originator per task, versions in order, state a
msgpack-encoded Mesos status update), each into a table of its own:

* fenced 16 threads 1/call: engine.postgres_log, 16 writers, one event per call, sharing
  transactions through group commit (each call fenced by its epoch). The path the
  scheduler's ingest takes.
* eventsourcing 16 threads 1/call / eventsourcing 1/call: eventsourcing's PostgreSQL
  module, one event per call, from 16 threads (a pool of 16 connections; the module's
  table lock serialises them) and from one: what a user would pick instead.
* eventsourcing batched / fenced batched: 100 events per call, one thread.
* raw 16-thread committer: no project code: 16 writers hand rows to one thread that
  inserts whatever is queued in one transaction: the ceiling for single-event writers that
  share commits, in CPython, on this disk.
* raw 16 conns 1/commit: no project code: 16 connections, one row and one COMMIT each
  (PostgreSQL's own WAL group commit, no table lock): what the server gives 1/call writers.
* raw 1/commit: one connection, one row per COMMIT: one fsync per event.

Then the follower's lag: a writer appends 1,000 events a second (a pacer handing them to
16 writer threads, so group commit batches as in production), and a follower in another
process (its own connection, eventsourcing's LISTEN/NOTIFY subscription, polling as
engine.postgres_log's does) notes when it sees each. Reported: from each event's commit
(PostgreSQL's commit timestamp, the same clock on one machine) to the follower seeing
it, and from the append call to that.

Then a standby's lag through `taskledger run` (``--run-lag-seconds``, 0: skip;
``--only-run-lag``: nothing else): two replicas of a 1,000-task job, an explicit
reconciliation of the whole job asked of the leader every second, the standby's
taskledger_follower_lag_seconds histogram over that window beside the leader's own part
(its stamp on each event to the event's commit in PostgreSQL).

Then failover (``--failover-rounds``, 0: skip; ``--only-failover``: nothing else): three
`taskledger run` replicas (tools/ha_cluster.py) against the simulated master, PostgreSQL
the log of record, a ZooKeeper with tickTime ``--tick-ms`` and sessions of ``--session``
seconds. Each round SIGKILLs the leader, then SIGTERMs the next one (each restarted as a
follower once replaced). Reported, from the signal: the new leader's LeaderElected (its
own clock: one machine), its SUBSCRIBE seen by the master (polled every 5 ms), and its
first command dispatched (the reconciliation it starts once subscribed).
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import msgpack
import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from psycopg import sql

from benchmarks.common import Result, print_table, status_updates, timed, write_json
from engine.postgres_log import FencedApplicationRecorder, PollingSubscription
from engine.replication import EVENTS_TABLE
from tools.local_servers import PostgresServer, ZooKeeperServer, free_port
from tools.metrics import PREFIX

BATCH = 100
THREADS = 16
REPLICA = "bench"


def _events(count: int, tasks: int) -> list[StoredEvent]:
    versions: dict[str, int] = {}
    out = []
    for status in status_updates(count, tasks=tasks):
        task = status["task_id"]["value"]
        version = versions.get(task, 0)
        versions[task] = version + 1
        out.append(StoredEvent(task, version, "StatusUpdateReceived", msgpack.packb(status)))
    return out


def _in_threads(events: Sequence[StoredEvent], threads: int, write: Callable) -> None:
    workers = [threading.Thread(target=write, args=(events[n::threads],)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


class Bench:
    """One server, a fresh table per path."""

    def __init__(self, server: PostgresServer, schema: str) -> None:
        self.server, self.schema = server, schema
        self.stores: list[PostgresDatastore] = []
        self.tables = 0

    def datastore(self, pool: int) -> PostgresDatastore:
        store = self.server.datastore(self.schema, pool_size=pool, max_overflow=0)
        self.stores.append(store)
        return store

    def table(self) -> str:
        self.tables += 1
        return f"b{self.tables}_events"

    def fenced(self, pool: int = 4) -> FencedApplicationRecorder:
        recorder = FencedApplicationRecorder(self.datastore(pool), events_table_name=self.table())
        recorder.create_table()
        recorder.take_over(1, REPLICA)
        return recorder

    def plain(self, pool: int) -> PostgresApplicationRecorder:
        recorder = PostgresApplicationRecorder(self.datastore(pool), events_table_name=self.table())
        recorder.create_table()
        return recorder

    def raw_table(self) -> str:
        name = self.table()
        with psycopg.connect(self.server.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (originator_id text, originator_version bigint, topic text, "
                    "state bytea, notification_id bigserial, "
                    "PRIMARY KEY (originator_id, originator_version))"
                ).format(sql.Identifier(self.schema, name))
            )
        return name

    def close(self) -> None:
        for store in self.stores:
            store.close()


def bench_recorder(
    name: str,
    recorder: PostgresApplicationRecorder,
    events: list[StoredEvent],
    per_call: int,
    threads: int = 1,
) -> Result:
    def write(share: Sequence[StoredEvent]) -> None:
        for i in range(0, len(share), per_call):
            recorder.insert_events(share[i : i + per_call])

    def run() -> None:
        if threads == 1:
            write(events)
        else:
            _in_threads(events, threads, write)

    result = timed(name, len(events), run, f"{per_call} per call")
    group = getattr(recorder, "group", None)
    if group is not None and group.commits:
        result.note = f"{len(events) / group.commits:.1f} events per commit"
    return result


def _insert_statement(bench: Bench, table: str) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)"
    ).format(sql.Identifier(bench.schema, table))


def _row(e: StoredEvent) -> tuple:
    return (e.originator_id, e.originator_version, e.topic, e.state)


def bench_raw_single(bench: Bench, events: list[StoredEvent], threads: int) -> Result:
    insert = _insert_statement(bench, bench.raw_table())

    def write(share: Sequence[StoredEvent]) -> None:
        with psycopg.connect(bench.server.dsn) as conn:
            for e in share:
                conn.execute(insert, _row(e), prepare=True)
                conn.commit()

    name = "raw 1/commit" if threads == 1 else f"raw {threads} conns 1/commit"
    return timed(name, len(events), lambda: _in_threads(events, threads, write), "no project code")


def bench_raw_committer(bench: Bench, events: list[StoredEvent], threads: int) -> Result:
    insert = _insert_statement(bench, bench.raw_table())
    queue: list[tuple[tuple, threading.Lock]] = []
    cond = threading.Condition()
    done = threading.Event()
    commits = 0

    def committer() -> None:
        nonlocal commits
        with psycopg.connect(bench.server.dsn) as conn:
            while True:
                with cond:
                    while not queue and not done.is_set():
                        cond.wait()
                    if done.is_set() and not queue:
                        return
                    batch = queue[:]
                    queue.clear()
                with conn.cursor() as cur:
                    cur.executemany(insert, [row for row, _ in batch])
                conn.commit()
                commits += 1
                for _, waiter in batch:
                    waiter.release()

    def write(share: Sequence[StoredEvent]) -> None:
        for e in share:
            waiter = threading.Lock()
            waiter.acquire()
            with cond:
                queue.append((_row(e), waiter))
                cond.notify()
            waiter.acquire()  # released once its batch is committed

    thread = threading.Thread(target=committer)
    thread.start()
    try:
        result = timed(
            f"raw {threads}-thread committer",
            len(events),
            lambda: _in_threads(events, threads, write),
        )
    finally:
        done.set()
        with cond:
            cond.notify()
        thread.join()
    result.note = f"{len(events) / max(commits, 1):.1f} events per commit, no project code"
    return result


def bench_raw_batched(bench: Bench, events: list[StoredEvent]) -> Result:
    insert = _insert_statement(bench, bench.raw_table())

    def run() -> None:
        with psycopg.connect(bench.server.dsn) as conn:
            for i in range(0, len(events), BATCH):
                with conn.cursor() as cur:
                    cur.executemany(insert, [_row(e) for e in events[i : i + BATCH]])
                conn.commit()

    return timed("raw batched", len(events), run, f"{BATCH} per commit, no project code")


# ----------------------------------------------------------------------------- follower lag
def _follow(env: dict[str, str], table: str, gt: int, count: int, out: multiprocessing.Queue):
    """In a process of its own: subscribe after ``gt`` and note when each event is seen."""
    store = PostgresFactory({**env, "ORIGINATOR_ID_TYPE": "text"}).datastore
    recorder = PostgresApplicationRecorder(store, events_table_name=table)
    seen: dict[int, float] = {}
    out.put("ready")
    with PollingSubscription(recorder, gt=gt) as subscription:
        for notification in subscription:
            seen[notification.id] = time.time()
            if len(seen) >= count:
                break
    store.close()
    out.put(seen)


def bench_lag(bench: Bench, rate: float, seconds: float) -> dict:
    recorder = bench.fenced(pool=4)
    count = int(rate * seconds)
    start_id = recorder.max_notification_id() or 0
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    follower = context.Process(
        target=_follow,
        args=(bench.server.env(bench.schema), recorder.events_table_name, start_id, count, results),
    )
    follower.start()
    assert results.get(timeout=60) == "ready"
    time.sleep(0.5)  # the follower's LISTEN is in place
    called: dict[int, float] = {}

    def append(i: int) -> None:
        t = time.time()
        [nid] = recorder.insert_events([StoredEvent(f"lag/{i}", 0, "Tick", b"")])
        called[nid] = t

    began = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        for i in range(count):
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(append, i)
    achieved = count / (time.perf_counter() - began)
    seen = results.get(timeout=60)
    follower.join(10)
    committed = _commit_times(bench, recorder.events_table_name)
    after_commit = sorted(seen[n] - committed[n] for n in called)
    after_call = sorted(seen[n] - called[n] for n in called)
    return {
        "appends": count,
        "rate_asked": rate,
        "rate_achieved": achieved,
        "lag_from_commit_ms": {"p50": _pct(after_commit, 50), "p99": _pct(after_commit, 99)},
        "lag_from_call_ms": {"p50": _pct(after_call, 50), "p99": _pct(after_call, 99)},
        "events_per_commit": count / max(recorder.group.commits, 1),
    }


def _commit_times(bench: Bench, table: str) -> dict[int, float]:
    """When each event's transaction committed, by the server's clock (the same clock as
    ours: one machine), from track_commit_timestamp."""
    with psycopg.connect(bench.server.dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT notification_id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM {}"
            ).format(sql.Identifier(bench.schema, table))
        ).fetchall()
    return {nid: float(at) for nid, at in rows}


def _pct(sorted_seconds: list[float], p: int) -> float:
    index = min(len(sorted_seconds) - 1, round(p / 100 * (len(sorted_seconds) - 1)))
    return sorted_seconds[index] * 1000


# ----------------------------------------------------------------------------- main
def _interleaved(
    bench: Bench, single: list[StoredEvent], events: list[StoredEvent], rounds: int
) -> list[Result]:
    """Every path, ``rounds`` times in turn, each time on the next slice of its events: the
    disk's fsync time drifts (other processes share it), and taking turns spreads the
    drift over every path instead of charging it to whichever ran during it."""
    paths: list[tuple[str, list[StoredEvent], Callable[[list[StoredEvent]], Result]]] = [
        (
            f"fenced {THREADS} threads 1/call",
            single,
            lambda part: bench_recorder("", bench.fenced(), part, 1, THREADS),
        ),
        (
            f"raw {THREADS}-thread committer",
            single,
            lambda part: bench_raw_committer(bench, part, THREADS),
        ),
        (
            f"eventsourcing {THREADS} threads 1/call",
            single,
            lambda part: bench_recorder("", bench.plain(pool=THREADS), part, 1, THREADS),
        ),
        (f"raw {THREADS} conns 1/commit", single, lambda p: bench_raw_single(bench, p, THREADS)),
        ("eventsourcing 1/call", single, lambda p: bench_recorder("", bench.plain(1), p, 1)),
        ("raw 1/commit", single, lambda part: bench_raw_single(bench, part, 1)),
        ("fenced batched", events, lambda p: bench_recorder("", bench.fenced(), p, BATCH)),
        (
            "eventsourcing batched",
            events,
            lambda part: bench_recorder("", bench.plain(pool=1), part, BATCH),
        ),
        ("raw batched", events, lambda part: bench_raw_batched(bench, part)),
    ]
    totals = {name: Result(name, 0, 0.0) for name, _, _ in paths}
    for round_ in range(rounds):
        for name, data, run in paths:
            share = len(data) // rounds
            result = run(data[round_ * share : (round_ + 1) * share])
            total = totals[name]
            total.events += result.events
            total.seconds += result.seconds
            total.note = result.note
    return list(totals.values())


def _failover_round(group, log, master: str, how: signal.Signals, epoch: int, leader: str):
    """One failover: signals the leader; returns the new LeaderElected and the timings."""
    from tools.ha_cluster import converged, first_dispatch, streams, wait

    before = streams(master)
    proc = group.procs[leader]
    signalled = time.time()
    proc.send_signal(how)

    def recorded() -> bool:
        lead = log.recorder.recorded_epoch()
        return lead is not None and lead.epoch > epoch

    wait(recorded, 60, "a new epoch", every=0.002)
    wait(lambda: streams(master) - before, 60, "the new leader's subscription", every=0.005)
    subscribed = time.time()
    elected, first = wait(
        lambda: first_dispatch(log, epoch), 60, "the new leader's first dispatch", every=0.02
    )
    proc.wait(30)
    group.start(leader)  # as its supervisor would: a follower now
    wait(lambda: converged(master, FAILOVER_INSTANCES), 60, "convergence", every=0.05)
    return elected, {
        "elected_s": elected.time - signalled,
        "subscribed_s": subscribed - signalled,
        "dispatching_s": first.time - signalled,
    }


FAILOVER_INSTANCES = 4
FAILOVER_SCALE = 20.0


def bench_failover(server: PostgresServer, rounds: int, tick_ms: int, session: float) -> dict:
    import tempfile

    from tools.ha_cluster import LogOfRecord, converged, leader_after, replicas_of, wait
    from tools.sim_master.cluster import SimConfig
    from tools.sim_master.server import BackgroundSim

    zookeeper = ZooKeeperServer()
    zookeeper.tick_ms = tick_ms
    zookeeper.start()
    folder = tempfile.mkdtemp(prefix="tl-failover-")
    timings: dict[str, list[dict]] = {"SIGKILL": [], "SIGTERM": []}
    try:
        config = SimConfig(agents=3, seed=5, wire_time_scale=FAILOVER_SCALE)
        with (
            BackgroundSim(config, time_scale=FAILOVER_SCALE) as sim,
            server.fresh_schema() as schema,
        ):
            group = replicas_of(
                sim.address,
                server,
                schema,
                zookeeper.hosts,
                folder,
                session_timeout=session,
                instances=FAILOVER_INSTANCES,
                time_scale=FAILOVER_SCALE,
            )
            log = LogOfRecord(group.log, server.password)
            try:
                for name in ("a", "b", "c"):
                    group.start(name)
                elected = leader_after(log, 0, timeout=60)
                wait(lambda: converged(sim.address, FAILOVER_INSTANCES), 60, "convergence")
                for _ in range(rounds):
                    for how in (signal.SIGKILL, signal.SIGTERM):
                        elected, timing = _failover_round(
                            group, log, sim.address, how, elected.epoch, elected.replica
                        )
                        timings[how.name].append(timing)
                        print(
                            f"  {how.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in timing.items())
                        )
            finally:
                group.stop()
                log.close()
    finally:
        zookeeper.stop()
        shutil.rmtree(folder, ignore_errors=True)
    summary: dict = {"tick_ms": tick_ms, "session_s": session, "rounds": rounds}
    for how, rows in timings.items():
        for key in ("elected_s", "subscribed_s", "dispatching_s"):
            values = sorted(r[key] for r in rows)
            summary[f"{how}_{key}"] = {
                "median": values[len(values) // 2],
                "max": values[-1],
                "all": values,
            }
    return summary


RUN_LAG_INSTANCES = 1_000
RUN_LAG_ASKS_PER_S = 1  # explicit runs of the whole job a second: 1,000 answers/s


def _samples(port: int) -> dict[str, float]:
    """The taskledger_ samples a replica's /metrics serves, by name with labels."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(PREFIX))
    return {name: float(value) for name, value in pairs}


def _appended(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith(f"{PREFIX}_events_appended_total"))


def _lag_quantile(samples: dict[str, float], q: float) -> float:
    """The upper bound of the follower-lag bucket holding quantile ``q`` (the histogram's
    resolution: its buckets)."""
    name = f"{PREFIX}_follower_lag_seconds_bucket"
    buckets = sorted(
        (float(k.split('le="', 1)[1].split('"', 1)[0]), v)
        for k, v in samples.items()
        if k.startswith(name)
    )
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= q * total)


def bench_run_lag(server: PostgresServer, seconds: float, session: float) -> dict:
    """A standby's lag through `taskledger run`: two replicas (tools/ha_cluster.py), a job
    of RUN_LAG_INSTANCES, and an explicit reconciliation of the whole job asked of the
    leader RUN_LAG_ASKS_PER_S times a second (its operator API), so the leader appends about
    1,000 answers a second, in bursts (each burst's last answer waits for the commits of the
    ones before it: the leader's part below); the standby's taskledger_follower_lag_seconds
    histogram, from the leader's stamp on each event to its being durable in the standby's
    mirror and views, beside the leader's own part (its stamp to the commit in PostgreSQL)."""
    import tempfile

    from tools.ha_cluster import LogOfRecord, converged, leader_after, replicas_of, wait
    from tools.operator.client import Client
    from tools.sim_master.config import SimConfig
    from tools.sim_master.server import BackgroundSim

    zookeeper = ZooKeeperServer().start()
    folder = tempfile.mkdtemp(prefix="tl-run-lag-")
    try:
        config = SimConfig(agents=4, seed=5, agent_cpus=100.0, agent_mem=100_000.0)
        with BackgroundSim(config) as sim, server.fresh_schema() as schema:
            group = replicas_of(
                sim.address,
                server,
                schema,
                zookeeper.hosts,
                folder,
                session_timeout=session,
                instances=RUN_LAG_INSTANCES,
                time_scale=1.0,
            )
            log = LogOfRecord(group.log, server.password)
            ports = {name: (free_port(), free_port()) for name in ("a", "b")}
            try:
                for name, (metrics, api) in ports.items():
                    group.start(
                        name,
                        *("--cpus", "0.01", "--mem", "1", "--metrics-port", str(metrics)),
                        *("--api", f"127.0.0.1:{api}"),
                    )
                leader = leader_after(log, 0, timeout=60).replica
                standby = next(name for name in ports if name != leader)
                wait(lambda: converged(sim.address, RUN_LAG_INSTANCES), 120, "convergence")
                time.sleep(1.0)  # the launch's own updates applied by the standby
                operator = Client(f"http://127.0.0.1:{ports[leader][1]}/", operator="bench")
                start_id = log.recorder.max_notification_id() or 0
                before = _appended(_samples(ports[leader][0]))
                watch = _MirrorWatch(group.mirror(standby))
                lag_before = _samples(ports[standby][0])
                began = time.perf_counter()
                for i in range(int(seconds * RUN_LAG_ASKS_PER_S)):
                    delay = began + i / RUN_LAG_ASKS_PER_S - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    operator.post("/api/v1/reconcile", {"kind": "explicit", "reason": "bench"})
                time.sleep(max(0.0, began + seconds - time.perf_counter()) + 1.0)
                elapsed = time.perf_counter() - began
                watch.stop()
                after = _samples(ports[standby][0])
                rate = (_appended(_samples(ports[leader][0])) - before) / elapsed
                # The leader's part: from its stamp on an event to that event's commit in
                # PostgreSQL (track_commit_timestamp); the standby's lag includes it.
                committed = _committed_at(server, schema, start_id)
                written = [(n, e) for n, e in log.written() if n.id in committed]
                leader_part = sorted(committed[n.id] - e.time for n, e in written)
                from_commit = sorted(
                    watch.seen(n.originator_version) - committed[n.id] for n, _ in written
                )
            finally:
                group.stop()
                log.close()
    finally:
        zookeeper.stop()
        shutil.rmtree(folder, ignore_errors=True)
    window = {  # the histogram over the window alone: the launch's observations taken out
        k: v - lag_before.get(k, 0.0) for k, v in after.items() if "follower_lag" in k
    }
    count = window[f"{PREFIX}_follower_lag_seconds_count"]
    return {
        "instances": RUN_LAG_INSTANCES,
        "seconds": seconds,
        "leader_appends_per_s": rate,
        "standby_batches_timed": count,
        "mean_ms": 1000 * window[f"{PREFIX}_follower_lag_seconds_sum"] / max(count, 1),
        "p50_at_most_ms": 1000 * _lag_quantile(window, 0.50),
        "p99_at_most_ms": 1000 * _lag_quantile(window, 0.99),
        "standby_from_commit_ms": {
            "mean": 1000 * sum(from_commit) / max(len(from_commit), 1),
            "p50": _pct(from_commit, 50),
            "p99": _pct(from_commit, 99),
        },
        "leader_stamp_to_commit_ms": {
            "mean": 1000 * sum(leader_part) / max(len(leader_part), 1),
            "p50": _pct(leader_part, 50),
            "p99": _pct(leader_part, 99),
        },
    }


class _MirrorWatch:
    """Polls a standby's mirror (LMDB, read-only, from this process) every millisecond and
    notes when its length changed: when each position became durable there."""

    def __init__(self, path: str) -> None:
        from tools.readonly import ReadOnlyLedger

        self._mirror = ReadOnlyLedger.open(path)
        self._changes: list[tuple[int, float]] = [(self._mirror.last_id, time.time())]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stopped.wait(0.001):
            length = self._mirror.last_id
            if length != self._changes[-1][0]:
                self._changes.append((length, time.time()))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._mirror.close()

    def seen(self, position: int) -> float:
        """When the mirror first held ``position`` (its length passed it)."""
        lengths = [length for length, _ in self._changes]
        return self._changes[bisect.bisect_right(lengths, position)][1]


def _committed_at(server: PostgresServer, schema: str, after: int) -> dict[int, float]:
    """When each event of the log of record past ``after`` committed, by the server's clock."""
    with psycopg.connect(server.dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT notification_id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) "
                "FROM {} WHERE notification_id > %s"
            ).format(sql.Identifier(schema, EVENTS_TABLE)),
            (after,),
        ).fetchall()
    return {nid: float(at) for nid, at in rows}


def _print_run_lag(lag: dict) -> None:
    print(
        f"\nstandby lag through taskledger run ({lag['instances']:,} tasks reconciled "
        f"{RUN_LAG_ASKS_PER_S} times a second for {lag['seconds']:g} s: the leader appended "
        f"{lag['leader_appends_per_s']:,.0f}"
        f" events/s): mean {lag['mean_ms']:.1f} ms, p50 <= {lag['p50_at_most_ms']:g} ms, "
        f"p99 <= {lag['p99_at_most_ms']:g} ms (the histogram's buckets; "
        f"{lag['standby_batches_timed']:,.0f} batches timed); the standby's own part, "
        f"from each event's commit in PostgreSQL to its mirror holding it (polled every ms): "
        f"mean {lag['standby_from_commit_ms']['mean']:.1f} ms, "
        f"p50 {lag['standby_from_commit_ms']['p50']:.1f} ms, "
        f"p99 {lag['standby_from_commit_ms']['p99']:.1f} ms; the leader's part, "
        f"from its stamp to the commit in PostgreSQL: mean "
        f"{lag['leader_stamp_to_commit_ms']['mean']:.1f} ms, p50 "
        f"{lag['leader_stamp_to_commit_ms']['p50']:.1f} ms, "
        f"p99 {lag['leader_stamp_to_commit_ms']['p99']:.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events for batched paths")
    parser.add_argument("--single", type=int, default=4_000, help="events for 1-per-call paths")
    parser.add_argument("--rounds", type=int, default=3, help="each path runs this often")
    parser.add_argument("--lag-rate", type=float, default=1000.0)
    parser.add_argument("--lag-seconds", type=float, default=5.0)
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--failover-rounds", type=int, default=5, help="0: no failover")
    parser.add_argument("--tick-ms", type=int, default=500, help="ZooKeeper's tickTime")
    parser.add_argument("--session", type=float, default=1.0, help="session timeout (s)")
    parser.add_argument("--only-failover", action="store_true")
    parser.add_argument(
        "--run-lag-seconds", type=float, default=10.0, help="the standby's lag through run; 0: skip"
    )
    parser.add_argument("--only-run-lag", action="store_true")
    args = parser.parse_args(argv)
    if args.only_run_lag:
        server = PostgresServer(durable=True, settings={"track_commit_timestamp": "on"}).start()
        try:
            run_lag = bench_run_lag(server, args.run_lag_seconds, args.session)
        finally:
            server.stop()
        _print_run_lag(run_lag)
        write_json(args.json_out, "ha", [], {"run_lag": run_lag})
        return 0
    if args.only_failover:
        server = PostgresServer(durable=True).start()
        try:
            failover = bench_failover(server, args.failover_rounds, args.tick_ms, args.session)
        finally:
            server.stop()
        _print_failover(failover)
        write_json(args.json_out, "ha", [], {"failover": failover})
        return 0

    events = _events(args.events, tasks=max(1, args.events // 10))
    single = events[: args.single]
    # Commit timestamps: the follower's lag is measured from each event's commit.
    server = PostgresServer(durable=True, settings={"track_commit_timestamp": "on"}).start()
    try:
        with server.fresh_schema() as schema:
            bench = Bench(server, schema)
            try:
                results = _interleaved(bench, single, events, args.rounds)
                lag = bench_lag(bench, args.lag_rate, args.lag_seconds)
            finally:
                bench.close()
        failover = None
        if args.failover_rounds:
            failover = bench_failover(server, args.failover_rounds, args.tick_ms, args.session)
        run_lag = None
        if args.run_lag_seconds:
            run_lag = bench_run_lag(server, args.run_lag_seconds, args.session)
    finally:
        server.stop()

    print_table("durable appends to PostgreSQL (fsync per commit)", results, "eventsourcing 1/call")
    by = {r.name: r for r in results}
    group = by[f"fenced {THREADS} threads 1/call"].rate
    targets = {
        "group_commit_vs_eventsourcing_1_call": {
            "value": group / by["eventsourcing 1/call"].rate,
            "target": 5.0,
        },
        "group_commit_vs_eventsourcing_16_threads": {
            "value": group / by[f"eventsourcing {THREADS} threads 1/call"].rate,
            "target": 5.0,
        },
        # For context, not targets: the ceilings with no project code.
        "raw_committer_vs_eventsourcing_1_call": {
            "value": by[f"raw {THREADS}-thread committer"].rate / by["eventsourcing 1/call"].rate,
            "target": 5.0,
        },
        "group_commit_vs_raw_committer": {
            "value": group / by[f"raw {THREADS}-thread committer"].rate,
            "target": 0.5,
        },
        "fenced_batched_vs_eventsourcing_batched": {
            "value": by["fenced batched"].rate / by["eventsourcing batched"].rate,
            "target": 0.8,
        },
    }
    print()
    for name, t in targets.items():
        verdict = "meets" if t["value"] >= t["target"] else "MISSES"
        print(f"{name}: {t['value']:.2f}x ({verdict} target {t['target']}x)")
    print(
        f"\nfollower lag at {lag['rate_achieved']:,.0f} appends/s "
        f"({lag['events_per_commit']:.1f} events per commit): from commit p50 "
        f"{lag['lag_from_commit_ms']['p50']:.2f} ms, p99 {lag['lag_from_commit_ms']['p99']:.2f} ms;"
        f" from call p50 {lag['lag_from_call_ms']['p50']:.2f} ms, "
        f"p99 {lag['lag_from_call_ms']['p99']:.2f} ms"
    )
    if failover is not None:
        _print_failover(failover)
    if run_lag is not None:
        _print_run_lag(run_lag)
    write_json(
        args.json_out,
        "ha",
        results,
        {"targets": targets, "follower_lag": lag, "failover": failover, "run_lag": run_lag},
    )
    return 0


def _print_failover(failover: dict) -> None:
    print(
        f"\nfailover (tickTime {failover['tick_ms']} ms, session {failover['session_s']:g} s, "
        f"{failover['rounds']} rounds), seconds from the signal, median / max:"
    )
    for how in ("SIGKILL", "SIGTERM"):
        parts = []
        for key in ("elected_s", "subscribed_s", "dispatching_s"):
            t = failover[f"{how}_{key}"]
            parts.append(f"{key[:-2]} {t['median']:.3f} / {t['max']:.3f}")
        print(f"  {how}: " + ", ".join(parts))


if __name__ == "__main__":
    raise SystemExit(main())
