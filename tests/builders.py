"""Builders of what the tests write again and again: a Mesos TaskStatus dict as pymesos
delivers it to a scheduler, its uuid, and the StatusUpdateReceived event the Ledger makes of
one (for tests that rebuild views from events without a log)."""

from __future__ import annotations

import base64
from typing import Any

from engine.events import StatusUpdateReceived


def mesos_uuid(n: int) -> str:
    """A status update's uuid as Mesos sends it: the base64 text of 16 bytes (``n``)."""
    return base64.b64encode(n.to_bytes(16, "big")).decode()


def task_status(
    task: str,
    state: str = "TASK_RUNNING",
    *,
    agent: str | None = None,
    uuid: str | bytes | None = None,
    **more: Any,
) -> dict[str, Any]:
    """A Mesos v1 TaskStatus dict: ``task``'s id and ``state``; the agent's id when
    ``agent`` is given; ``uuid`` as given when text, base64-encoded when bytes (Mesos sends
    the base64 of the raw bytes); then every other field as given (``timestamp=``,
    ``source=``, ``reason=``, ``message=``, ``data=``, ...), which may also override the
    fields above."""
    status: dict[str, Any] = {"task_id": {"value": task}, "state": state}
    if agent is not None:
        status["agent_id"] = {"value": agent}
    if uuid is not None:
        status["uuid"] = uuid if isinstance(uuid, str) else base64.b64encode(uuid).decode()
    status.update(more)
    return status


def status_event(
    task: str, state: str, *, time: float = 0.0, **fields: Any
) -> StatusUpdateReceived:
    """A StatusUpdateReceived as status_from_mesos makes it, with no causation: the event's
    ``time``, then any of its fields by name (``agent_id=``, ``source=``, ``timestamp=``...)."""
    return StatusUpdateReceived(time, None, task, state, **fields)
