"""Snapshots of the views: their encoding as plain msgpack data (pure: data in, bytes out).

A snapshot holds the views as of one notification id. It is data with explicit fields,
never a pickle: a snapshot written by one version of taskledger can be checked and read by
another, and a damaged one fails its checksum (engine.codec frame) instead of loading
half-built objects. Where snapshots live and how they are chosen is the Ledger's business.

Layout (msgpack map):
    {"format": 1, "nid": N, "time": <snapshot time>, "parts": {name: data, ...}}
Each part is encoded by a function registered in PARTS; the views are the part "views".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import msgpack

from engine.lifecycle import SideEffect
from projections.drift_view import TABLE, FoundBy, Views
from projections.mesos_view import MesosTask, MesosView
from projections.scheduler_view import IllegalReport, SchedulerTask, SchedulerView

SNAPSHOT_FORMAT = 1


class SnapshotError(ValueError):
    """A snapshot that cannot be read (wrong format or shape); the caller names where."""


_SCHEDULER_FIELDS = tuple(f.name for f in fields(SchedulerTask))
_MESOS_FIELDS = tuple(f.name for f in fields(MesosTask))
_EFFECTS = {effect.value: effect for effect in SideEffect}
_CELLS = {(c.mesos.value, c.scheduler.value): c for c in TABLE}


def _effects(values: list[str]) -> tuple[SideEffect, ...]:
    return tuple(_EFFECTS[v] for v in values)


def encode_views(views: Views) -> dict[str, Any]:
    """The three views as msgpack-ready data. The drift view's disagreements are not
    stored: they are derived from its cells on decode."""
    scheduler, mesos, drift = views.scheduler, views.mesos, views.drift
    return {
        "scheduler": {
            "tasks": [
                [task_id, *(getattr(t, name) for name in _SCHEDULER_FIELDS)]
                for task_id, t in scheduler.tasks.items()
            ],
            "illegal": [[task_id, *report] for task_id, report in scheduler.illegal.items()],
            "illegal_count": scheduler.illegal_count,
            "last_nid": scheduler.last_nid,
        },
        "mesos": {
            "tasks": [
                [task_id, *(getattr(t, name) for name in _MESOS_FIELDS)]
                for task_id, t in mesos.tasks.items()
            ],
            "framework_id": mesos.framework_id,
            "master_id": mesos.master_id,
            "connected": mesos.connected,
            "last_nid": mesos.last_nid,
        },
        "drift": {
            "cells": [
                [task_id, cell.mesos.value, cell.scheduler.value, since]
                for task_id, (cell, since) in drift.cells.items()
            ],
            "last_nid": drift.last_nid,
        },
    }


def decode_views(data: dict[str, Any]) -> Views:
    """The inverse of encode_views; raises SnapshotError for data of the wrong shape."""
    try:
        return _decode_views(data)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise SnapshotError(f"views do not have the snapshot's shape: {e!r}") from e


def _decode_views(data: dict[str, Any]) -> Views:
    views = Views()
    s, m, d = data["scheduler"], data["mesos"], data["drift"]
    scheduler: SchedulerView = views.scheduler
    effects_at = _SCHEDULER_FIELDS.index("effects")
    for row in s["tasks"]:
        values = row[1:]
        values[effects_at] = _effects(values[effects_at])
        scheduler.tasks[row[0]] = SchedulerTask(*values)
    for task_id, *report in s["illegal"]:
        report[-1] = _effects(report[-1])
        scheduler.illegal[task_id] = IllegalReport(*report)
    scheduler.illegal_count = s["illegal_count"]
    scheduler.last_nid = s["last_nid"]

    mesos: MesosView = views.mesos
    for row in m["tasks"]:
        mesos.tasks[row[0]] = MesosTask(*row[1:])
    mesos.framework_id = m["framework_id"]
    mesos.master_id = m["master_id"]
    mesos.connected = m["connected"]
    mesos.last_nid = m["last_nid"]

    drift = views.drift
    for task_id, row, column, since in d["cells"]:
        cell = _CELLS[row, column]
        entry = (cell, since)
        drift.cells[task_id] = entry
        if TABLE[cell] is not FoundBy.CONSISTENT:
            drift.disagreements[task_id] = entry
    drift.last_nid = d["last_nid"]
    return views


# name -> (encode(ledger state) -> data, decode(data) -> state). The Ledger stores every
# part; parts added by later code (the saga) register here.
PARTS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "views": (encode_views, decode_views),
}


def encode(nid: int, time: float, parts: dict[str, Any]) -> bytes:
    """A whole snapshot as bytes: each named part through its encoder."""
    unknown = parts.keys() - PARTS.keys()
    if unknown:
        raise SnapshotError(f"no encoder for snapshot parts {sorted(unknown)}")
    body = {name: PARTS[name][0](value) for name, value in parts.items()}
    return msgpack.packb(
        {"format": SNAPSHOT_FORMAT, "nid": nid, "time": time, "parts": body}, use_bin_type=True
    )


def decode(payload: bytes) -> tuple[int, float, dict[str, Any]]:
    """(nid, time, parts) of a snapshot; SnapshotError if it cannot be read."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise SnapshotError(f"not a snapshot: {e}") from e
    if not isinstance(data, dict) or "format" not in data:
        raise SnapshotError("not a snapshot: no format field")
    if data["format"] > SNAPSHOT_FORMAT:
        raise SnapshotError(
            f"snapshot format {data['format']} is newer than this build reads ({SNAPSHOT_FORMAT})"
        )
    parts = {}
    for name, body in data["parts"].items():
        if name not in PARTS:
            raise SnapshotError(f"snapshot has a part this build cannot read: {name!r}")
        parts[name] = PARTS[name][1](body)
    return data["nid"], data["time"], parts
