"""The calls the scheduler makes to Mesos, behind one small interface.

`Driver` is what the scheduler core needs from Mesos. `PymesosDriver` carries it over the
real pymesos driver (HTTP to a master); a deterministic simulation provides its own. Keeping
the core behind this interface is what lets the same scheduler logic run under pymesos's IO
thread and inside a single-threaded simulation on a virtual clock.
"""

from __future__ import annotations

from typing import Any, Protocol


class Driver(Protocol):
    """Calls to the master. Each may raise if the master cannot be reached: callers treat
    that as "not sent" (a command stays pending and is tried again)."""

    def acknowledge(self, status: dict[str, Any]) -> None: ...

    def launch(self, offer_id: str, task_infos: list[dict[str, Any]]) -> None: ...

    def decline(self, offer_ids: list[str], refuse_seconds: float) -> None: ...

    def kill(self, task_id: str, agent_id: str | None) -> None: ...

    def reconcile(self, tasks: list[tuple[str, str | None]]) -> None:
        """Explicit for the (task id, agent id or None) pairs given; implicit if none."""
        ...

    def revive(self) -> None: ...


def _id(value: str) -> dict[str, str]:
    return {"value": value}


class PymesosDriver:
    """`Driver` over a pymesos MesosSchedulerDriver.

    KILL and RECONCILE are sent as raw calls because pymesos drops the agent id from them,
    and the master answers TASK_GONE / TASK_UNREACHABLE / TASK_GONE_BY_OPERATOR only to a
    reconciliation that names the agent (reference/mesos-v1-scheduler-api.md).
    """

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    def _call(self, kind: str, payload: dict[str, Any]) -> None:
        framework_id = self._driver.framework_id
        if framework_id is None or not self._driver.connected:
            # pymesos would drop it silently; saying so keeps the command pending.
            raise ConnectionError(f"not subscribed: {kind} not sent")
        self._driver._send({"type": kind, "framework_id": _id(framework_id), kind.lower(): payload})

    def acknowledge(self, status: dict[str, Any]) -> None:
        if not self._driver.connected:
            raise ConnectionError("not subscribed: ACKNOWLEDGE not sent")
        self._driver.acknowledgeStatusUpdate(status)

    def launch(self, offer_id: str, task_infos: list[dict[str, Any]]) -> None:
        self._call(
            "ACCEPT",
            {
                "offer_ids": [_id(offer_id)],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": task_infos}}],
                "filters": {"refuse_seconds": 1.0},
            },
        )

    def decline(self, offer_ids: list[str], refuse_seconds: float) -> None:
        self._call(
            "DECLINE",
            {
                "offer_ids": [_id(o) for o in offer_ids],
                "filters": {"refuse_seconds": refuse_seconds},
            },
        )

    def kill(self, task_id: str, agent_id: str | None) -> None:
        payload: dict[str, Any] = {"task_id": _id(task_id)}
        if agent_id is not None:
            payload["agent_id"] = _id(agent_id)
        self._call("KILL", payload)

    def reconcile(self, tasks: list[tuple[str, str | None]]) -> None:
        refs = []
        for task_id, agent_id in tasks:
            ref: dict[str, Any] = {"task_id": _id(task_id)}
            if agent_id is not None:
                ref["agent_id"] = _id(agent_id)
            refs.append(ref)
        self._call("RECONCILE", {"tasks": refs})

    def revive(self) -> None:
        self._call("REVIVE", {})
