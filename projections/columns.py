"""Columnar storage for the views: one task index shared by the views, one array per field.

Why columns: one slots object per task per view cost ~550 bytes per task and view (the object,
its boxed floats and ints, a dict entry per view). Here a task is one dict entry (task id ->
row) shared by every view of a `Views`, plus one cell per field in `array` columns (8 bytes
for a float or an id, 1 for a state code) and strings as small int codes into one intern
table. Records (SchedulerTask, MesosTask) are built on demand when someone asks for one.

- `TaskIndex`: task id -> row. Rows are never removed, so the dict's order IS row order.
  Columns register with the index; when rows outgrow their capacity, every column grows at
  once (zero-filled), so a row's cells exist in every column before the row is in the dict
  (a reader in another thread never sees a row without its cells). Zero is every column's
  "nothing yet" (state code 0 = the view does not know the task).
- `Strings`: value <-> code (0 is None), for the repeated values of a field (jobs, agents,
  sources, reasons, instance numbers): a few thousand distinct values over millions of rows.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from typing import Any


class Strings:
    """An intern table: each distinct value gets a small int code; code 0 is None."""

    __slots__ = ("codes", "values")

    def __init__(self, values: list[Any] | None = None) -> None:
        self.values: list[Any] = [None] if values is None else values
        self.codes: dict[Any, int] = {value: code for code, value in enumerate(self.values)}

    def code(self, value: Any) -> int:
        """The code of `value`, adding it if new."""
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.values)
            self.values.append(value)
        return code

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Strings):
            return NotImplemented
        return self.values == other.values

    __hash__ = None  # type: ignore[assignment]  # mutable


class TaskIndex:
    """task id -> row, and the columns that hold one cell (or `width` bytes) per row."""

    __slots__ = ("rows", "strings", "_columns", "_capacity")

    def __init__(self, rows: dict[str, int] | None = None, strings: Strings | None = None):
        self.rows: dict[str, int] = {} if rows is None else rows
        self.strings = Strings() if strings is None else strings
        self._columns: list[tuple[array | bytearray, int]] = []
        self._capacity = len(self.rows)

    def column(self, typecode: str, data: bytes | None = None) -> array:
        """A new zero-filled column of `typecode` (or one read from `data`, one cell per
        row), registered so it grows with the index."""
        col = array(typecode)
        if data:
            col.frombytes(data)
        if len(col) > self._capacity:
            raise ValueError(f"column of {len(col)} cells for {self._capacity} rows")
        col.frombytes(bytes((self._capacity - len(col)) * col.itemsize))
        self._columns.append((col, 1))
        return col

    def slots(self, width: int, data: bytes | None = None) -> bytearray:
        """A new zero-filled bytearray of `width` bytes per row (or `data`), registered."""
        col = bytearray(data or b"")
        if len(col) > self._capacity * width:
            raise ValueError(f"{len(col)} bytes for {self._capacity} rows of {width}")
        col.extend(bytes(self._capacity * width - len(col)))
        self._columns.append((col, width))
        return col

    def add(self, task_id: str) -> int:
        """The row of a task not yet in the index (the caller checked)."""
        rows = self.rows
        row = len(rows)
        if row >= self._capacity:
            self._grow(row + 1)
        rows[task_id] = row
        return row

    def reserve(self, rows: int) -> None:
        """Room for `rows` rows without growing: while a reader holds the columns' buffers
        (the replay kernel does), an array cannot be resized."""
        if rows > self._capacity:
            self._grow(rows)

    def _grow(self, needed: int) -> None:
        # Geometric (1/8) growth: amortised O(1) per row, at most ~12% slack.
        new = max(needed, self._capacity + (self._capacity >> 3) + 1024)
        extra = new - self._capacity
        for col, width in self._columns:
            if type(col) is bytearray:
                col.extend(bytes(extra * width))
            else:
                col.frombytes(bytes(extra * col.itemsize))
        self._capacity = new

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"TaskIndex({len(self.rows)} tasks)"


def cells(col: array | bytearray, count: int, width: int = 1) -> bytes:
    """The first `count` rows of a column as bytes (what a snapshot stores)."""
    if type(col) is bytearray:
        return bytes(col[: count * width])
    return memoryview(col)[:count].tobytes()


class RowRecords(Mapping[str, Any]):
    """The read-only Mapping face of a columnar view: task id -> its record, built on each
    access (the view stores columns, not objects).

    The view provides ``index`` (the shared TaskIndex), ``_state`` (0 for rows the view does
    not know), ``_count``, ``record(task_id)`` and ``_record(row)``.
    """

    __slots__ = ("_view", "_label")

    def __init__(self, view: Any, label: str) -> None:
        self._view = view
        self._label = label

    def __getitem__(self, task_id: str) -> Any:
        task = self._view.record(task_id)
        if task is None:
            raise KeyError(task_id)
        return task

    def get(self, task_id: str, default: Any = None) -> Any:
        view = self._view
        row = view.index.rows.get(task_id)
        if row is None or not view._state[row]:
            return default
        return view._record(row)

    def __contains__(self, task_id: object) -> bool:
        row = self._view.index.rows.get(task_id)
        return row is not None and self._view._state[row] != 0

    def __iter__(self) -> Iterator[str]:
        state = self._view._state
        return (task_id for task_id, row in self._view.index.rows.items() if state[row])

    def __len__(self) -> int:
        return self._view._count

    def items(self) -> Any:
        view = self._view
        state = view._state
        return [
            (task_id, view._record(row)) for task_id, row in view.index.rows.items() if state[row]
        ]

    def __repr__(self) -> str:
        return f"<{len(self)} {self._label}>"
