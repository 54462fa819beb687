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
@click.option("--tasks", default=3000, show_default=True, help="tasks in the stream")
@click.option("--feeders", default=8, show_default=True, help="concurrent appending threads")
def demo(tasks: int, feeders: int) -> None:
    """Append a stream of status updates durably, replay it, show the views and drift."""
    from tools import ingest_demo

    console = Console() if sys.stdout.isatty() else Console(width=120)
    result = ingest_demo.run(console, tasks=tasks, feeders=feeders)
    if not result.replay_equal:
        raise SystemExit(1)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def sim(ctx: click.Context) -> None:
    """Run the simulated Mesos master (see `taskledger sim --help`)."""
    from tools.sim.cli import main as sim_main

    raise SystemExit(sim_main(list(ctx.args)))


BENCHMARKS = ("ingest", "replay", "reconcile")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name", type=click.Choice(BENCHMARKS))
@click.pass_context
def bench(ctx: click.Context, name: str) -> None:
    """Run a benchmark from benchmarks/ (extra options go to it)."""
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    raise SystemExit(module.main(list(ctx.args)))


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
