"""The saga's state as plain msgpack data: its part of a Ledger snapshot (projections/snapshots).

Explicit fields, never a pickle, like the views' part. `decode(encode(state)) == state`
(tests/test_saga.py checks it over random histories), so a Ledger opened from a snapshot
decides exactly as one that replayed the whole log.

Version 2 (`"version": 2`) stores each outbox command as its CommandIssued (wire form) and its
dispatch state. Version 1 (no "version": every snapshot written before) stored the command's
fields one by one; it is still read, and its CommandIssued rebuilt from them: the causation is
the first evidence (every command the saga issues is caused so, engine.rules.issue), and the
command's own `not_before` is the record's unless a send failed (then the retry time had
replaced it and it is read as None; only an audit of the event would see it, and audits read
the log).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from engine.events import CommandIssued, DispatchHalted
from engine.outbox import CommandRecord, Outbox
from engine.reconciliation import Omitted, Run, Runs
from engine.saga import KillTrack, Obligation, SagaState
from engine.wire import from_wire, to_wire
from projections.snapshots import SnapshotError

VERSION = 2
_RUN_FIELDS = tuple(f.name for f in fields(Run))
# A record's dispatch state: every field but the command id and its CommandIssued.
_DISPATCH_FIELDS = tuple(f.name for f in fields(CommandRecord))[2:]
# Version 1's record fields, in its order.
_V1_RECORD_FIELDS = (
    "command_id",
    "kind",
    "task_id",
    "rule",
    "evidence",
    "run_id",
    "tasks",
    "attempt",
    "retry_of",
    "not_before",
    "dry_run",
    "issued_at",
    "status",
    "failures",
    "last_error",
    "dispatched_at",
    "settled_at",
    "settled_by",
    "outcome",
    "new_task_id",
)
_KEYS_ONLY = ("asked", "remaining", "answered_tasks")


def _encode_run(run: Run) -> list[Any]:
    out = []
    for name in _RUN_FIELDS:
        value = getattr(run, name)
        if name in _KEYS_ONLY:
            value = list(value)
        elif name in ("command_ids", "early"):
            value = sorted(value)
        out.append(value)
    return out


def _decode_run(row: list[Any]) -> Run:
    values = dict(zip(_RUN_FIELDS, row, strict=True))
    for name in _KEYS_ONLY:
        values[name] = dict.fromkeys(values[name])
    values["command_ids"] = set(values["command_ids"])
    values["early"] = set(values["early"])
    return Run(**values)


def _encode_omitted(omitted: Omitted | None) -> list[Any] | None:
    if omitted is None:
        return None
    o = omitted
    return [o.run_id, o.started_nid, o.started_at, o.completed_nid, list(o.tasks)]


def _decode_omitted(row: list[Any] | None) -> Omitted | None:
    if row is None:
        return None
    run_id, started_nid, started_at, completed_nid, tasks = row
    return Omitted(run_id, started_nid, started_at, completed_nid, dict.fromkeys(tasks))


def _encode_record(rec: CommandRecord) -> list[Any]:
    return [rec.command_id, to_wire(rec.issued), *(getattr(rec, n) for n in _DISPATCH_FIELDS)]


def _decode_record(row: list[Any]) -> CommandRecord:
    command_id, issued, *dispatch = row
    return CommandRecord(
        command_id,
        from_wire(CommandIssued.topic, issued),  # type: ignore[arg-type]
        **dict(zip(_DISPATCH_FIELDS, dispatch, strict=True)),
    )


def _decode_v1_record(row: list[Any]) -> CommandRecord:
    v = dict(zip(_V1_RECORD_FIELDS, row, strict=True))
    evidence = v["evidence"]
    issued = CommandIssued(
        time=v["issued_at"],
        causation=evidence[0] if evidence else None,
        kind=v["kind"],
        task_id=v["task_id"],
        rule=v["rule"],
        evidence=evidence,
        run_id=v["run_id"],
        tasks=v["tasks"],
        attempt=v["attempt"],
        retry_of=v["retry_of"],
        not_before=None if v["failures"] else v["not_before"],
        dry_run=v["dry_run"],
        extra={},
    )
    dispatch = {name: v[name] for name in _DISPATCH_FIELDS}
    return CommandRecord(v["command_id"], issued, **dispatch)


def encode(state: SagaState) -> dict[str, Any]:
    """The saga state as msgpack-ready data."""
    runs, box = state.runs, state.outbox
    return {
        "version": VERSION,
        "runs": {
            "active": {kind: _encode_run(run) for kind, run in runs.active.items()},
            "started": runs.started,
            "last_started_at": runs.last_started_at,
            "completed": runs.completed,
            "superseded": runs.superseded,
            "first_time": runs.first_time,
            "registration_due": runs.registration_due,
            "registered_at": runs.registered_at,
            "omitted": _encode_omitted(runs.omitted),
        },
        "outbox": {
            "commands": [_encode_record(r) for r in box.commands.values()],
            "pending": list(box.pending),
            "halted": None if box.halted is None else to_wire(box.halted),
            "halted_nid": box.halted_nid,
            "resumed_at": box.resumed_at,
            "approved_upto": box.approved_upto,
            "destructive": [list(item) for item in box.destructive],
            "kill_times": box.kill_times,
            "last_nid": box.last_nid,
        },
        "open_kills": [[t, k.first, k.latest, k.attempts] for t, k in state.open_kills.items()],
        "kill_episodes": {t: list(v) for t, v in state.kill_episodes.items()},
        "rescheduled": state.rescheduled,
        "replaced_by": state.replaced_by,
        "ancestor": state.ancestor,
        "lost_marked": state.lost_marked,
        "transient": state.transient,
        "partitioned": state.partitioned,
        "transient_asked": {t: list(v) for t, v in state.transient_asked.items()},
        "obligations": [[o.nid, o.task_id, list(o.effects), o.cause] for o in state.obligations],
        "reacted_upto": state.reacted_upto,
        "last_nid": state.last_nid,
        "dry_run_order": state.dry_run_order,
        "scaled": state.scaled,
    }


def decode(data: dict[str, Any]) -> SagaState:
    """The inverse of encode; SnapshotError for data of the wrong shape."""
    try:
        return _decode(data)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise SnapshotError(f"saga state does not have the snapshot's shape: {e!r}") from e


def _decode(data: dict[str, Any]) -> SagaState:
    r, b = data["runs"], data["outbox"]
    runs = Runs(
        active={kind: _decode_run(row) for kind, row in r["active"].items()},
        started=dict(r["started"]),
        last_started_at=dict(r["last_started_at"]),
        completed=r["completed"],
        superseded=r["superseded"],
        first_time=r["first_time"],
        registration_due=r["registration_due"],
        registered_at=r["registered_at"],
        omitted=_decode_omitted(r.get("omitted")),  # absent from snapshots older than it
    )
    version = data.get("version", 1)
    if version not in (1, VERSION):
        raise ValueError(f"saga state of version {version!r} (this build reads 1 and {VERSION})")
    decode_record = _decode_record if version == VERSION else _decode_v1_record
    commands = {}
    for row in b["commands"]:
        rec = decode_record(row)
        commands[rec.command_id] = rec
    box = Outbox(
        commands=commands,
        pending={cid: commands[cid] for cid in b["pending"]},
        halted=None if b["halted"] is None else from_wire(DispatchHalted.topic, b["halted"]),
        halted_nid=b["halted_nid"],
        resumed_at=b["resumed_at"],
        approved_upto=b["approved_upto"],
        destructive=[(t, task) for t, task in b["destructive"]],
        kill_times=list(b["kill_times"]),
        last_nid=b["last_nid"],
    )
    return SagaState(
        runs=runs,
        outbox=box,
        open_kills={
            t: KillTrack(first, latest, attempts)
            for t, first, latest, attempts in data["open_kills"]
        },
        kill_episodes={t: (v[0], v[1]) for t, v in data["kill_episodes"].items()},
        rescheduled=dict(data["rescheduled"]),
        replaced_by=dict(data["replaced_by"]),
        ancestor=dict(data["ancestor"]),
        lost_marked=dict(data["lost_marked"]),
        transient=dict(data["transient"]),
        partitioned=dict(data["partitioned"]),
        transient_asked={t: (v[0], v[1]) for t, v in data["transient_asked"].items()},
        obligations=[
            Obligation(nid, t, tuple(effects), cause)
            for nid, t, effects, cause in data["obligations"]
        ],
        reacted_upto=data["reacted_upto"],
        last_nid=data["last_nid"],
        # Absent from snapshots written before the standing orders were kept.
        dry_run_order=data.get("dry_run_order"),
        scaled=dict(data.get("scaled") or {}),
    )
