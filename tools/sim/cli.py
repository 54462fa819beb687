"""`taskledger sim`: run the simulated Mesos master until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time

from tools.sim.config import SimConfig
from tools.sim.faults import InvalidFault, describe, parse_fault
from tools.sim.server import SimServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskledger sim",
        description="A simulated Mesos master speaking the v1 scheduler HTTP API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5050, help="port (0: any free port)")
    parser.add_argument("--agents", type=int, default=3, help="number of simulated agents")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per real second (60: a minute passes in a second)",
    )
    parser.add_argument("--heartbeat", type=float, default=15.0, help="heartbeat interval (s)")
    parser.add_argument("--cpus", type=float, default=4.0, help="cpus per agent")
    parser.add_argument("--mem", type=float, default=8192.0, help="mem (MB) per agent")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="JSON",
        help='a fault to inject, e.g. \'{"kind": "master_failover", "after": 60}\' (repeatable)',
    )
    parser.add_argument(
        "--epoch",
        type=float,
        default=None,
        help="wall-clock seconds at simulated time 0 (default: now), for status timestamps",
    )
    parser.add_argument("--list-faults", action="store_true", help="print the fault catalogue")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `taskledger sim`; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.list_faults:
        print(describe())
        return 0
    if args.agents < 1 or args.time_scale <= 0:
        print("taskledger sim: --agents must be >= 1 and --time-scale > 0", file=sys.stderr)
        return 2
    try:
        faults = [parse_fault(json.loads(text)) for text in args.fault]
    except (ValueError, InvalidFault) as err:
        print(f"taskledger sim: bad --fault: {err}", file=sys.stderr)
        return 2
    config = SimConfig(
        agents=args.agents,
        seed=args.seed,
        ip=args.host if args.host[:1].isdigit() else "127.0.0.1",
        hostname=args.host,
        heartbeat_interval=args.heartbeat,
        agent_cpus=args.cpus,
        agent_mem=args.mem,
        epoch=float(int(time.time())) if args.epoch is None else args.epoch,
    )
    try:
        asyncio.run(_run(config, args, faults))
    except OSError as err:
        print(f"taskledger sim: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    return 0


async def _run(config: SimConfig, args: argparse.Namespace, faults: list) -> None:
    server = SimServer(
        config, host=args.host, port=args.port, time_scale=args.time_scale, faults=faults
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(
        f"taskledger sim: master on {args.host}:{server.port}, {args.agents} agents, "
        f"seed {args.seed}, time-scale {args.time_scale}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
