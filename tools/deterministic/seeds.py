"""`taskledger simulate`: the whole system in one process on a virtual clock, seed by seed.

    taskledger simulate --seeds 200              # seeds 0..199, 200 steps of faults each
    taskledger simulate --seed 17 --steps 300    # one seed, with its details and log hash
    taskledger simulate --seed 5000 --seeds 10000 --jobs 2

Each seed builds a cluster, a job and a fault schedule from the seed alone and runs them
(tools/deterministic/world.py); the invariants are in tools/deterministic/invariants.py. A failing
seed prints the seed, the invariant, the step and the one command that replays it. The same
seed always writes the same log: its hash is printed for one seed (--seed) and by --json.
Exit status: 0 if every seed passed, 1 otherwise.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import fields

import click

from tools.deterministic.world import SABOTAGES, Outcome, simulate_seed


def _run(args: tuple[int, int, str | None, str | None]) -> Outcome:
    seed, steps, sabotage, keep = args
    folder = None
    if keep is not None:
        folder = os.path.join(keep, f"seed-{seed}")
        os.makedirs(folder, exist_ok=True)
    return simulate_seed(seed, steps, sabotage=sabotage, folder=folder)


def run_seeds(
    seeds: list[int],
    steps: int,
    *,
    jobs: int = 1,
    sabotage: str | None = None,
    keep: str | None = None,
) -> Iterator[Outcome]:
    """The outcomes of `seeds`, in order; `jobs` worker processes (each seed stays in one
    process, single-threaded)."""
    work = [(seed, steps, sabotage, keep) for seed in seeds]
    if jobs <= 1 or len(seeds) <= 1:
        yield from map(_run, work)
        return
    # fork: the workers inherit the imported modules (and no LMDB environment is open here).
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs) as pool:
        yield from pool.imap(_run, work, chunksize=max(1, min(20, len(work) // (jobs * 8))))


def describe_failure(outcome: Outcome) -> str:
    return (
        f"seed {outcome.seed} FAILED at step {outcome.step}: {outcome.invariant}\n"
        f"  {outcome.detail}\n"
        f"  replay: {outcome.replay_command}"
    )


def describe_one(outcome: Outcome) -> str:
    lines = [
        f"seed {outcome.seed}: {'passed' if outcome.ok else 'FAILED'}",
        f"  cluster: {outcome.agents} agents; job: {outcome.instances} instances (at the end)",
        f"  steps: {outcome.steps} with faults, then settled in "
        + (f"{outcome.settle_time:g} virtual s" if outcome.settle_time is not None else "-"),
        f"  virtual time: {outcome.virtual_time:g} s; events in the log: {outcome.events}",
        "  faults: " + (", ".join(f"{k} {v}" for k, v in sorted(outcome.faults.items())) or "-"),
        "  " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.stats.items())),
        f"  log hash: {outcome.log_hash}",
    ]
    if not outcome.ok:
        lines.append(describe_failure(outcome))
    return "\n".join(lines)


@click.command("simulate")
@click.option(
    "--seeds",
    "count",
    type=click.IntRange(min=1),
    default=None,
    help="How many seeds to run, starting at --seed (default 100; 1 if only --seed is given).",
)
@click.option("--seed", "first", type=int, default=None, help="The (first) seed. Default 0.")
@click.option(
    "--steps",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Steps with faults per seed (then the faults stop and the job must converge).",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per seed, then a summary.")
@click.option(
    "--keep",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep each seed's log folder under this folder (default: temporary, removed).",
)
@click.option("--sabotage", type=click.Choice(SABOTAGES), default=None, hidden=True)
def simulate_command(
    count: int | None,
    first: int | None,
    steps: int,
    jobs: int,
    as_json: bool,
    keep: str | None,
    sabotage: str | None,
) -> None:
    """Deterministic whole-system simulation with injected faults, seed by seed.

    The simulated master and its agents, the scheduler's logic, the Ledger on a real LMDB
    folder and the reconciliation saga run in one process on a virtual clock; every random
    choice comes from the seed. Invariants are checked at every step; a failing seed prints
    the command that replays it.
    """
    if count is None:
        count = 1 if first is not None else 100
    start = first or 0
    seeds = list(range(start, start + count))
    started = time.perf_counter()
    failed: list[Outcome] = []
    faults: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    for outcome in run_seeds(seeds, steps, jobs=jobs, sabotage=sabotage, keep=keep):
        faults.update(outcome.faults)
        stats.update(outcome.stats)
        if not outcome.ok:
            failed.append(outcome)
        if as_json:
            record = {f.name: getattr(outcome, f.name) for f in fields(outcome)}
            record["faults"], record["stats"] = dict(outcome.faults), dict(outcome.stats)
            record["replay"] = outcome.replay_command
            click.echo(json.dumps(record, sort_keys=True))
        elif len(seeds) == 1:
            click.echo(describe_one(outcome))
        elif not outcome.ok:
            click.echo(describe_failure(outcome), err=False)
    elapsed = time.perf_counter() - started
    summary = {
        "seeds": len(seeds),
        "passed": len(seeds) - len(failed),
        "failed": [o.seed for o in failed],
        "steps": steps,
        "seconds": round(elapsed, 3),
        "seeds_per_second": round(len(seeds) / elapsed, 2) if elapsed > 0 else None,
        "faults": dict(sorted(faults.items())),
        "crashes": stats["crashes"],
    }
    if as_json:
        click.echo(json.dumps({"summary": summary}, sort_keys=True))
    elif len(seeds) > 1:
        click.echo(
            f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), {steps} steps each: "
            f"{summary['passed']} passed, {len(failed)} failed in {elapsed:.1f} s "
            f"({summary['seeds_per_second']} seeds/s, {jobs} job{'s' if jobs > 1 else ''})"
        )
        click.echo(
            f"  faults injected: {sum(faults.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))})"
        )
        click.echo(
            f"  scheduler crashes survived: {stats['crashes']}; acknowledged updates checked: "
            f"{stats['acknowledged']}; commands checked: {stats['commands issued']}"
        )
    if failed:
        sys.exit(1)
