"""`taskledger run`: the embedded scheduler as a program.

    taskledger run --master HOST:PORT --log PATH [--job NAME --instances N --cmd CMD]

Keeps N instances of a job running on the master, feeds every update into the Ledger (and
acknowledges it only once durable), runs the reconciliation schedules, dispatches the
saga's commands, serves Prometheus metrics, and shuts down cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

# A test-only hook (tests/test_crash_loop.py): with this set to N, the process prints
# "taskledger: test hook: killed before appending <task id> <uuid>" on stderr and SIGKILLs
# itself right before the Ledger append of the Nth update that carries a uuid, i.e. after
# receiving an update and before committing it. Never set it in production.
CRASH_BEFORE_APPEND = "TASKLEDGER_TEST_CRASH_BEFORE_APPEND"


def _install_crash_hook(nth: int) -> None:
    from engine.ledger import Ledger

    original = Ledger.status_update
    seen = 0

    def status_update(self: Ledger, status: dict, **kwargs: object) -> int | None:
        nonlocal seen
        if isinstance(status, dict) and status.get("uuid"):
            seen += 1
            if seen == nth:
                task = (status.get("task_id") or {}).get("value")
                line = f"taskledger: test hook: killed before appending {task} {status['uuid']}\n"
                os.write(2, line.encode())
                os.kill(os.getpid(), signal.SIGKILL)
        return original(self, status, **kwargs)  # type: ignore[arg-type]

    Ledger.status_update = status_update  # type: ignore[method-assign]


def _label(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    labels = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}")
        labels[key] = val
    return labels


@click.command("run")
@click.option("--master", required=True, help="the Mesos master, HOST:PORT")
@click.option("--log", "log_path", required=True, help="the log folder (created if missing)")
@click.option("--job", default="web", show_default=True, help="the job's name")
@click.option("--instances", default=3, show_default=True, type=click.IntRange(0))
@click.option("--cmd", default="sleep 3600", show_default=True, help="the task's command")
@click.option("--cpus", default=0.1, show_default=True, type=float)
@click.option("--mem", default=32.0, show_default=True, type=float)
@click.option("--label", "labels", multiple=True, callback=_label, help="task label KEY=VALUE")
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=float,
    help="compress the saga's schedules and timeouts by this factor (demo, tests)",
)
@click.option("--heartbeat", default=15.0, show_default=True, help="master heartbeat (s)")
@click.option("--metrics-port", default=None, type=int, help="serve Prometheus metrics here")
@click.option("--dry-run", is_flag=True, help="decide and record commands, never dispatch")
@click.option(
    "--digest",
    "digest_path",
    default=None,
    help="on a clean stop, write a digest of the live state here (the demo's audit)",
)
@click.option(
    "--snapshot-every",
    default=100_000,
    show_default=True,
    type=click.IntRange(0),
    help="take a snapshot every this many events (0: never); a restart folds the newest "
    "snapshot and the tail after it",
)
@click.option(
    "--snapshots-kept",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="older snapshots are deleted (the log never is)",
)
@click.option("-v", "--verbose", is_flag=True)
def run_command(
    master: str,
    log_path: str,
    job: str,
    instances: int,
    cmd: str,
    cpus: float,
    mem: float,
    labels: dict,
    time_scale: float,
    heartbeat: float,
    metrics_port: int | None,
    dry_run: bool,
    digest_path: str | None,
    snapshot_every: int,
    snapshots_kept: int,
    verbose: bool,
) -> None:
    """Run the embedded scheduler against a Mesos master."""
    import pymesos  # noqa: F401  (in the main thread: it installs a SIGINT handler)

    from engine.mesos.core import JobSpec
    from engine.mesos.runtime import Runtime, RuntimeConfig
    from engine.store import LogOpenError

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if master.startswith(("http://", "https://")):
        raise click.BadParameter("give HOST:PORT, without a scheme", param_hint="--master")
    saga_options = {}
    if time_scale != 1.0:
        saga_options["time_scale"] = time_scale
    if dry_run:
        saga_options["dry_run"] = True
    config = RuntimeConfig(
        master=master,
        log_path=log_path,
        job=JobSpec(job, instances, cmd, cpus, mem, labels),
        heartbeat_interval=heartbeat,
        saga_options=saga_options,
        digest_path=digest_path,
        metrics_port=metrics_port,
        snapshot_every=snapshot_every,
        snapshots_kept=snapshots_kept,
    )
    hook = os.environ.get(CRASH_BEFORE_APPEND)
    if hook:
        _install_crash_hook(int(hook))
    runtime = Runtime(config)

    def stop(signum: int, frame: object) -> None:
        runtime.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        status = runtime.run()
    except LogOpenError as e:
        print(f"taskledger run: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(status)
