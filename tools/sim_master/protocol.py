"""The v1 scheduler API's vocabulary and message shapes, as the simulated master writes them.

Only shapes live here (no state): the nested protobuf-JSON forms pymesos expects, e.g.
`{"type": "OFFERS", "offers": {"offers": [...]}}` rather than the docs' flat examples.
"""

from __future__ import annotations

import socket
import struct

TERMINAL_STATES = frozenset(
    {
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_ERROR",
        "TASK_LOST",
        "TASK_DROPPED",
        "TASK_GONE",
        "TASK_GONE_BY_OPERATOR",
    }
)

PARTITION_AWARE = "PARTITION_AWARE"
TASK_KILLING_STATE = "TASK_KILLING_STATE"

# Call types the simulator accepts but does nothing with (no inverse offers, no operations
# API, no executors to message): Mesos answers them 202 as well.
IGNORED_CALLS = frozenset(
    {
        "MESSAGE",
        "REQUEST",
        "SHUTDOWN",
        "ACCEPT_INVERSE_OFFERS",
        "DECLINE_INVERSE_OFFERS",
        "ACKNOWLEDGE_OPERATION_STATUS",
        "RECONCILE_OPERATIONS",
        "UPDATE_FRAMEWORK",
    }
)
CALLS = frozenset(
    {
        "SUBSCRIBE",
        "TEARDOWN",
        "ACCEPT",
        "DECLINE",
        "REVIVE",
        "SUPPRESS",
        "KILL",
        "RECONCILE",
        "ACKNOWLEDGE",
    }
    | IGNORED_CALLS
)


def is_terminal(state: str) -> bool:
    """Terminal per mesos.proto (TASK_UNREACHABLE and TASK_UNKNOWN are not)."""
    return state in TERMINAL_STATES


def ip_as_uint32(ip: str) -> int:
    """MasterInfo.ip: the IPv4 address packed in network order, read as a host integer.

    Mesos copies the 4 network-order bytes into a uint32 on a little-endian host, so
    127.0.0.1 travels as 16777343, which is what a real master on x86 sends.
    """
    return struct.unpack("<I", socket.inet_aton(ip))[0]


def value(v: str) -> dict:
    """A `{"value": v}` id message."""
    return {"value": v}


def subscribed(framework_id: str, heartbeat_interval: float, master_info: dict) -> dict:
    return {
        "type": "SUBSCRIBED",
        "subscribed": {
            "framework_id": value(framework_id),
            "heartbeat_interval_seconds": heartbeat_interval,
            "master_info": master_info,
        },
    }


def master_info(master_id: str, ip: str, port: int, hostname: str, version: str) -> dict:
    return {
        "id": master_id,
        "ip": ip_as_uint32(ip),
        "port": port,
        "hostname": hostname,
        "version": version,
        "address": {"hostname": hostname, "ip": ip, "port": port},
    }


def heartbeat() -> dict:
    return {"type": "HEARTBEAT"}


def error(message: str) -> dict:
    return {"type": "ERROR", "error": {"message": message}}


def offers(offer_list: list[dict]) -> dict:
    return {"type": "OFFERS", "offers": {"offers": offer_list}}


def offer(
    offer_id: str, framework_id: str, agent_id: str, hostname: str, resources: list[dict]
) -> dict:
    return {
        "id": value(offer_id),
        "framework_id": value(framework_id),
        "agent_id": value(agent_id),
        "hostname": hostname,
        "resources": resources,
    }


def rescind(offer_id: str) -> dict:
    return {"type": "RESCIND", "rescind": {"offer_id": value(offer_id)}}


def update(status: dict) -> dict:
    return {"type": "UPDATE", "update": {"status": status}}


def agent_failure(agent_id: str) -> dict:
    return {"type": "FAILURE", "failure": {"agent_id": value(agent_id)}}


def executor_failure(agent_id: str, executor_id: str, exit_status: int) -> dict:
    return {
        "type": "FAILURE",
        "failure": {
            "agent_id": value(agent_id),
            "executor_id": value(executor_id),
            "status": exit_status,
        },
    }


def task_status(
    task_id: str,
    state: str,
    *,
    source: str,
    timestamp: float,
    agent_id: str | None = None,
    executor_id: str | None = None,
    reason: str | None = None,
    message: str | None = None,
    uuid: str | None = None,
    unreachable_time: float | None = None,
) -> dict:
    """A TaskStatus; optional fields are left out rather than sent as null."""
    status: dict = {"task_id": value(task_id), "state": state, "source": source}
    if agent_id is not None:
        status["agent_id"] = value(agent_id)
    if executor_id is not None:
        status["executor_id"] = value(executor_id)
    if reason is not None:
        status["reason"] = reason
    if message is not None:
        status["message"] = message
    status["timestamp"] = timestamp
    if uuid is not None:
        status["uuid"] = uuid
    if unreachable_time is not None:
        status["unreachable_time"] = {"nanoseconds": int(unreachable_time * 1e9)}
    return status
