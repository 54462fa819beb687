"""`taskledger ctl`: orders and questions to a running `taskledger run`, over its API.

    taskledger ctl status                       the scheduler, the job, dry run, the breaker
    taskledger ctl resume --reason TEXT         resume dispatch after the breaker halted it
    taskledger ctl reconcile [--implicit]       start a reconciliation run now
    taskledger ctl kill TASK --reason TEXT      kill a task
    taskledger ctl scale N --reason TEXT        keep N instances of the job
    taskledger ctl dry-run on|off               decide and record, but send nothing (or send)

Each takes ``--scheduler URL`` (or TASKLEDGER_SCHEDULER; without either, the address the
scheduler writing ``--log`` left in its log folder), ``--token-file F`` (or
TASKLEDGER_TOKEN_FILE) and ``--operator NAME`` (default: the user running ctl), recorded in
the log with the order. A failure (unreachable, a refused token, an unknown task, ...) is
one line on stderr and exit status 2.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from typing import Any

import click

from tools.commands.common import log_option, when
from tools.operator.client import Client, CtlError, read_token
from tools.operator.server import URL_FILE


class CtlFailed(click.ClickException):
    """One line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"taskledger ctl: {self.message}", err=True)


def _url(scheduler: str | None, log_path: str) -> str:
    if scheduler:
        return scheduler
    found = os.path.join(log_path, URL_FILE)
    try:
        with open(found) as f:
            return f.read().strip()
    except (OSError, ValueError):  # ValueError: a path no file can have (a NUL in it)
        raise CtlFailed(
            f"no --scheduler URL given (or TASKLEDGER_SCHEDULER), and no scheduler is serving "
            f"the log {log_path} (no {found})"
        ) from None


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def connection(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every ctl command takes."""
    for option in reversed(
        [
            click.option(
                "--scheduler",
                envvar="TASKLEDGER_SCHEDULER",
                metavar="URL",
                help="the scheduler's operator API, e.g. http://127.0.0.1:8081/",
            ),
            log_option,  # without --scheduler: the scheduler serving this log
            click.option(
                "--token-file",
                envvar="TASKLEDGER_TOKEN_FILE",
                metavar="FILE",
                help="the bearer token",
            ),
            click.option(
                "--operator",
                envvar="TASKLEDGER_OPERATOR",
                default=_operator,
                show_default="the user running ctl",
                help="who gives the order (recorded in the log)",
            ),
            click.option("--timeout", default=10.0, show_default=True, help="seconds to wait"),
            click.option("--json", "as_json", is_flag=True, help="print the answer as JSON"),
        ]
    ):
        command = option(command)
    return command


def _client(options: dict[str, Any]) -> Client:
    token = read_token(options["token_file"]) if options["token_file"] else None
    return Client(
        _url(options["scheduler"], options["log_path"]),
        token=token,
        operator=options["operator"],
        timeout=options["timeout"],
    )


def _order(path: str, body: dict[str, Any], options: dict[str, Any]) -> None:
    try:
        answer = _client(options).post(path, body)
    except CtlError as e:
        raise CtlFailed(str(e)) from None
    if options["as_json"]:
        click.echo(json.dumps(answer, indent=2))
    else:
        click.echo(answer.get("detail", "done"))


@click.group("ctl")
def ctl_command() -> None:
    """Orders and questions to a running `taskledger run` (its operator API)."""


@ctl_command.command("status")
@connection
def status_command(**options: Any) -> None:
    """The scheduler's health, its job, dry run and the breaker."""
    try:
        doc = _client(options).get("/api/v1/status")
    except CtlError as e:
        raise CtlFailed(str(e)) from None
    if options["as_json"]:
        click.echo(json.dumps(doc, indent=2))
        return
    s, b, job = doc["scheduler"], doc["breaker"], doc["job"]
    problems = "; ".join(doc["problems"])
    if not doc["healthy"]:
        click.echo(f"UNHEALTHY: {problems}")
    else:
        click.echo(f"healthy, but {problems}" if problems else "healthy")
    subscribed = "subscribed" if s["subscribed"] else "NOT subscribed"
    click.echo(
        f"framework {s['framework_name']} (id {s['framework_id'] or '-'}), master "
        f"{s['master'] or s['master_given']}, {subscribed}, last heartbeat "
        f"{when(s['last_heartbeat'])} UTC"
    )
    click.echo(
        f"job {job['name']}: {job['instances']} instance(s)" if job else "no job",
    )
    click.echo(f"dry run {'ON' if doc['dry_run'] else 'off'}")
    if b["halted"]:
        click.echo(
            f"breaker HALTED since {when(b['since'])} UTC (event #{b['since_id']}): {b['reason']}; "
            "resume with: taskledger ctl resume --reason TEXT"
        )
    else:
        click.echo("breaker closed")
    click.echo(
        f"log {doc['log']}, last id {doc['last_id']}, {doc['pending_commands']} command(s) pending"
    )


@ctl_command.command("resume")
@click.option("--reason", default="", help="why (recorded in the log)")
@connection
def resume_command(reason: str, **options: Any) -> None:
    """Resume dispatch after the blast-radius breaker halted it (approves the commands
    pending now)."""
    _order("/api/v1/resume", {"reason": reason}, options)


@ctl_command.command("reconcile")
@click.option("--implicit", is_flag=True, help="an implicit run (Mesos lists all it knows)")
@click.option("--reason", default="", help="why (recorded in the log)")
@connection
def reconcile_command(implicit: bool, reason: str, **options: Any) -> None:
    """Start a reconciliation run now (explicit unless --implicit)."""
    kind = "implicit" if implicit else "explicit"
    _order("/api/v1/reconcile", {"kind": kind, "reason": reason}, options)


@ctl_command.command("kill")
@click.argument("task")
@click.option(
    "--no-replace",
    is_flag=True,
    help="leave the task's instance down (until the job is scaled up) instead of replacing it",
)
@click.option("--reason", default="", help="why (recorded in the log)")
@connection
def kill_command(task: str, no_replace: bool, reason: str, **options: Any) -> None:
    """Kill TASK and, if it is one of the job's instances, start a task in its place (the
    saga sends the KILL and retries it until Mesos confirms)."""
    body = {"task": task, "reason": reason, "replace": not no_replace}
    _order("/api/v1/kill", body, options)


@ctl_command.command("scale")
@click.argument("instances", type=click.IntRange(0))
@click.option("--reason", default="", help="why (recorded in the log)")
@connection
def scale_command(instances: int, reason: str, **options: Any) -> None:
    """Keep INSTANCES instances of the job (until the scheduler restarts: then its
    configuration decides)."""
    _order("/api/v1/scale", {"instances": instances, "reason": reason}, options)


@ctl_command.command("dry-run")
@click.argument("setting", type=click.Choice(["on", "off"]))
@click.option("--reason", default="", help="why (recorded in the log)")
@connection
def dry_run_command(setting: str, reason: str, **options: Any) -> None:
    """Turn dry run on (commands are decided and recorded, never sent) or off."""
    _order("/api/v1/dry-run", {"dry_run": setting == "on", "reason": reason}, options)
