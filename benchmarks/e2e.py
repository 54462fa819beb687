"""End to end at scale: `taskledger sim` and `taskledger run`, two processes over HTTP.

    .venv/bin/python -m benchmarks.e2e [--tasks 100000] [--tls] [--json e2e.json]

The production path a user runs (pymesos -> SchedulerCore -> Ledger -> ACKNOWLEDGE), with N
tasks of 0.01 cpus on N/250 agents of 100 cpus, time compressed 10x (tools/scale_run.py):

1. launch: from `taskledger run --instances N` to every task RUNNING and acknowledged;
2. a master failover, then the explicit reconciliation of all N (answers in, each durable);
3. an implicit reconciliation (an operator's: SIGUSR2).

Side by side in the same run, on the same master and the same N tasks:
- the ceiling of the stack: the same framework subscribed by pymesos into a scheduler that
  only counts the updates (and acknowledges them, pymesos's implicit acknowledgements: no
  Ledger, no log), asking for the same explicit and implicit reconciliations, its RECONCILE
  batches sent back to back from a thread of their own;
- Aurora's pace: 1,000 tasks per 5 s (its explicit reconciliation's batch and delay),
  computed.

With --tls the master serves https (throwaway certificates) and both schedulers, taskledger
and the ceiling, reach it over TLS: run it with and without to see what TLS costs.

It prints a table and writes JSON (--json): answers per second, the ratio to the ceiling,
the mean events per group commit during each burst (the scheduler's commit histogram,
scraped from --metrics-port), and the resident memory per task of both processes beyond
their empty baselines (all of it, and the anonymous part: the rest is file pages, mostly
the log's memory map).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from tools.scale_run import ScaleRun

AURORA_PER_SECOND = 1000 / 5  # one batch of 1,000 every 5 s
RECONCILE_BATCH = 1000


# -- the ceiling: pymesos into a scheduler that only counts -------------------------------------
def counting_scheduler(
    master: str, log: str, timeout: float, ca_file: str | None = None
) -> dict[str, Any]:
    """Subscribes as the log's framework with pymesos, asks for an explicit reconciliation
    of every task the log's Mesos view holds, then an implicit one; returns how fast each
    was answered. Run in a process of its own (pymesos installs a SIGINT handler). With
    ``ca_file``, over TLS as taskledger's driver reaches it (pymesos's driver with the
    stream and its calls on TLS sockets, engine/mesos/scheduler.py)."""
    from pymesos import Scheduler

    from engine.mesos.scheduler import _Driver
    from engine.mesos.tls import MasterTLS, TLSSettings
    from tools.readonly import ReadOnlyLedger

    with ReadOnlyLedger.open(log) as ledger:
        framework_id = ledger.state.views.mesos.framework_id
        tasks = sorted(ledger.state.views.mesos.tasks)
    counted: dict[str, Any] = {"answered": set(), "first": None, "last": None, "updates": 0}
    subscribed = threading.Event()
    lock = threading.Lock()

    class Counting(Scheduler):
        def registered(self, driver: Any, framework_id: Any, master_info: Any) -> None:
            subscribed.set()

        def reregistered(self, driver: Any, master_info: Any) -> None:
            subscribed.set()

        def resourceOffers(self, driver: Any, offers: list) -> None:  # noqa: N802
            driver.declineOffer([o["id"] for o in offers], {"refuse_seconds": 3600})

        def statusUpdate(self, driver: Any, status: dict) -> None:  # noqa: N802
            now = time.time()
            with lock:
                counted["updates"] += 1
                task = status["task_id"]["value"]
                # Each task counted once, as for taskledger (tools/scale_run.py).
                if status.get("reason") == "REASON_RECONCILIATION" and (
                    task not in counted["answered"]
                ):
                    counted["answered"].add(task)
                    counted["first"] = counted["first"] or now
                    counted["last"] = now

    framework = {
        "user": "root",
        "name": "counting",
        "id": {"value": framework_id},
        "failover_timeout": 3600.0,
        "capabilities": [{"type": "PARTITION_AWARE"}],
    }
    driver = _Driver(Counting(), framework, master, failover=True, timeout=30)
    driver.tls = None if ca_file is None else MasterTLS(TLSSettings(ca_file=ca_file))
    driver.start()
    try:
        if not subscribed.wait(60):
            raise TimeoutError("the counting scheduler did not subscribe")
        out = {"tasks": len(tasks)}
        for kind, batches in (
            (
                "explicit",
                [tasks[i : i + RECONCILE_BATCH] for i in range(0, len(tasks), RECONCILE_BATCH)],
            ),
            ("implicit", [[]]),
        ):
            with lock:
                counted.update(answered=set(), first=None, last=None)
            started = time.time()
            for batch in batches:
                driver.reconcileTasks([{"task_id": {"value": t}} for t in batch])
            sent = time.time()
            deadline = started + timeout
            while time.time() < deadline:
                with lock:
                    if len(counted["answered"]) >= len(tasks):
                        break
                time.sleep(0.05)
            with lock:
                first, last = counted["first"], counted["last"]
                answers = len(counted["answered"])
            seconds = (last - first) if first and last else 0.0
            out[kind] = {
                "answers": answers,
                "send_seconds": sent - started,
                "answer_seconds": seconds,
                "answers_per_second": (answers - 1) / seconds if seconds > 0 else 0.0,
            }
        return out
    finally:
        driver.stop(failover=True)
        driver.join()


def ceiling(run: ScaleRun, timeout: float) -> dict[str, Any]:
    tls = [] if run.ca_file is None else ["--counting-ca", run.ca_file]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.e2e", "--counting", run.master, run.log, *tls],
        capture_output=True,
        text=True,
        timeout=timeout + 120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the counting scheduler failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the run ------------------------------------------------------------------------------------
def per_task(memory: dict[str, Any], full: str, empty: str, tasks: int) -> dict[str, float]:
    return {
        key: (memory[full][key] - memory[empty][key]) / tasks for key in ("rss", "anon", "file")
    }


def measure(args: argparse.Namespace, folder: str) -> dict[str, Any]:
    run = ScaleRun(
        tasks=args.tasks,
        folder=folder,
        time_scale=args.time_scale,
        max_in_flight=args.max_in_flight,
        run_args=tuple(args.run_arg),
        progress=print,
        timeout=args.timeout,
        tls=args.tls,
    )
    load = os.getloadavg()
    try:
        run.start()
        print(f"launching {args.tasks:,} tasks on {run.agents} agents")
        launch = run.launch()
        print(f"launched in {launch.seconds:.1f} s; master failover")
        explicit = run.failover()
        print(f"explicit: {explicit.answers_per_second:,.0f} answers/s; implicit")
        implicit = run.implicit()
        print(f"implicit: {implicit.answers_per_second:,.0f} answers/s")
        run.stop_scheduler()
        run.memory["sim_full"] = _sim_rss(run)
        print("the ceiling: pymesos into a counting scheduler")
        top = ceiling(run, args.timeout)
    finally:
        run.stop()
    return {
        "tasks": args.tasks,
        "tls": args.tls,
        "agents": run.agents,
        "time_scale": args.time_scale,
        "load_average_before": load,
        "load_average_after": os.getloadavg(),
        "launch": launch.as_dict(),
        "explicit": explicit.as_dict(),
        "implicit": implicit.as_dict(),
        "ceiling": top,
        "aurora_answers_per_second": AURORA_PER_SECOND,
        "aurora_explicit_seconds": args.tasks / AURORA_PER_SECOND,
        "memory": run.memory,
        "scheduler_bytes_per_task": per_task(
            run.memory, "scheduler_full", "scheduler_empty", args.tasks
        ),
        "sim_bytes_per_task": per_task(run.memory, "sim_full", "sim_empty", args.tasks),
    }


def _sim_rss(run: ScaleRun) -> dict[str, int]:
    from tools.scale_run import rss

    assert run.sim is not None
    return rss(run.sim.pid)


def report(result: dict[str, Any]) -> None:
    n = result["tasks"]
    top = result["ceiling"]
    rows = []

    def burst(name: str, b: dict[str, Any], ceiling_rate: float | None, target: str) -> None:
        rate = b["answers_per_second"]
        ratio = f"{rate / ceiling_rate:.2f}x" if ceiling_rate else "-"
        rows.append(
            (
                f"{name}: answers/s",
                f"{rate:,.0f} ({b['answers']:,} in {b['answer_seconds']:.1f} s)",
                f"{ceiling_rate:,.0f}" if ceiling_rate else "-",
                ratio,
                f"{AURORA_PER_SECOND:,.0f}",
                target,
            )
        )
        rows.append(
            (
                f"{name}: events per group commit",
                f"{b['events_per_commit']:,.0f}",
                "-",
                "-",
                "-",
                ">= 100",
            )
        )

    rows.append(
        (
            f"launch: {n:,} RUNNING and acknowledged",
            f"{result['launch']['seconds']:.1f} s",
            "-",
            "-",
            "-",
            "< 300 s",
        )
    )
    rows.append(
        (
            "launch: events per group commit",
            f"{result['launch']['events_per_commit']:,.0f}",
            "-",
            "-",
            "-",
            "",
        )
    )
    burst(
        "explicit after failover",
        result["explicit"],
        top["explicit"]["answers_per_second"],
        ">= 10,000/s, >= 0.5x",
    )
    burst("implicit", result["implicit"], top["implicit"]["answers_per_second"], "")
    rows.append(
        (
            "explicit: whole run",
            f"{result['explicit']['extra'].get('run_seconds', 0):.1f} s",
            f"{top['explicit']['answer_seconds']:.1f} s",
            "-",
            f"{result['aurora_explicit_seconds']:,.0f} s",
            "",
        )
    )
    for who, key in (
        ("scheduler", "scheduler_bytes_per_task"),
        ("simulated master", "sim_bytes_per_task"),
    ):
        m = result[key]
        rows.append(
            (
                f"{who}: RSS per task beyond empty",
                f"{m['rss']:,.0f} B ({m['anon']:,.0f} B anonymous)",
                "-",
                "-",
                "-",
                "< 2,048 B" if who == "scheduler" else "",
            )
        )
    headers = ("measure", "taskledger", "ceiling", "ratio", "Aurora", "target")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    print(
        f"\nend to end{' over TLS' if result['tls'] else ''}, {n:,} tasks on "
        f"{result['agents']} agents (time scale "
        f"{result['time_scale']:g}; load average {result['load_average_before'][0]:.1f} "
        f"before, {result['load_average_after'][0]:.1f} after)"
    )
    for row in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--time-scale", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=None)
    parser.add_argument(
        "--run-arg",
        action="append",
        default=[],
        help="one more option for taskledger run (repeat; e.g. --run-arg=--snapshot-every=0)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per phase (s)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--keep", default=None, help="keep the logs in this folder")
    parser.add_argument("--tls", action="store_true", help="the master serves https")
    parser.add_argument("--counting", nargs=2, metavar=("MASTER", "LOG"), help=argparse.SUPPRESS)
    parser.add_argument("--counting-ca", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.counting:
        found = counting_scheduler(*args.counting, timeout=args.timeout, ca_file=args.counting_ca)
        print(json.dumps(found))
        return
    folder = args.keep or tempfile.mkdtemp(prefix="e2e-")
    os.makedirs(folder, exist_ok=True)
    try:
        result = measure(args, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "e2e", **result}, f, indent=2, default=str)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
