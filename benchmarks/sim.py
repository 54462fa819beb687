"""The simulated master's own costs, at scale: its pure model driven directly, and the HTTP
server driven by a minimal client.

    python -m benchmarks.sim [--tasks N] [--http-tasks N] [--per-agent 250] [--json OUT]

The cluster has one agent per `--per-agent` tasks (100 cpus, 100,000 MB each; the tasks
take 0.01 cpus and 1 MB), as a user sizes `taskledger sim` for a big job. Phases, each
timed on its own (events/s is the phase's events over its seconds):
- launch: one ACCEPT per offer, each with its agent's share of the tasks (`--per-agent`);
  then one ACCEPT of 10,000 tasks into a single offer;
- updates: every task's STARTING and RUNNING, each acknowledged on its own (an event is an
  update delivered and acknowledged);
- reconcile: an explicit RECONCILE of every task in calls of 1,000, then in one call, then
  an implicit one (an event is an answer);
- failover (model only): a master failover, every agent re-registering, the framework
  subscribing again (an event is a task the new master learns);
- state: GET /state's counts-only form and a page of 1,000 tasks, at N tasks.
The floors: the least each path can cost. For the model, building one update's TaskStatus
(with its uuid) and its Emit effect; over HTTP, a GET /version on a kept-alive connection
(the transport's round trip) and the event stream's framing.
Memory: the model's traced allocations (tracemalloc) and the RSS growth, per task, once
every task runs and every update was acknowledged.

Over HTTP the server runs in a process of its own (the client in this one), with update
re-sends pushed past the benchmark's end, so each phase costs what it asks and no more.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import socket
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from benchmarks.common import Result, print_table, write_json
from tools.sim_master import protocol
from tools.sim_master.client import Connection, EventStream, get_json
from tools.sim_master.cluster import Cluster
from tools.sim_master.config import SimConfig
from tools.sim_master.effects import Emit
from tools.sim_master.kernel import Kernel
from tools.sim_master.snapshot import StateQuery

BIG_ACCEPT = 10_000
BATCH = 1_000
PAGE = 1_000
FRAMEWORK = {
    "user": "bench",
    "name": "bench-sim",
    "failover_timeout": 3600.0,
    "capabilities": [{"type": "PARTITION_AWARE"}],
}


def config(tasks: int, per_agent: int, **kw: Any) -> SimConfig:
    """A cluster sized for `tasks`, whose agents never re-send an update during the run."""
    return SimConfig(
        agents=max(1, -(-tasks // per_agent)),
        agent_cpus=100.0,
        agent_mem=100_000.0,
        update_retry_initial=1e9,
        update_retry_max=1e9,
        heartbeat_interval=1e6,
        **kw,
    )


def task_info(task_id: str, agent_id: str) -> dict:
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": agent_id},
        "command": {"value": "true"},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.01}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 1}},
        ],
    }


def accept(framework_id: str, offer: dict, task_ids: list[str]) -> dict:
    agent = offer["agent_id"]["value"]
    launch = {"task_infos": [task_info(t, agent) for t in task_ids]}
    return {
        "type": "ACCEPT",
        "framework_id": {"value": framework_id},
        "accept": {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": launch}],
            "filters": {"refuse_seconds": 1e6},
        },
    }


def ack(framework_id: str, status: dict) -> dict:
    return {
        "type": "ACKNOWLEDGE",
        "framework_id": {"value": framework_id},
        "acknowledge": {k: status[k] for k in ("agent_id", "task_id", "uuid")},
    }


def reconcile(framework_id: str, task_ids: list[str]) -> dict:
    tasks = [{"task_id": {"value": t}} for t in task_ids]
    return {
        "type": "RECONCILE",
        "framework_id": {"value": framework_id},
        "reconcile": {"tasks": tasks},
    }


def shares(tasks: int, per_agent: int) -> list[list[str]]:
    ids = [f"bench/{i}" for i in range(tasks)]
    return [ids[i : i + per_agent] for i in range(0, tasks, per_agent)]


def timed(run: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    events = run()
    return events, time.perf_counter() - start


# ------------------------------------------------------------------------ the pure model


class Model:
    """One framework driving a Cluster directly: calls in, effects out, a virtual clock."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cluster = Cluster(cfg)
        self.now = 0.0
        self.offers: list[dict] = []
        self.updates: list[dict] = []
        self.answers = 0
        self.subscribe()

    def subscribe(self, framework_id: str | None = None) -> None:
        info = dict(FRAMEWORK)
        body: dict = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        if framework_id is not None:
            info["id"] = body["framework_id"] = {"value": framework_id}
        reply = self.cluster.subscribe(body, None, self.now)
        assert reply.status == 200, reply.message
        self.stream_id = reply.stream_id
        first = reply.effects[0]
        assert type(first) is Emit and first.event["type"] == "SUBSCRIBED", first
        self.framework_id = first.event["subscribed"]["framework_id"]["value"]
        self.take(reply.effects)

    def take(self, effects: list) -> None:
        for effect in effects:
            if type(effect) is not Emit:
                continue
            event = effect.event
            kind = event["type"]
            if kind == "OFFERS":
                self.offers += event["offers"]["offers"]
            elif kind == "UPDATE":
                status = event["update"]["status"]
                if "uuid" in status:
                    self.updates.append(status)
                else:
                    self.answers += 1

    def call(self, body: dict) -> None:
        reply = self.cluster.call(body, self.stream_id, self.now)
        assert reply.status == 202, reply.message
        self.take(reply.effects)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.take(self.cluster.tick(self.now))

    def launch(self, groups: list[list[str]]) -> int:
        launched = 0
        for group in groups:
            self.call(accept(self.framework_id, self.offers.pop(0), group))
            launched += len(group)
        return launched

    def deliver_and_ack(self) -> int:
        """STARTING, then RUNNING, of every task, each acknowledged as it comes."""
        done = 0
        for _ in ("TASK_STARTING", "TASK_RUNNING"):
            self.advance(0.5)
            updates, self.updates = self.updates, []
            for status in updates:
                self.call(ack(self.framework_id, status))
            done += len(updates)
        return done

    def ask(self, bodies: list[dict]) -> int:
        self.answers = 0
        for body in bodies:
            self.call(body)
        return self.answers

    def fail_over(self) -> int:
        fault = {"kind": "master_failover", "down_for": 1.0, "reregister_after": 1.0}
        self.take(self.cluster.inject(fault, self.now))
        self.advance(2.5)  # the new master is up, every agent re-registered
        self.subscribe(self.framework_id)
        return len(self.cluster.master_tasks)


def floor_model(events: int) -> float:
    """Seconds to build `events` update TaskStatus dicts with uuids and their Emit effects."""
    kernel = Kernel(SimConfig())
    start = time.perf_counter()
    for i in range(events):
        status = protocol.task_status(
            f"bench/{i}",
            "TASK_RUNNING",
            source="SOURCE_EXECUTOR",
            agent_id="agent",
            executor_id=f"bench/{i}",
            timestamp=kernel.timestamp(),
            uuid=kernel.update_uuid(),
        )
        Emit("stream", protocol.update(status))
    return time.perf_counter() - start


def run_model(tasks: int, per_agent: int) -> tuple[list[Result], dict]:
    rss_before = rss()
    results, rss_grown = model_phases(tasks, per_agent)
    gc.collect()
    big = Model(config(BIG_ACCEPT, BIG_ACCEPT))
    big_ids = [f"big/{i}" for i in range(BIG_ACCEPT)]
    n, s = timed(lambda: big.launch([big_ids]))
    results.append(Result("model: launch", n, s, f"one ACCEPT of {BIG_ACCEPT:,} tasks"))
    floor_events = min(2 * tasks, 200_000)
    results.append(
        Result("model floor", floor_events, floor_model(floor_events), "TaskStatus + Emit")
    )
    traced = traced_bytes(tasks, per_agent)
    memory = {
        "traced_bytes_per_task": traced / tasks,
        "rss_bytes_per_task": (rss_grown - rss_before) / tasks,
    }
    return results, memory


def model_phases(tasks: int, per_agent: int) -> tuple[list[Result], int]:
    """The timed phases on one cluster of `tasks`; also the RSS once every task runs."""
    groups = shares(tasks, per_agent)
    ids = [t for g in groups for t in g]
    model = Model(config(tasks, per_agent))
    results = []
    n, s = timed(lambda: model.launch(groups))
    results.append(Result("model: launch", n, s, f"ACCEPTs of {per_agent} tasks"))
    n, s = timed(model.deliver_and_ack)
    results.append(Result("model: updates", n, s, "STARTING, RUNNING: each delivered + acked"))
    rss_running = rss()
    fid = model.framework_id
    batches = [reconcile(fid, ids[i : i + BATCH]) for i in range(0, len(ids), BATCH)]
    n, s = timed(lambda: model.ask(batches))
    results.append(Result("model: reconcile explicit", n, s, f"{BATCH:,} tasks a call"))
    one = [reconcile(fid, ids)]
    n, s = timed(lambda: model.ask(one))
    results.append(Result("model: reconcile explicit", n, s, "every task in one call"))
    implicit = [reconcile(fid, [])]
    n, s = timed(lambda: model.ask(implicit))
    results.append(Result("model: reconcile implicit", n, s, "one call"))
    for name, query in (
        ("counts", StateQuery(counts=True)),
        (f"a page of {PAGE:,}", StateQuery(limit=PAGE, acknowledged=False)),
    ):
        _, s = timed(lambda q=query: bool(model.cluster.snapshot(q)))  # type: ignore[misc]
        results.append(Result(f"model: state, {name}", 1, s, f"{s * 1e3:.1f} ms at N tasks"))
    n, s = timed(model.fail_over)
    results.append(Result("model: failover", n, s, "failover, re-registration, subscribe"))
    assert n == tasks, f"the new master learned {n} of {tasks} tasks"
    return results, rss_running


def traced_bytes(tasks: int, per_agent: int) -> int:
    """What the model holds once every task runs and every update was acknowledged."""
    tracemalloc.start()
    try:
        model = Model(config(tasks, per_agent))
        model.launch(shares(tasks, per_agent))
        model.deliver_and_ack()
        model.offers.clear()
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return held


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------- HTTP


def _serve(cfg: SimConfig, port: int, time_scale: float, ready: Any) -> None:
    from tools.sim_master.server import serve

    asyncio.run(serve(cfg, port=port, time_scale=time_scale, started=ready))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpClient:
    """The minimal scheduler: one event stream, one kept-alive connection for calls."""

    def __init__(self, address: str) -> None:
        self.address = address
        subscribe = {"type": "SUBSCRIBE", "subscribe": {"framework_info": FRAMEWORK}}
        self.stream = EventStream(address, subscribe, keep_raw=False)
        subscribed = self.stream.next(skip=())
        self.framework_id = subscribed["subscribed"]["framework_id"]["value"]
        self.conn = Connection(address, timeout=600)
        self.offers: list[dict] = []

    def post(self, body: dict) -> None:
        status, text = self.conn.call(body, stream_id=self.stream.stream_id)
        assert status == 202, (status, text)

    def next(self) -> dict:
        event = self.stream.next(timeout=120)
        if event["type"] == "OFFERS":
            self.offers += event["offers"]["offers"]
        return event

    def launch(self, groups: list[list[str]]) -> int:
        launched = 0
        for group in groups:
            while not self.offers:
                self.next()
            self.post(accept(self.framework_id, self.offers.pop(0), group))
            launched += len(group)
        return launched

    def deliver_and_ack(self, tasks: int) -> int:
        running = done = 0
        while running < tasks:
            event = self.next()
            if event["type"] != "UPDATE":
                continue
            status = event["update"]["status"]
            self.post(ack(self.framework_id, status))
            done += 1
            running += status["state"] == "TASK_RUNNING"
        return done

    def ask(self, bodies: list[dict], answers: int) -> int:
        for body in bodies:
            self.post(body)
        got = 0
        while got < answers:
            got += self.next()["type"] == "UPDATE"
        return got

    def close(self) -> None:
        self.conn.close()
        self.stream.close()


def run_http(tasks: int, per_agent: int) -> list[Result]:
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    # 100 simulated seconds a second: a task starts 5 ms after its launch.
    server = ctx.Process(target=_serve, args=(config(tasks, per_agent), port, 100.0, ready))
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the simulated master did not start")
        return _http_phases(f"127.0.0.1:{port}", tasks, per_agent)
    finally:
        server.terminate()
        server.join(10)


def _http_phases(address: str, tasks: int, per_agent: int) -> list[Result]:
    results = []
    client = HttpClient(address)
    try:
        groups = shares(tasks, per_agent)
        ids = [t for g in groups for t in g]
        n, s = timed(lambda: client.launch(groups))
        results.append(Result("http: launch", n, s, f"ACCEPTs of {per_agent} tasks"))
        n, s = timed(lambda: client.deliver_and_ack(tasks))
        results.append(Result("http: updates", n, s, "STARTING, RUNNING: each delivered + acked"))
        fid = client.framework_id
        batches = [reconcile(fid, ids[i : i + BATCH]) for i in range(0, len(ids), BATCH)]
        n, s = timed(lambda: client.ask(batches, tasks))
        results.append(Result("http: reconcile explicit", n, s, f"{BATCH:,} tasks a call"))
        n, s = timed(lambda: client.ask([reconcile(fid, ids)], tasks))
        results.append(Result("http: reconcile explicit", n, s, "every task in one call"))
        n, s = timed(lambda: client.ask([reconcile(fid, [])], tasks))
        results.append(Result("http: reconcile implicit", n, s, "one call"))
        for name, path in (
            ("counts", "/state?counts=1"),
            (f"a page of {PAGE:,}", f"/state?limit={PAGE}&acknowledged=0"),
        ):
            _, s = timed(lambda p=path: bool(get_json(address, p, timeout=600)))  # type: ignore[misc]
            results.append(Result(f"http: state, {name}", 1, s, f"{s * 1e3:.1f} ms at N tasks"))
        trips = 5_000
        conn = Connection(address)
        try:
            _, s = timed(
                lambda: sum(conn.call(None, method="GET", path="/version")[0] for _ in range(trips))
            )
        finally:
            conn.close()
        results.append(Result("http floor", trips, s, "GET /version, kept alive"))
    finally:
        client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks in the model phases")
    parser.add_argument(
        "--http-tasks", type=int, default=None, help="tasks over HTTP (default: --tasks; 0: skip)"
    )
    parser.add_argument("--per-agent", type=int, default=250, help="tasks per agent")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    http_tasks = args.tasks if args.http_tasks is None else args.http_tasks
    results, memory = run_model(args.tasks, args.per_agent)
    print_table(
        f"the simulated master's model, {args.tasks:,} tasks, {args.per_agent} per agent",
        results,
        baseline="model floor",
    )
    print(
        f"\nmodel memory per task: {memory['traced_bytes_per_task']:,.0f} B traced, "
        f"{memory['rss_bytes_per_task']:,.0f} B of RSS growth"
    )
    if http_tasks:
        http = run_http(http_tasks, args.per_agent)
        print_table(
            f"the simulated master over HTTP, {http_tasks:,} tasks", http, baseline="http floor"
        )
        results += http
    write_json(
        args.json,
        "sim",
        results,
        {"tasks": args.tasks, "http_tasks": http_tasks, "per_agent": args.per_agent, **memory},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
