"""The dedup memory: the uuid of each task's latest agent/executor update, and the key by
which the log remembers every update it recorded.

Agents re-send an update until it is acknowledged (one outstanding per task), and a re-sent
update carries the same uuid, so the latest uuid per task answers "already recorded?" for
every re-delivery Mesos makes, from memory. Any other re-delivery (an older update after a
newer one: a replayed capture, a reordering transport) is found by its `update_key` in the
log's unique index, written in the same transaction as the update (engine/ledger.py).

Stored as one 24-byte slot per row of the views' TaskIndex (projections/columns.py): a Mesos
uuid is 16 bytes, which pymesos hands over as 24 characters of base64 text, so the text itself
fits the slot with no decoding on the replay path. An all-zero slot means "no uuid". Anything
else (another length, non-ASCII, a NUL) is kept as is in a small dict, so nothing is lost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from projections.columns import TaskIndex
from projections.snapshots import SnapshotError

WIDTH = 24  # len(base64 of 16 bytes)


def update_key(task_id: str, uuid: str) -> bytes:
    """The idempotency key of an agent update in the log's ``unique`` database: every
    update ever recorded has one (engine/store.py), so a re-delivery of ANY earlier update,
    not only the latest, is found. A 128-bit digest of (task, uuid): fixed-size keys well
    under LMDB's limit whatever the task id's length."""
    return (
        b"u"
        + hashlib.blake2b(
            f"{task_id}\0{uuid}".encode("utf-8", "surrogatepass"), digest_size=16
        ).digest()
    )


_EMPTY = bytes(WIDTH)


class LastUuids(Mapping[str, str]):
    """task id -> the uuid of its latest agent update (a read-only Mapping plus `remember`)."""

    __slots__ = ("index", "_slots", "_other")

    def __init__(self, index: TaskIndex, data: Any = None) -> None:
        """Empty, or from a plain dict {task: uuid}, or from `data()` of another memory."""
        self.index = index
        self._other: dict[str, str] = {}
        if data is None or isinstance(data, dict):
            self._slots = index.slots(WIDTH)
            for task_id, uuid in (data or {}).items():
                self.remember(task_id, uuid)
            return
        if len(data) != 2:
            raise SnapshotError(f"dedup part has {len(data)} items, not 2")
        slots, other = data
        if type(slots) is not bytes:
            raise SnapshotError(f"dedup slots are a {type(slots).__name__}, not bytes")
        if len(slots) != len(index) * WIDTH:
            raise SnapshotError(f"dedup slots of {len(slots)} bytes for {len(index)} tasks")
        if not isinstance(other, dict):
            raise SnapshotError("dedup extras are not a map")
        self._slots = index.slots(WIDTH, slots)
        self._other.update(other)

    def remember(self, task_id: str, uuid: Any) -> None:
        """`uuid` is now the task's latest."""
        row = self.index.rows.get(task_id)
        if row is None:
            row = self.index.add(task_id)
        at = row * WIDTH
        if type(uuid) is str and len(uuid) == WIDTH and uuid.isascii() and "\0" not in uuid:
            self._slots[at : at + WIDTH] = uuid.encode("ascii")
            if self._other:
                self._other.pop(task_id, None)
        else:
            self._slots[at : at + WIDTH] = _EMPTY
            self._other[task_id] = uuid

    def get(self, task_id: str, default: Any = None) -> Any:
        if self._other:
            uuid = self._other.get(task_id)
            if uuid is not None:
                return uuid
        row = self.index.rows.get(task_id)
        if row is None:
            return default
        at = row * WIDTH
        if not self._slots[at]:
            return default
        return self._slots[at : at + WIDTH].decode("ascii")

    def __getitem__(self, task_id: str) -> str:
        uuid = self.get(task_id)
        if uuid is None:
            raise KeyError(task_id)
        return uuid

    def __contains__(self, task_id: object) -> bool:
        return self.get(task_id) is not None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        slots, other = self._slots, self._other
        for task_id, row in self.index.rows.items():
            if task_id in other or slots[row * WIDTH]:
                yield task_id

    def __len__(self) -> int:
        count = len(self.index)
        present = count - self._slots[0 : count * WIDTH : WIDTH].count(0)
        return present + len(self._other)  # a task is in one or the other, never both

    def data(self) -> list[Any]:
        """[slots as bytes, the extras]: what a snapshot stores (see engine.ledger)."""
        return [bytes(self._slots[: len(self.index) * WIDTH]), dict(self._other)]

    def __repr__(self) -> str:
        return f"<uuids of {len(self)} tasks>"


def encode(memory: LastUuids | dict[str, str]) -> Any:
    """The snapshot part "dedup"."""
    return memory.data() if isinstance(memory, LastUuids) else dict(memory)


def decode(data: Any) -> Any:
    """The snapshot part "dedup", as LastUuids(index, data) takes it (a list, or a plain
    {task: uuid} map from snapshots of format 1)."""
    if isinstance(data, dict):
        if not all(type(k) is str for k in data):
            raise SnapshotError("dedup map has a task id that is not text")
        return data
    if not isinstance(data, list):
        raise SnapshotError(f"dedup part is a {type(data).__name__}")
    if len(data) != 2 or type(data[0]) is not bytes or not isinstance(data[1], dict):
        raise SnapshotError("dedup part is not [slots as bytes, extras as a map]")
    if not all(type(k) is str for k in data[1]):
        raise SnapshotError("dedup extras have a task id that is not text")
    return data
