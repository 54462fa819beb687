"""The calls the scheduler makes to Mesos, behind one small interface.

`Driver` is what the scheduler core needs from Mesos. `PymesosDriver` turns it into the v1
calls and hands them to a sender: over HTTP to the master the pymesos driver is subscribed
to, or, in the deterministic simulation, to an in-process stand-in it steps itself. Keeping
the core behind this interface is what lets the same scheduler logic run under pymesos's IO
thread and inside a single-threaded simulation on a virtual clock.
"""

from __future__ import annotations

from typing import Any, Protocol

from engine.mesos.sender import Done, Sender


class Driver(Protocol):
    """Calls to the master. Each is handed over and returns at once; ``done(error)``, if
    given, is told later (on another thread under pymesos) whether the master took it:
    None, or the error (callers treat that as "not sent": a command stays pending and is
    tried again, an update is re-sent by its agent)."""

    def acknowledge(self, status: dict[str, Any], done: Done | None = None) -> None: ...

    def launch(
        self, offer_id: str, task_infos: list[dict[str, Any]], done: Done | None = None
    ) -> None: ...

    def decline(
        self, offer_ids: list[str], refuse_seconds: float, done: Done | None = None
    ) -> None: ...

    def kill(self, task_id: str, agent_id: str | None, done: Done | None = None) -> None: ...

    def reconcile(self, tasks: list[tuple[str, str | None]], done: Done | None = None) -> None:
        """Explicit for the (task id, agent id or None) pairs given; implicit if none."""
        ...

    def revive(self, done: Done | None = None) -> None: ...


def _id(value: str) -> dict[str, str]:
    return {"value": value}


class PymesosDriver:
    """`Driver` that builds the v1 calls pymesos would and hands them to a `Sender`
    (engine/mesos/sender.py: threads of their own over keep-alive connections, not
    pymesos's one connection under its lock).

    KILL and RECONCILE name the agent, which pymesos drops from them: the master answers
    TASK_GONE / TASK_UNREACHABLE / TASK_GONE_BY_OPERATOR only to a reconciliation that
    names it.
    """

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def acknowledge(self, status: dict[str, Any], done: Done | None = None) -> None:
        payload = {
            "agent_id": status["agent_id"],
            "task_id": status["task_id"],
            "uuid": status["uuid"],
        }
        self._sender.send("ACKNOWLEDGE", payload, done)

    def launch(
        self, offer_id: str, task_infos: list[dict[str, Any]], done: Done | None = None
    ) -> None:
        payload = {
            "offer_ids": [_id(offer_id)],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": task_infos}}],
            "filters": {"refuse_seconds": 1.0},
        }
        self._sender.send("ACCEPT", payload, done)

    def decline(
        self, offer_ids: list[str], refuse_seconds: float, done: Done | None = None
    ) -> None:
        payload = {
            "offer_ids": [_id(o) for o in offer_ids],
            "filters": {"refuse_seconds": refuse_seconds},
        }
        self._sender.send("DECLINE", payload, done)

    def kill(self, task_id: str, agent_id: str | None, done: Done | None = None) -> None:
        payload: dict[str, Any] = {"task_id": _id(task_id)}
        if agent_id is not None:
            payload["agent_id"] = _id(agent_id)
        self._sender.send("KILL", payload, done)

    def reconcile(self, tasks: list[tuple[str, str | None]], done: Done | None = None) -> None:
        refs = []
        for task_id, agent_id in tasks:
            ref: dict[str, Any] = {"task_id": _id(task_id)}
            if agent_id is not None:
                ref["agent_id"] = _id(agent_id)
            refs.append(ref)
        self._sender.send("RECONCILE", {"tasks": refs}, done)

    def revive(self, done: Done | None = None) -> None:
        self._sender.send("REVIVE", {}, done)
