"""The `taskledger` command line.

click (the well-kept standard for Python CLIs) parses; rich prints tables. Commands that
belong to later issues are added as they land; each keeps to one line on stderr and exit
status 2 for a user's mistake.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """taskledger: an event-sourced task-state engine for Mesos schedulers."""


@cli.command()
@click.option("--instances", default=200, show_default=True, help="tasks of the job")
@click.option("--agents", default=8, show_default=True, help="simulated agents")
@click.option("--time-scale", default=120.0, show_default=True, help="time compression")
@click.option("--seed", default=1, show_default=True)
@click.option("--ingest-only", is_flag=True, help="only the ingest demo (no cluster)")
@click.option(
    "--tasks",
    type=click.IntRange(1),
    default=None,
    help="instead, the scale run: this many tasks launched, a master failover, every task "
    "reconciled (two processes over HTTP; time x10 unless --time-scale is given)",
)
@click.option(
    "--ha",
    is_flag=True,
    help="instead, the replicated scheduler: PostgreSQL, ZooKeeper, three replicas, the "
    "leader killed and paused, nothing lost (a job of 5 unless --instances is given)",
)
@click.option("--kills", type=click.IntRange(0), default=2, show_default=True, help="with --ha")
@click.option("--pauses", type=click.IntRange(0), default=2, show_default=True, help="with --ha")
def demo(
    instances: int,
    agents: int,
    time_scale: float,
    seed: int,
    ingest_only: bool,
    tasks: int | None,
    ha: bool,
    kills: int,
    pauses: int,
) -> None:
    """A simulated cluster, the embedded scheduler, injected faults, convergence, an audit."""
    import pymesos  # noqa: F401  (in the main thread: it installs a SIGINT handler)

    console = Console() if sys.stdout.isatty() else Console(width=140)
    given = click.get_current_context().get_parameter_source
    if ha:
        from tools import ha_demo

        job = instances if given("instances") is click.core.ParameterSource.COMMANDLINE else 5
        raise SystemExit(ha_demo.main(console, kills=kills, pauses=pauses, instances=job))
    if tasks is not None:
        from tools import demo as full_demo

        scale = (
            time_scale if given("time_scale") is click.core.ParameterSource.COMMANDLINE else 10.0
        )
        raise SystemExit(full_demo.scale_main(console, tasks=tasks, scale=scale))
    if ingest_only:
        from tools import ingest_demo

        result = ingest_demo.run(console)
        raise SystemExit(0 if result.replay_equal else 1)
    from tools import demo as full_demo

    raise SystemExit(
        full_demo.main(console, instances=instances, agents=agents, scale=time_scale, seed=seed)
    )


BENCHMARKS = ("ingest", "replay", "reconcile", "drift", "sim", "e2e")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name", type=click.Choice(BENCHMARKS))
@click.pass_context
def bench(ctx: click.Context, name: str) -> None:
    """Run a benchmark from benchmarks/ (extra options go to it)."""
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    raise SystemExit(module.main(list(ctx.args)))


# The embedded scheduler (`taskledger run`, tools/run_command.py).
from tools.run_command import run_command  # noqa: E402

cli.add_command(run_command)

# Orders and questions to a running `taskledger run` (its operator API, tools/operator).
from tools.operator.ctl import ctl_command  # noqa: E402

cli.add_command(ctl_command)

# The simulated Mesos master (its options and help live with it, in tools/sim_master/cli.py).
from tools.sim_master.cli import sim_command  # noqa: E402

cli.add_command(sim_command)

# The deterministic whole-system simulation (`taskledger simulate`).
from tools.deterministic.seeds import simulate_command  # noqa: E402

cli.add_command(simulate_command)

# The forensic commands: one module each under tools/commands/.
from tools.commands.drift import drift_command  # noqa: E402
from tools.commands.history import history_command  # noqa: E402
from tools.commands.ingest import ingest_command  # noqa: E402
from tools.commands.query import query_command  # noqa: E402
from tools.commands.replay import replay_command  # noqa: E402
from tools.commands.report import report_command  # noqa: E402
from tools.commands.rules import rules_command  # noqa: E402
from tools.commands.snapshot import snapshot_command  # noqa: E402
from tools.commands.verify import verify_command  # noqa: E402
from tools.commands.why import why_command  # noqa: E402

for _command in (
    ingest_command,
    replay_command,
    history_command,
    why_command,
    drift_command,
    query_command,
    snapshot_command,
    verify_command,
    rules_command,
    report_command,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="taskledger", standalone_mode=False)
    except click.exceptions.Abort:
        print("taskledger: interrupted", file=sys.stderr)
        return 130
    except click.ClickException as e:
        e.show()
        return 2
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
