"""`taskledger sim` (also `python -m tools.sim_master`): run the simulated Mesos master until
interrupted (SIGINT or SIGTERM stop it cleanly)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import ssl
import sys
import time

import click

from tools.sim_master.config import SimConfig
from tools.sim_master.faults import Fault, describe, parse_fault


class FaultParam(click.ParamType):
    """A --fault: one fault as a JSON object, checked against the catalogue."""

    name = "JSON"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, Fault):
            return value
        try:
            return parse_fault(json.loads(str(value)))
        except ValueError as err:  # InvalidFault is a ValueError; so is bad JSON
            self.fail(f"{value!r}: {err}", param, ctx)


def _list_faults(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(describe())
        ctx.exit(0)


@click.command(
    "sim",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=5050,
    show_default=True,
    help="Port to listen on (0: any free port, printed at start).",
)
@click.option(
    "--agents",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Simulated agents.",
)
@click.option(
    "--cpus", type=click.FloatRange(min=0), default=4.0, show_default=True, help="CPUs per agent."
)
@click.option(
    "--mem",
    type=click.FloatRange(min=0),
    default=8192.0,
    show_default=True,
    help="Memory (MB) per agent.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of every random choice (ids, uuids, probabilistic faults).",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second (60: a minute passes in a second).",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    help="Heartbeat interval (simulated seconds).",
)
@click.option(
    "--fault",
    "faults",
    type=FaultParam(),
    multiple=True,
    help='A fault to inject, e.g. \'{"kind": "master_failover", "after": 60}\' (repeatable; '
    "see --list-faults).",
)
@click.option(
    "--epoch",
    type=float,
    default=None,
    help="Wall-clock seconds at simulated time 0 (default: now), for status timestamps.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    default=None,
    help="Serve https only, with this certificate (PEM; its chain after it), as a master "
    "built with SSL does.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False),
    default=None,
    help="The private key of --tls-cert (PEM; default: in the --tls-cert file).",
)
@click.option(
    "--list-faults",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_list_faults,
    help="Print every fault with its parameters and what it does, then exit.",
)
def sim_command(
    host: str,
    port: int,
    agents: int,
    cpus: float,
    mem: float,
    seed: int,
    time_scale: float,
    heartbeat: float,
    faults: tuple[Fault, ...],
    epoch: float | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Run the simulated Mesos master: the v1 scheduler HTTP API (JSON) for pymesos and
    any other scheduler, a cluster of simulated agents, and faults on demand.

    Endpoints: POST /api/v1/scheduler (every call), GET /state (counts=1, offset, limit,
    task_id, acknowledged=0), POST /admin/fault (a fault, or a list), GET /version.
    """
    # One line per refused or unparsable request, on stderr (see server.py).
    logging.basicConfig(level=logging.WARNING, format="taskledger sim: %(message)s")
    config = SimConfig(
        agents=agents,
        seed=seed,
        ip=host if host[:1].isdigit() else "127.0.0.1",
        hostname=host,
        heartbeat_interval=heartbeat,
        agent_cpus=cpus,
        agent_mem=mem,
        epoch=float(int(time.time())) if epoch is None else epoch,
    )
    context = _server_context(tls_cert, tls_key)
    try:
        asyncio.run(_run(config, host, port, time_scale, list(faults), context))
    except OSError as err:
        click.echo(f"taskledger sim: cannot listen on {host}:{port}: {err}", err=True)
        sys.exit(1)


def _server_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The TLS context of --tls-cert/--tls-key, or None (plain HTTP)."""
    if cert is None:
        if key is not None:
            raise click.UsageError("--tls-key needs --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        files = " and ".join(f for f in (cert, key) if f)
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or err
        raise click.UsageError(f"cannot serve TLS with {files}: {reason}") from None
    return context


async def _run(
    config: SimConfig,
    host: str,
    port: int,
    time_scale: float,
    faults: list[Fault],
    context: ssl.SSLContext | None,
) -> None:
    from tools.sim_master.server import SimServer  # aiohttp: only when a master runs

    server = SimServer(
        config, host=host, port=port, time_scale=time_scale, faults=faults, ssl_context=context
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    tls = "" if context is None else " (https)"
    click.echo(
        f"taskledger sim: master on {host}:{server.port}{tls}, {config.agents} agents, "
        f"seed {config.seed}, time-scale {time_scale}"
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
