"""The cluster as JSON, for the state endpoint (`GET /state`) and tests; whole, by pages of
tasks, for one task id, or as counts only.

A whole picture costs what the cluster holds (at a million tasks, seconds and hundreds of
MB of JSON); the other forms cost what they show: counts are kept as tasks change, a page
of tasks is a slice of the order in which either side first heard of each task.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tools.sim_master.records import TaskKey

if TYPE_CHECKING:
    from tools.sim_master.cluster import Cluster


class InvalidQuery(ValueError):
    """A state query parameter the endpoint cannot read (names the parameter and value)."""


@dataclass(frozen=True)
class StateQuery:
    """What a state request asks for.

    counts: no list of tasks, acknowledgements or completed tasks, only their counts.
    offset, limit: the page of tasks [offset, offset + limit) (limit None: to the end).
    task_id: only the tasks with this id (one per framework that has it).
    acknowledged: include the acknowledged updates (the newest 100,000).
    """

    counts: bool = False
    offset: int = 0
    limit: int | None = None
    task_id: str | None = None
    acknowledged: bool = True

    @staticmethod
    def from_params(params: dict[str, str]) -> StateQuery:
        """Read URL query parameters: counts=1, offset=N, limit=N, task_id=ID,
        acknowledged=0."""
        known = {"counts", "offset", "limit", "task_id", "acknowledged"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise InvalidQuery(f"unknown state parameter(s) {unknown}; known: {sorted(known)}")
        limit = params.get("limit")
        return StateQuery(
            counts=_flag(params, "counts", False),
            offset=_count(params, "offset", params.get("offset", "0")),
            limit=None if limit is None else _count(params, "limit", limit),
            task_id=params.get("task_id") or None,
            acknowledged=_flag(params, "acknowledged", True),
        )


def _flag(params: dict[str, str], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if value.lower() in ("", "1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidQuery(f"state parameter {name} must be 1 or 0, got {value!r}")


def _count(params: dict[str, str], name: str, value: str) -> int:
    if not value.isdigit():
        raise InvalidQuery(f"state parameter {name} must be an integer >= 0, got {value!r}")
    return int(value)


def snapshot(cluster: Cluster, query: StateQuery | None = None) -> dict:
    """A JSON-ready picture of the cluster (see StateQuery for the forms)."""
    query = query or StateQuery()
    master, fleet, allocator = cluster.master, cluster.fleet, cluster.allocator
    order = cluster.census.keys
    picture: dict = {
        "master": {
            "id": master.id,
            "epoch": master.epoch,
            "up": master.up,
            "down_until": master.down_until,
            "clock": cluster.kernel.clock,
            "seed": cluster.config.seed,
            "version": cluster.config.version,
        },
        "frameworks": [
            {
                "id": fw.id,
                "name": fw.info.get("name"),
                "connected": fw.stream_id is not None,
                "stream_id": fw.stream_id,
                "silent": bool(fw.stream_id and master.streams[fw.stream_id].silent),
                "removed": fw.removed,
                "suppressed": fw.suppressed,
                "capabilities": sorted(c for c in fw.capabilities if c),
            }
            for _, fw in sorted(master.frameworks.items())
        ],
        "agents": [
            {
                "id": a.id,
                "index": a.index,
                "hostname": a.hostname,
                "status": a.status,
                "link_up": a.link_up,
                "resources": a.total.to_json(),
                "used": allocator.used(a).to_json(),
                "tasks": len(fleet.tasks.on_agent(a.id)),
            }
            for a in fleet.agents.values()
        ],
        "task_counts": {
            "total": len(order),
            "master": dict(sorted(master.tasks.states.items())),
            "unreachable": dict(sorted(master.unreachable.states.items())),
            "agent": dict(sorted(fleet.tasks.states.items())),
            "launch_lost": len(fleet.lost_launches),
        },
        "acknowledged_total": len(master.acknowledged),
        "offers": [
            {
                "id": o.id,
                "framework_id": o.framework_id,
                "agent_id": o.agent_id,
                "resources": o.resources.to_json(),
            }
            for _, o in sorted(allocator.offers.items())
        ],
        "rules": cluster.kernel.rules.to_json(),
        "fault_log": list(cluster.faults.log),
    }
    if query.counts:
        return picture
    if query.task_id is not None:
        keys: list[TaskKey] = [
            (fid, query.task_id)
            for fid in sorted(master.frameworks)
            if (fid, query.task_id) in order
        ]
    else:
        end = None if query.limit is None else query.offset + query.limit
        keys = list(itertools.islice(order, query.offset, end))
        picture["tasks_total"] = len(order)
        more = end is not None and end < len(order)
        picture["next_offset"] = end if more else None
    picture["tasks"] = [_task(cluster, key) for key in keys]
    picture["completed_tasks"] = list(master.completed)
    if query.acknowledged:
        picture["acknowledged"] = list(master.acknowledged)
    return picture


def _task(cluster: Cluster, key: TaskKey) -> dict:
    """One task as the master (its answers, or its unreachable tasks) and its agent see it."""
    master = cluster.master
    known = master.tasks.get(key) or master.unreachable.get(key)
    real = cluster.fleet.tasks.get(key)
    return {
        "framework_id": key[0],
        "task_id": key[1],
        "agent_id": (known or real).agent_id,  # type: ignore[union-attr]
        "master_state": known.state if known else None,
        "status_update_state": known.status_update_state if known else None,
        "unreachable": key in master.unreachable,
        "agent_state": real.state if real else None,
        "pending_updates": len(real.queue) if real else 0,
        "launch_lost": key in cluster.fleet.lost_launches,
        "rogue": bool(real and real.rogue),
    }
