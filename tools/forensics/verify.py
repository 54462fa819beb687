"""Checking a log end to end: every record's checksum, gap-free ids, the index, the unique
index of agent updates, the snapshots, and that the views rebuilt from scratch equal the
newest snapshot. It also warns (without failing: the log is sound, the readers print any
time) about events whose time is not believable as a cluster's clock (tools/forensics/
times.py: NaN, infinite, before 1970, after 2099, e.g. a timestamp in milliseconds).

Reads only. Unlike a replay, it does not stop at the first damaged record: it names every
one (notification id, key, database, what failed) and goes on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import lmdb
import msgpack

from engine.dedup import update_key
from engine.events import StatusUpdateReceived
from engine.ledger_state import STREAM_WIRE, LedgerState
from engine.store import UNIQUE_UPTO, DamagedRecord, NewerLog
from engine.wire import WireError, from_wire
from projections import snapshots
from tools.forensics.times import implausible
from tools.readonly import ReadOnlyLedger

_U64 = struct.Struct(">Q")
_CHUNK = 5000
MAX_WARNINGS = 100  # rows of implausible times listed (all are counted)


class Problem(NamedTuple):
    """One thing found wrong."""

    check: str  # "records", "ids", "index", "unique", "snapshots", "views"
    id: int | None  # the notification id concerned, if one
    database: str | None
    key: str | None  # the record's key, hex
    problem: str


class Check(NamedTuple):
    """One check and how it went."""

    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    records: int = 0
    ledger_events: int = 0
    last_id: int = 0
    snapshots: int = 0
    checks: list[Check] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # the first MAX_WARNINGS
    implausible: int = 0  # events with an implausible time, all of them

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows(ledger: ReadOnlyLedger, upto: int | None) -> Any:
    """(key, value) of the notifications database in key order, in short read txns."""
    store = ledger.datastore
    db = store.dbs["notifications"]
    position = b""
    while True:

        def chunk(txn: Any, position: bytes = position) -> list[tuple[bytes, bytes]]:
            cursor = txn.cursor(db=db)
            found = cursor.set_range(position) if position else cursor.first()
            rows: list[tuple[bytes, bytes]] = []
            while found and len(rows) < _CHUNK:
                rows.append((cursor.key(), cursor.value()))
                found = cursor.next()
            return rows

        rows = store.read(chunk)
        for key, value in rows:
            if upto is not None and len(key) == 8 and _U64.unpack(key)[0] > upto:
                return
            yield key, value
        if len(rows) < _CHUNK:
            return
        position = rows[-1][0] + b"\x00"


def verify(ledger: ReadOnlyLedger, upto: int | None = None) -> Report:
    """Runs every check; `upto` limits the checks to ids at or below it."""
    report = Report()
    problems = report.problems
    store = ledger.datastore
    newest = _check_snapshots(ledger, upto, report)
    compare_at = None if newest is None else newest[0]
    state = LedgerState()
    rebuilt: LedgerState | None = None  # the state right after compare_at
    expected = 1
    seen: set[bytes] = set()
    keyed: dict[bytes, int] = {}  # unique key of each agent update -> where it first is
    damaged = 0
    try:
        for key, value in _rows(ledger, upto):
            report.records += 1
            seen.add(key)
            if len(key) != 8:
                problems.append(
                    Problem("ids", None, "notifications", key.hex(), "key is not a notification id")
                )
                continue
            nid = _U64.unpack(key)[0]
            if compare_at is not None and rebuilt is None and nid > compare_at:
                rebuilt = _copy(state)
            report.last_id = nid
            if nid != expected:
                gap = f"ids {expected}..{nid - 1} are missing" if nid > expected else "out of order"
                problems.append(Problem("ids", nid, "notifications", key.hex(), gap))
            expected = nid + 1
            try:
                record = store.decode("notifications", key, value, nid)
            except (DamagedRecord, NewerLog) as e:
                damaged += 1
                problems.append(
                    Problem("records", nid, "notifications", key.hex(), _what_failed(e))
                )
                continue
            if record[0] != STREAM_WIRE:
                continue
            try:
                event = from_wire(record[2], msgpack.unpackb(record[3]))
            except (WireError, ValueError) as e:
                damaged += 1
                problems.append(Problem("records", nid, "notifications", key.hex(), str(e)))
                continue
            report.ledger_events += 1
            _check_times(report, nid, key, event)
            state.apply(nid, event)
            if type(event) is StatusUpdateReceived and event.uuid is not None:
                keyed.setdefault(update_key(event.task_id, event.uuid), nid)
    except lmdb.Error as e:
        problems.append(Problem("records", None, "notifications", None, f"LMDB: {e}"))
        damaged += 1
    if compare_at is not None and rebuilt is None:
        rebuilt = state
    detail = f"{report.records:,} records read, {damaged} damaged"
    if report.implausible:
        detail += f", {report.implausible:,} event(s) with an implausible time (warnings)"
    report.checks.append(Check("records", damaged == 0, detail))
    gaps = sum(1 for p in problems if p.check == "ids")
    report.checks.append(
        Check(
            "ids",
            gaps == 0,
            f"ids 1..{report.last_id} gap-free" if not gaps else f"{gaps} gap(s) or bad key(s)",
        )
    )
    _check_index(ledger, seen, upto, report)
    _check_unique(ledger, keyed, upto, report)
    _check_views(rebuilt, newest, damaged, report)
    order = ("records", "ids", "index", "unique", "snapshots", "views")
    report.checks.sort(key=lambda c: order.index(c.name))
    return report


def _check_times(report: Report, nid: int, key: bytes, event: Any) -> None:
    """Warns about the event's time (and an update's Mesos timestamp) if implausible."""
    found = [("event time", implausible(event.time))]
    if type(event) is StatusUpdateReceived:
        found.append(("status timestamp", implausible(event.timestamp)))
    bad = [f"{name} {why}" for name, why in found if why is not None]
    if not bad:
        return
    report.implausible += 1
    if len(report.warnings) < MAX_WARNINGS:
        what = f"implausible time: {'; '.join(bad)}"
        report.warnings.append(Problem("records", nid, "notifications", key.hex(), what))


def _copy(state: LedgerState) -> LedgerState:
    """A deep copy of a state, through the snapshot encoding (what snapshots compare)."""
    parts = state.parts()
    return LedgerState.from_parts(
        {name: snapshots.PARTS[name][1](snapshots.PARTS[name][0](v)) for name, v in parts.items()}
    )


def _what_failed(error: Exception) -> str:
    cause = error.__cause__
    return str(cause) if cause is not None else str(error)


def _check_index(
    ledger: ReadOnlyLedger, seen: set[bytes], upto: int | None, report: Report
) -> None:
    store = ledger.datastore
    db = store.dbs.get("index")
    if db is None:
        report.checks.append(Check("index", True, "no index"))
        return

    def entries(txn: Any) -> list[tuple[bytes, bytes]]:
        return list(txn.cursor(db=db))

    bad = 0
    count = 0
    for key, value in store.read(entries):
        if len(value) == 8 and upto is not None and _U64.unpack(value)[0] > upto:
            continue
        count += 1
        if value not in seen:
            bad += 1
            position = _U64.unpack(value)[0] if len(value) == 8 else None
            report.problems.append(
                Problem(
                    "index",
                    position,
                    "index",
                    key.hex(),
                    f"points at notification id {position}, which is not in the log",
                )
            )
    report.checks.append(Check("index", bad == 0, f"{count:,} entries, {bad} dangling"))


def _check_unique(
    ledger: ReadOnlyLedger, keyed: dict[bytes, int], upto: int | None, report: Report
) -> None:
    """The unique index (engine/dedup.py update_key -> the id of the update) against the
    updates in the log: every update up to the index's mark has its key (else a re-delivery
    of it would be recorded again), and every key points at an update that has it."""
    store = ledger.datastore
    db = store.dbs.get("unique")
    if db is None:
        report.checks.append(
            Check("unique", True, "no unique index yet (a Ledger builds it when it opens the log)")
        )
        return
    stored = dict(store.read(lambda txn: list(txn.cursor(db=db))))
    mark = stored.pop(UNIQUE_UPTO, None)
    upto_mark = 0 if mark is None else _U64.unpack(mark)[0]
    bad = 0

    def problem(nid: int | None, key: bytes, what: str) -> None:
        nonlocal bad
        bad += 1
        report.problems.append(Problem("unique", nid, "unique", key.hex(), what))

    for key, nid in keyed.items():
        if nid <= upto_mark and key not in stored:
            problem(nid, key, f"the update at id {nid} has no key: a re-delivery would be kept")
    for key, value in stored.items():
        nid = _U64.unpack(value)[0] if len(value) == 8 else None
        if nid is None:
            problem(None, key, f"holds {value!r}, not a notification id")
        elif upto is not None and nid > upto:
            continue
        elif keyed.get(key) != nid:
            where = keyed.get(key)
            problem(
                nid,
                key,
                f"points at id {nid}, which holds no update with this key"
                if where is None
                else f"points at id {nid}, but the update is first at id {where}",
            )
    report.checks.append(
        Check("unique", bad == 0, f"{len(stored):,} keys, updates up to id {upto_mark}, {bad} bad")
    )


def _check_snapshots(
    ledger: ReadOnlyLedger, upto: int | None, report: Report
) -> tuple[int, LedgerState] | None:
    """Checks every snapshot's checksum and shape; returns the newest readable one."""
    newest = None
    bad = 0
    items = [s for s in ledger.snapshots() if upto is None or s.nid <= upto]
    report.snapshots = len(items)
    for info in items:
        try:
            state = ledger.check_snapshot(info.nid)
        except DamagedRecord as e:
            bad += 1
            report.problems.append(
                Problem("snapshots", info.nid, "snapshots", e.key.hex(), _what_failed(e))
            )
            continue
        except snapshots.SnapshotError as e:
            bad += 1
            report.problems.append(
                Problem(
                    "snapshots", info.nid, "snapshots", info.nid.to_bytes(8, "big").hex(), str(e)
                )
            )
            continue
        newest = (info.nid, state)
    report.checks.append(
        Check("snapshots", bad == 0, f"{len(items)} snapshot(s), {bad} unreadable")
    )
    return newest


def _check_views(
    rebuilt: LedgerState | None,
    newest: tuple[int, LedgerState] | None,
    damaged: int,
    report: Report,
) -> None:
    if newest is None or rebuilt is None:
        report.checks.append(Check("views", True, "no snapshot to compare with"))
        return
    nid, snapshot = newest
    if damaged:
        report.checks.append(
            Check("views", False, "not compared: damaged records prevent a faithful rebuild")
        )
        return
    if rebuilt.parts() == snapshot.parts():
        report.checks.append(
            Check("views", True, f"views rebuilt from scratch equal the snapshot at id {nid}")
        )
        return
    report.problems.append(
        Problem(
            "views",
            nid,
            "snapshots",
            nid.to_bytes(8, "big").hex(),
            "the views rebuilt from scratch differ from the snapshot: "
            + _difference(rebuilt, snapshot),
        )
    )
    report.checks.append(Check("views", False, f"differ from the snapshot at id {nid}"))


def _difference(a: LedgerState, b: LedgerState) -> str:
    """Where two states first differ, for the report."""
    va, vb = a.views, b.views
    for name in ("scheduler", "mesos"):
        view_a, view_b = getattr(va, name), getattr(vb, name)
        for task_id in sorted(set(view_a.tasks) | set(view_b.tasks)):
            ra, rb = view_a.record(task_id), view_b.record(task_id)
            if ra != rb:
                return f"{name} view, task {task_id}: {ra} vs {rb}"
    if va.drift.drift() != vb.drift.drift():
        return "the drift view"
    return "the dedup memory or another part"
