"""Shared helpers for the benchmarks: timing, a results table, JSON output, test data."""

from __future__ import annotations

import base64
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    note: str = ""
    ratio: float | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else float("inf")


def timed(name: str, events: int, run: Callable[[], object], note: str = "") -> Result:
    start = time.perf_counter()
    run()
    return Result(name, events, time.perf_counter() - start, note)


def status_updates(count: int, tasks: int, seed: int = 7) -> list[dict]:
    """Mesos v1 TaskStatus dicts as pymesos delivers them, for ``tasks`` tasks."""
    rng = random.Random(seed)
    states = ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    out = []
    for i in range(count):
        task = i % tasks
        out.append(
            {
                "task_id": {"value": f"job-{task % 50}/{task}/{task:08x}"},
                "state": states[(i // tasks) % len(states)],
                "agent_id": {"value": f"agent-{task % 40}"},
                "source": "SOURCE_EXECUTOR",
                "timestamp": 1_700_000_000.0 + i * 0.001,
                "uuid": base64.b64encode(rng.randbytes(16)).decode(),
                "message": "",
            }
        )
    return out


def print_table(title: str, results: list[Result], baseline: str) -> None:
    base = next(r for r in results if r.name == baseline)
    for r in results:
        r.ratio = r.rate / base.rate if base.rate else None
    width = max(len(r.name) for r in results)
    print(f"\n{title}")
    header = f"{'path':<{width}}  {'events':>9}  {'seconds':>8}  {'events/s':>11}"
    print(f"{header}  {'x ' + baseline:>10}")
    for r in results:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        print(
            f"{r.name:<{width}}  {r.events:>9}  {r.seconds:>8.3f}  {r.rate:>11,.0f}  {ratio:>10}"
            + (f"  {r.note}" if r.note else "")
        )


def write_json(path: str | None, name: str, results: list[Result], extra: dict) -> None:
    if not path:
        return
    payload = {
        "benchmark": name,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "results": [asdict(r) | {"events_per_second": r.rate} for r in results],
        **extra,
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")
