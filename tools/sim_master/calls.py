"""Reading scheduler calls: structural validation of each call's JSON, as Mesos's
`validation::scheduler::call::validate` does, with the 400 message naming the bad field.

Validation of *content* (does this offer exist, do these resources fit) belongs to the
cluster model, which answers it with status updates (TASK_ERROR, TASK_DROPPED), not 400s.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from tools.sim_master import protocol


class CallError(Exception):
    """A call refused with an HTTP status (400, 403, ...) and Mesos's kind of message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> CallError:
    return CallError(400, message)


def id_value(obj: object, where: str, *, required: bool = True) -> str | None:
    """The string inside a `{"value": ...}` id message."""
    if obj is None and not required:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("value"), str) or not obj["value"]:
        raise bad(f"Expecting '{where}' to be an id object {{\"value\": <string>}}, got {obj!r}")
    return obj["value"]


def call_type(body: object) -> str:
    """The call's type, or a 400 for a body that is no call at all."""
    if not isinstance(body, dict):
        raise bad(f"Expecting a JSON object as the call, got {type(body).__name__}")
    typ = body.get("type")
    if not isinstance(typ, str) or typ not in protocol.CALLS:  # a list or map is unhashable
        raise bad(f"Unknown or missing call type {typ!r}")
    return typ


def framework_id(body: dict) -> str:
    if "framework_id" not in body:
        raise bad("Expecting 'framework_id' to be present")
    return id_value(body["framework_id"], "framework_id")  # type: ignore[return-value]


def payload(body: dict, field: str) -> dict:
    got = body.get(field)
    if not isinstance(got, dict):
        raise bad(f"Expecting '{field}' to be present")
    return got


@dataclass(frozen=True)
class Subscribe:
    framework_id: str | None
    info: dict


JSON = "application/json"
PROTOBUF = "application/x-protobuf"


def accepts(accept: str | None, media_type: str) -> bool:
    """Whether an Accept header allows `media_type`, as libprocess decides it: no header
    allows everything; else `type/subtype`, then `type/*`, then `*/*` is looked for among
    the header's entries (spaces ignored, names compared without case), and the first that
    matches decides: allowed unless its q is a number <= 0."""
    if accept is None:
        return True
    entries = [e.split(";") for e in "".join(accept.split()).split(",") if e]
    kind = media_type.split("/")[0]
    for candidate in (media_type, f"{kind}/*", "*/*"):
        for name, *params in entries:
            if name.lower() != candidate:
                continue
            q = [p[2:] for p in params if p.startswith("q=")]
            if len(q) != 1:
                return True
            try:
                return float(q[0]) > 0
            except ValueError:
                return False
    return False


def subscribe(body: dict, stream_id_header: str | None, accept: str | None = None) -> Subscribe:
    """A SUBSCRIBE's checks in Mesos's order: the call itself (400), its Accept header
    (406: this master streams JSON only), then the Mesos-Stream-Id header (400)."""
    sub = _subscribe_body(body)
    if not accepts(accept, JSON):
        if accepts(accept, PROTOBUF):
            raise CallError(406, f"This simulated master streams {JSON} only, not {PROTOBUF}")
        raise CallError(406, f"Expecting 'Accept' to allow '{PROTOBUF}' or '{JSON}'")
    if stream_id_header is not None:
        raise bad("Subscribe calls should not include the 'Mesos-Stream-Id' header")
    return sub


def _subscribe_body(body: dict) -> Subscribe:
    info = payload(body, "subscribe").get("framework_info")
    if not isinstance(info, dict):
        raise bad("Expecting 'subscribe.framework_info' to be present")
    for field in ("user", "name"):
        if not isinstance(info.get(field), str):
            raise bad(f"Expecting 'subscribe.framework_info.{field}' to be a string")
    info_id = id_value(info.get("id"), "framework_info.id", required=False)
    top_id = id_value(body.get("framework_id"), "framework_id", required=False)
    if info_id != top_id:
        raise bad(
            f"'framework_id' ({top_id!r}) differs from 'subscribe.framework_info.id' ({info_id!r})"
        )
    timeout = info.get("failover_timeout", 0.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise bad(f"'framework_info.failover_timeout' must be seconds >= 0, got {timeout!r}")
    caps = info.get("capabilities", [])
    if not isinstance(caps, list) or not all(isinstance(c, dict) for c in caps):
        raise bad(f"'framework_info.capabilities' must be a list of objects, got {caps!r}")
    return Subscribe(info_id, info)


@dataclass(frozen=True)
class Accept:
    offer_ids: tuple[str, ...]
    operations: tuple[dict, ...]
    refuse_seconds: float | None


def _offer_ids(p: dict, where: str) -> tuple[str, ...]:
    ids = p.get("offer_ids")
    if not isinstance(ids, list):
        raise bad(f"Expecting '{where}.offer_ids' to be a list")
    return tuple(id_value(o, f"{where}.offer_ids[]") for o in ids)  # type: ignore[misc]


def _refuse_seconds(p: dict, where: str) -> float | None:
    filters = p.get("filters")
    if filters is None:
        return None
    if not isinstance(filters, dict):
        raise bad(f"Expecting '{where}.filters' to be an object")
    refuse = filters.get("refuse_seconds")
    if refuse is None:
        return None
    if isinstance(refuse, bool) or not isinstance(refuse, int | float) or refuse < 0:
        raise bad(f"'{where}.filters.refuse_seconds' must be a number >= 0, got {refuse!r}")
    return float(refuse)


def accept(body: dict) -> Accept:
    p = payload(body, "accept")
    ops = p.get("operations", [])
    if not isinstance(ops, list):
        raise bad("Expecting 'accept.operations' to be a list")
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("type"), str):
            raise bad(f"Every operation needs a 'type', got {op!r}")
        if op["type"] == "LAUNCH":
            infos = (op.get("launch") or {}).get("task_infos")
            if not isinstance(infos, list) or not all(isinstance(t, dict) for t in infos):
                raise bad("Expecting 'launch.task_infos' to be a list of TaskInfo objects")
    return Accept(_offer_ids(p, "accept"), tuple(ops), _refuse_seconds(p, "accept"))


@dataclass(frozen=True)
class Decline:
    offer_ids: tuple[str, ...]
    refuse_seconds: float | None


def decline(body: dict) -> Decline:
    p = payload(body, "decline")
    return Decline(_offer_ids(p, "decline"), _refuse_seconds(p, "decline"))


@dataclass(frozen=True)
class TaskRef:
    task_id: str
    agent_id: str | None


def kill(body: dict) -> TaskRef:
    p = payload(body, "kill")
    return TaskRef(
        id_value(p.get("task_id"), "kill.task_id"),  # type: ignore[arg-type]
        id_value(p.get("agent_id"), "kill.agent_id", required=False),
    )


def reconcile(body: dict) -> list[TaskRef]:
    p = payload(body, "reconcile")
    tasks = p.get("tasks", [])
    if not isinstance(tasks, list):
        raise bad("Expecting 'reconcile.tasks' to be a list")
    refs = []
    for t in tasks:
        if not isinstance(t, dict):
            raise bad(f"Expecting 'reconcile.tasks[]' to be objects, got {t!r}")
        refs.append(
            TaskRef(
                id_value(t.get("task_id"), "reconcile.tasks[].task_id"),  # type: ignore[arg-type]
                id_value(t.get("agent_id"), "reconcile.tasks[].agent_id", required=False),
            )
        )
    return refs


@dataclass(frozen=True)
class Acknowledge:
    agent_id: str
    task_id: str
    uuid: str


def acknowledge(body: dict) -> Acknowledge:
    p = payload(body, "acknowledge")
    agent = id_value(p.get("agent_id"), "acknowledge.agent_id")
    task = id_value(p.get("task_id"), "acknowledge.task_id")
    uuid = p.get("uuid")
    if not isinstance(uuid, str):
        raise bad("Expecting 'acknowledge.uuid' to be a base64 string")
    try:
        raw = base64.b64decode(uuid, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad(f"'acknowledge.uuid' is not base64: {uuid!r}") from exc
    if len(raw) != 16:
        raise bad(f"'acknowledge.uuid' must encode 16 bytes, got {len(raw)}: {uuid!r}")
    return Acknowledge(agent, task, uuid)  # type: ignore[arg-type]
