"""Snapshots of the views: their encoding as plain msgpack data (pure: data in, bytes out).

A snapshot holds the views as of one notification id. It is data with explicit fields,
never a pickle: a snapshot written by one version of taskledger can be checked and read by
another, and a damaged one fails its checksum (engine.codec frame) instead of loading
half-built objects. Where snapshots live and how they are chosen is the Ledger's business.

Layout (msgpack map):
    {"format": 2, "nid": N, "time": <snapshot time>, "parts": {name: data, ...}}
Each part is encoded by a function registered in PARTS; the views are the part "views".

Format 2 stores the views as they live in memory (projections/columns.py): the task ids once,
in row order; the intern table; each column as its raw array bytes (little- or big-endian as
recorded, swapped on read if needed); and the code tables the columns refer to (state names,
side-effect tuples, cells), so a build whose tables differ remaps the codes instead of
misreading them. Format 1 (one msgpack array per task and view) is still read.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import msgpack

from engine import drift_table
from engine.drift_table import TABLE, Cell
from engine.lifecycle import SideEffect
from projections import drift_view as _drift
from projections import mesos_view as _mesos
from projections import scheduler_view as _scheduler
from projections.columns import Strings, TaskIndex
from projections.drift_view import DriftView
from projections.mesos_view import MesosTask, MesosView
from projections.scheduler_view import IllegalReport, SchedulerTask, SchedulerView
from projections.views import Views

SNAPSHOT_FORMAT = 2


class SnapshotError(ValueError):
    """A snapshot that cannot be read (wrong format or shape); the caller names where."""


_EFFECTS = {effect.value: effect for effect in SideEffect}
_CELLS = {(c.mesos.value, c.scheduler.value): c for c in TABLE}


def _effects(values: list[str]) -> tuple[SideEffect, ...]:
    return tuple(_EFFECTS[v] for v in values)


# --- format 2 -----------------------------------------------------------------------------------


def _cell_names(cell: Cell | None) -> list[str] | None:
    return None if cell is None else [cell.mesos.value, cell.scheduler.value]


def encode_views(views: Views) -> dict[str, Any]:
    """The three views as msgpack-ready data (columns as raw bytes). The drift view's
    disagreements are not stored: they are derived from its cells on decode."""
    scheduler, mesos, drift = views.scheduler, views.mesos, views.drift
    return {
        "byteorder": sys.byteorder,
        "tasks": list(views.index.rows),
        "strings": views.index.strings.values,
        "scheduler": {
            "states": _scheduler.STATES,
            "effects": [[e.value for e in effects] for effects in _scheduler.EFFECTS],
            "columns": scheduler.columns(),
            "illegal": [[task_id, *report] for task_id, report in scheduler.illegal.items()],
            "illegal_count": scheduler.illegal_count,
            "last_nid": scheduler.last_nid,
        },
        "mesos": {
            "states": _mesos.STATES,
            "columns": mesos.columns(),
            "stale": [[row, count, nid] for row, (count, nid) in mesos._stale.items()],
            "framework_id": mesos.framework_id,
            "master_id": mesos.master_id,
            "connected": mesos.connected,
            "last_nid": mesos.last_nid,
        },
        "drift": {
            "cells": [_cell_names(cell) for cell in drift_table.CELLS],
            "columns": drift.columns(),
            "last_nid": drift.last_nid,
        },
    }


def decode_views(data: dict[str, Any]) -> Views:
    """The inverse of encode_views; raises SnapshotError for data of the wrong shape."""
    try:
        if "tasks" in data:
            return _decode_views(data)
        return _decode_views_v1(data)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise SnapshotError(f"views do not have the snapshot's shape: {e!r}") from e


def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise SnapshotError(f"{what} is not a count: {value!r}")
    return value


def _text(value: Any, what: str) -> str | None:
    if value is not None and type(value) is not str:
        raise SnapshotError(f"{what} is not text: {value!r}")
    return value


def _flag(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise SnapshotError(f"{what} is not true or false: {value!r}")
    return value


def _remap(stored: list[Any], ours: dict[Any, int], what: str) -> bytes | None:
    """A bytes.translate table from stored codes to ours; None if they are the same."""
    if len(stored) > 256:
        raise SnapshotError(f"{len(stored)} {what} codes do not fit one byte")
    table = bytearray(256)
    for code, value in enumerate(stored):
        if value is None:
            continue
        if value not in ours:
            raise SnapshotError(f"snapshot names a {what} this build does not know: {value!r}")
        table[code] = ours[value]
    if all(table[code] == code for code, value in enumerate(stored) if value is not None):
        return None
    return bytes(table)


def _columns(
    stored: dict[str, bytes],
    typecodes: dict[str, str],
    count: int,
    swap: bool,
    codes: dict[str, tuple[int, bytes | None]],
) -> dict[str, bytes]:
    """Checks each column's length and code range; swaps byte order and remaps codes."""
    out = {}
    for name, typecode in typecodes.items():
        raw = stored[name]
        if type(raw) is not bytes:
            raise SnapshotError(f"column {name!r} is not bytes")
        col = array(typecode)
        if len(raw) != count * col.itemsize:
            raise SnapshotError(
                f"column {name!r} has {len(raw)} bytes for {count} tasks of {col.itemsize}"
            )
        if swap and col.itemsize > 1:
            col.frombytes(raw)
            col.byteswap()
            raw = col.tobytes()
        if name in codes:
            limit, table = codes[name]
            if table is not None:
                raw = raw.translate(table)
            check = array(typecode, raw)
            if count and not 0 <= min(check) <= max(check) < limit:
                raise SnapshotError(f"column {name!r} holds codes outside 0..{limit - 1}")
        out[name] = raw
    return out


def _decode_views(data: dict[str, Any]) -> Views:
    ids = data["tasks"]
    if type(ids) is not list:
        raise SnapshotError("tasks is not a list")
    count = len(ids)
    rows = dict(zip(ids, range(count), strict=True))
    if len(rows) != count:
        raise SnapshotError("a task id appears twice")
    strings = data["strings"]
    if type(strings) is not list or not strings or strings[0] is not None:
        raise SnapshotError("strings is not an intern table (code 0 must be None)")
    index = TaskIndex(rows, Strings(strings))
    swap = data["byteorder"] != sys.byteorder
    n_strings = len(strings)

    s, m, d = data["scheduler"], data["mesos"], data["drift"]
    states = _remap(s["states"], _scheduler.STATE_CODE, "scheduler state")
    effects = [tuple(_effects(e)) for e in s["effects"]]
    effects_table = _remap(effects, _scheduler.EFFECTS_CODE, "side-effect list")
    scheduler = SchedulerView(
        index,
        _columns(
            s["columns"],
            _scheduler.COLUMNS,
            count,
            swap,
            {
                "state": (len(_scheduler.STATES), states),
                "previous": (len(_scheduler.STATES), states),
                "effects": (len(_scheduler.EFFECTS), effects_table),
                "job": (n_strings, None),
                "instance": (n_strings, None),
                "agent": (n_strings, None),
            },
        ),
    )
    for task_id, *report in s["illegal"]:
        report[-1] = _effects(report[-1])
        scheduler.illegal[task_id] = IllegalReport(*report)
    scheduler.illegal_count = _count(s["illegal_count"], "illegal_count")
    scheduler.last_nid = _count(s["last_nid"], "scheduler last_nid")

    mesos_states = _remap(m["states"], _mesos.STATE_CODE, "Mesos state")
    mesos = MesosView(
        index,
        _columns(
            m["columns"],
            _mesos.COLUMNS,
            count,
            swap,
            {
                "state": (len(_mesos.STATES), mesos_states),
                "source": (n_strings, None),
                "reason": (n_strings, None),
                "agent": (n_strings, None),
            },
        ),
    )
    for row, stale, stale_nid in m["stale"]:
        if not 0 <= row < count:
            raise SnapshotError(f"stale count for row {row} of {count}")
        mesos._stale[row] = (stale, stale_nid)
    mesos.framework_id = _text(m["framework_id"], "framework_id")
    mesos.master_id = _text(m["master_id"], "master_id")
    mesos.connected = _flag(m["connected"], "connected")
    mesos.last_nid = _count(m["last_nid"], "mesos last_nid")

    cells = [None if c is None else _CELLS[tuple(c)] for c in d["cells"]]
    cells_table = _remap(cells, drift_table.CELL_CODE, "drift cell")
    drift = DriftView(
        scheduler,
        mesos,
        _columns(
            d["columns"],
            _drift.COLUMNS,
            count,
            swap,
            {"cell": (len(drift_table.CELLS), cells_table)},
        ),
    )
    drift.last_nid = _count(d["last_nid"], "drift last_nid")
    return Views(scheduler, mesos, drift)


# --- format 1: one array per task and view ----------------------------------------------------

_SCHEDULER_FIELDS = tuple(f.name for f in fields(SchedulerTask))
_MESOS_FIELDS = tuple(f.name for f in fields(MesosTask))


def _decode_views_v1(data: dict[str, Any]) -> Views:
    views = Views()
    s, m, d = data["scheduler"], data["mesos"], data["drift"]
    scheduler: SchedulerView = views.scheduler
    effects_at = _SCHEDULER_FIELDS.index("effects")
    for row in s["tasks"]:
        values = row[1:]
        values[effects_at] = _effects(values[effects_at])
        scheduler.put(row[0], SchedulerTask(*values))
    for task_id, *report in s["illegal"]:
        report[-1] = _effects(report[-1])
        scheduler.illegal[task_id] = IllegalReport(*report)
    scheduler.illegal_count = _count(s["illegal_count"], "illegal_count")
    scheduler.last_nid = _count(s["last_nid"], "scheduler last_nid")

    mesos: MesosView = views.mesos
    for row in m["tasks"]:
        mesos.put(row[0], MesosTask(*row[1:]))
    mesos.framework_id = _text(m["framework_id"], "framework_id")
    mesos.master_id = _text(m["master_id"], "master_id")
    mesos.connected = _flag(m["connected"], "connected")
    mesos.last_nid = _count(m["last_nid"], "mesos last_nid")

    drift = views.drift
    for task_id, row, column, since in d["cells"]:
        drift.put(task_id, _CELLS[row, column], since)
    drift.last_nid = _count(d["last_nid"], "drift last_nid")
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
    # A snapshot is only a cache of the log: anything of the wrong shape in it, even under a
    # good checksum, is refused with a SnapshotError (the reader skips it and replays).
    try:
        return _decode_snapshot(data)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise SnapshotError(f"snapshot does not have the snapshot's shape: {e!r}") from e


def _decode_snapshot(data: dict[str, Any]) -> tuple[int, float, dict[str, Any]]:
    fmt, nid, taken, body = data["format"], data["nid"], data["time"], data["parts"]
    if type(fmt) is not int or fmt < 1:
        raise SnapshotError(f"snapshot format is not a version number: {fmt!r}")
    if fmt > SNAPSHOT_FORMAT:
        raise SnapshotError(
            f"snapshot format {fmt} is newer than this build reads ({SNAPSHOT_FORMAT})"
        )
    if type(nid) is not int or nid < 0:
        raise SnapshotError(f"snapshot nid is not a notification id: {nid!r}")
    if type(taken) not in (int, float):
        raise SnapshotError(f"snapshot time is not a number: {taken!r}")
    if not isinstance(body, dict):
        raise SnapshotError(f"snapshot parts are a {type(body).__name__}, not a map")
    parts = {}
    for name, part in body.items():
        if name not in PARTS:
            raise SnapshotError(f"snapshot has a part this build cannot read: {name!r}")
        parts[name] = PARTS[name][1](part)
    return nid, float(taken), parts
