"""`taskledger drift` at scale: many drifting tasks, against what a replay of the same log costs.

    python -m benchmarks.drift [--tasks N] [--json OUT]

A log of N tasks (100,000 by default) that Mesos reports running and the scheduler never
created (rogue tasks: every one in drift, cell non-terminal/absent), written through the
Ledger API (`ledger.append`, 10,000 events a commit). Timed, each as a user runs it (the
command in this process, its output to /dev/null, the log opened afresh):
- the raw limit: folding the log into the ledger state (what every read command starts with);
- `taskledger replay --json`: what a user runs to rebuild the views;
- `taskledger drift --json` (every drifting task listed) and `taskledger drift` (a table of
  10 tasks a cell).
Ratios are against `replay`: the command run during an incident must answer in about what a
replay of the same log costs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time

from benchmarks.common import Result, print_table, write_json
from engine.events import StatusUpdateReceived
from engine.ledger import Ledger
from tools.cli import main as taskledger
from tools.readonly import ReadOnlyLedger

BATCH = 10_000
T0 = 1_714_532_400.0


def build(path: str, tasks: int) -> None:
    """N reconciliation answers for tasks the scheduler never created."""
    with Ledger.open(path, durable=False) as ledger:
        batch = []
        for i in range(tasks):
            t = T0 + i * 0.001
            batch.append(
                StatusUpdateReceived(
                    t,
                    None,
                    f"rogue/{i}",
                    "TASK_RUNNING",
                    f"agent-{i % 50}",
                    None,
                    "SOURCE_MASTER",
                    "REASON_RECONCILIATION",
                    None,
                    t,
                    None,
                    None,
                    None,
                    True,
                )
            )
            if len(batch) == BATCH:
                ledger.append(batch)
                batch.clear()
        if batch:
            ledger.append(batch)


def command(args: list[str]) -> None:
    """Runs `taskledger ARGS` in this process, its output to /dev/null."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        code = taskledger(args)
    if code != 0:
        raise SystemExit(f"taskledger {' '.join(args)} exited with {code}")


def fold(path: str) -> None:
    with ReadOnlyLedger.open(path) as ledger:
        ledger.state  # noqa: B018  (loading it is the work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; the best is kept")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="taskledger-bench-drift-")
    path = os.path.join(folder, "log")
    try:
        started = time.perf_counter()
        build(path, args.tasks)
        print(f"built {args.tasks:,} drifting tasks in {time.perf_counter() - started:.1f} s")
        runs = {
            "fold (raw limit)": lambda: fold(path),
            "replay --json": lambda: command(["replay", "--log", path, "--json", "--no-progress"]),
            "drift --json": lambda: command(["drift", "--log", path, "--json"]),
            "drift (table)": lambda: command(["drift", "--log", path]),
        }
        best: dict[str, float] = {}
        for _ in range(args.repeat):  # round robin: a busy moment hits every path alike
            for name, work in runs.items():
                started = time.perf_counter()
                work()
                seconds = time.perf_counter() - started
                best[name] = min(best.get(name, seconds), seconds)
        results = [Result(name, args.tasks, seconds) for name, seconds in best.items()]
        print_table(
            f"{args.tasks:,} drifting tasks (tasks/s: higher is better)", results, "replay --json"
        )
        write_json(args.json_out, "drift", results, {"tasks": args.tasks})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
