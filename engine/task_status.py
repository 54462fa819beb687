"""A Mesos v1 TaskStatus dict, as pymesos delivers it, checked and made a StatusUpdateReceived.

Everything Mesos may send is named and checked here, once: a malformed status raises a
`MalformedStatus` (a ValueError) naming the field and the value, before anything is written.
The value is shown bounded (depth, length), so that any value, however deep or long, gives
the same kind of one-line error; the exception keeps the value itself in ``value``.
"""

from __future__ import annotations

import difflib
import math
import reprlib
from collections.abc import Mapping
from typing import Any

import msgpack

from engine.events import EMPTY, TASK_STATUS_FIELDS, StatusUpdateReceived
from engine.mesos_states import BY_NAME as _MESOS_STATES
from engine.mesos_states import UnknownTaskState
from engine.times import timestamp_problem

# How a refused value is shown: a few levels and items deep, each text cut short.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel = 4
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlong = 40
_SHOWN_LENGTH = 200
# The deepest nesting msgpack reads back, counting the event's wire array and `extra`.
_DEPTH = 1024


def shown(value: object) -> str:
    """A bounded, safe rendering of any value: never longer than about 200 characters,
    never recursing deeper than a few levels (a nesting 2,000 deep is shown as ``[[[[...]]]]``),
    and a value whose own repr fails is shown by its type."""
    try:
        text = _SHOWN.repr(value)
    except Exception:  # a broken __repr__ that reprlib does not catch itself
        text = f"<{type(value).__name__} object>"
    if len(text) > _SHOWN_LENGTH:
        text = text[:_SHOWN_LENGTH] + "..."
    return text


class MalformedStatus(ValueError):
    """A TaskStatus dict that is not a valid Mesos v1 TaskStatus; names field and value.

    One sentence: ``TaskStatus field 'F' <problem>, got <value>[; <hint>]``."""

    def __init__(self, field: str, value: object, problem: str, hint: str = "") -> None:
        message = f"TaskStatus field {field!r} {problem}, got {shown(value)}"
        # ValueError's, not the next class in a subclass's MRO (UnknownTaskState words its
        # own message): the sentence above is the whole message.
        ValueError.__init__(self, f"{message}; {hint}" if hint else message)
        self.field = field
        self.value = value


class MissingStatusField(MalformedStatus):
    """A required TaskStatus field is absent."""

    def __init__(self, field: str) -> None:
        super().__init__(field, None, "is required")


class InvalidStatusField(MalformedStatus):
    """A TaskStatus field has the wrong shape or type."""


class UnknownStatusState(MalformedStatus, UnknownTaskState):
    """TaskStatus.state is text, but not a Mesos task state name. The message names the
    nearest state when there is one (``RUNNING``: ``TASK_RUNNING``)."""

    def __init__(self, value: object) -> None:
        near = nearest_state(value) if isinstance(value, str) else None
        hint = f"did you mean {near!r}?" if near else ""
        MalformedStatus.__init__(self, "state", value, "is not a Mesos task state", hint)


def nearest_state(name: str) -> str | None:
    """The Mesos task state ``name`` was most likely meant to be: the name with the
    ``TASK_`` prefix or in capitals (``running``, ``RUNNING``), else the closest by
    spelling (``TASK_RUNING``); None when nothing is close."""
    upper = name.strip().upper()
    for candidate in (upper, f"TASK_{upper}"):
        if candidate in _MESOS_STATES:
            return candidate
    for candidate in (upper, f"TASK_{upper}"):
        close = difflib.get_close_matches(candidate, list(_MESOS_STATES), n=1, cutoff=0.8)
        if close:
            return close[0]
    return None


_KNOWN_STATUS_FIELDS = frozenset(TASK_STATUS_FIELDS)


def _id_value(status: Mapping[str, Any], field: str) -> str | None:
    """The text of an optional `{"value": str}` id field."""
    wrapped = status.get(field)
    if wrapped is None:
        return None
    value = wrapped.get("value") if isinstance(wrapped, dict) else None
    if type(value) is not str:
        raise InvalidStatusField(field, wrapped, 'must be {"value": <text>}')
    if not value.isascii():
        _check_unicode(field, value)
    return value


def _optional_text(status: Mapping[str, Any], field: str) -> str | None:
    value = status.get(field)
    if value is not None:
        if not isinstance(value, str):
            raise InvalidStatusField(field, value, "must be text")
        if not value.isascii():
            _check_unicode(field, value)
    return value


def _check_unicode(field: str, value: str) -> None:
    # JSON's "\ud800" escape decodes to a lone surrogate, which UTF-8 (and so msgpack)
    # cannot encode: refused here, by name, instead of failing inside the append.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidStatusField(field, value, f"is not valid Unicode ({e.reason})") from None


def _check_storable(field: str, value: object, stored: object = None) -> None:
    """Refuses a value the log cannot store and read back: an int outside 64 bits, a lone
    surrogate, a map key that is not text (the log reads maps with text keys only, so such
    an update would be written and then make the log unreadable), a set, an object, or a
    nesting deeper than msgpack reads back (1,024 levels: a deeper one packs, then every
    replay of the log would fail on it). ``stored`` is the value as the event's wire array
    holds it (default: the value itself, one level down), so that the depth checked is the
    depth written."""
    try:
        msgpack.unpackb(msgpack.packb([value if stored is None else stored]))
    except (TypeError, ValueError, OverflowError) as e:
        deep = isinstance(e, msgpack.StackError) or str(e).startswith("recursion limit")
        if deep:
            problem = f"is nested too deeply to be stored in the log ({_DEPTH} levels at most)"
        else:
            problem = f"cannot be stored in the log ({e})"
        raise InvalidStatusField(field, value, problem) from None


def status_from_mesos(
    status: Mapping[str, Any],
    *,
    time: float,
    causation: int | None = None,
    received: float | None = None,
) -> StatusUpdateReceived:
    """Validate a TaskStatus dict exactly as pymesos delivers it and make the event.

    ``time`` is the event's time (when the ledger records it). A ``timestamp`` must be
    finite and not negative, and, when ``received`` (the receiving machine's time) is
    given, at most a day after it (engine/times.py): a value in milliseconds is refused
    with a hint that says so.

    Raises a MalformedStatus subclass naming the field and the offending value. Unknown fields
    (data, unreachable_time, check_status, container_status, limitation, anything newer) go
    into extra. Unknown source or reason NAMES are kept, not refused: Mesos adds reasons
    between versions, and refusing an update we must acknowledge would stall the task's
    update stream (the agent re-sends it until acknowledged). An unknown STATE is refused: no
    view could place it.
    """
    if not isinstance(status, dict):
        raise InvalidStatusField("<status>", status, "must be a TaskStatus map")
    get = status.get
    task_id = _id_value(status, "task_id")
    if task_id is None:
        raise MissingStatusField("task_id")
    if not task_id:  # Mesos refuses an empty TaskID; no view could file it under a task
        raise InvalidStatusField("task_id", status["task_id"], "must not be empty")
    state = get("state")
    if state is None:
        raise MissingStatusField("state")
    if not isinstance(state, str):
        raise InvalidStatusField("state", state, "must be text")
    if state not in _MESOS_STATES:
        raise UnknownStatusState(state)
    timestamp = get("timestamp")
    if timestamp is not None:
        if type(timestamp) is not float and (type(timestamp) is not int):
            raise InvalidStatusField("timestamp", timestamp, "must be a number of seconds")
        try:
            timestamp = float(timestamp)
        except OverflowError:  # an int beyond a float's range
            raise InvalidStatusField("timestamp", timestamp, "must be finite") from None
        if not math.isfinite(timestamp):
            raise InvalidStatusField("timestamp", timestamp, "must be finite")
        implausible = timestamp_problem(timestamp, received)
        if implausible is not None:
            raise InvalidStatusField("timestamp", timestamp, *implausible)
    uuid = _optional_text(status, "uuid")
    source = _optional_text(status, "source")
    reason = _optional_text(status, "reason")
    healthy = get("healthy")
    if healthy is not None and type(healthy) is not bool:
        raise InvalidStatusField("healthy", healthy, "must be true or false")
    labels = get("labels")
    if labels is not None:
        # An empty Labels message may arrive as {} (protobuf JSON omits empty repeated fields).
        inner = labels.get("labels", []) if isinstance(labels, dict) else None
        if not isinstance(inner, list) or not labels.keys() <= {"labels"}:
            raise InvalidStatusField("labels", labels, 'must be {"labels": [...]}')
        labels = inner
        if labels:
            _check_storable("labels", labels)
    extra = EMPTY
    if not status.keys() <= _KNOWN_STATUS_FIELDS:
        extra = {k: v for k, v in status.items() if k not in _KNOWN_STATUS_FIELDS}
        try:
            _check_storable("<extra>", extra)
        except InvalidStatusField:
            for key, value in extra.items():  # name the field at fault
                if type(key) is not str:
                    raise InvalidStatusField(
                        repr(key), value, "has a name that is not text"
                    ) from None
                _check_storable(key, value, {key: value})
            raise
    return StatusUpdateReceived(
        time,
        causation,
        task_id,
        str(state),
        _id_value(status, "agent_id"),
        _id_value(status, "executor_id"),
        source,
        reason,
        _optional_text(status, "message"),
        timestamp,
        uuid,
        healthy,
        labels,
        source == "SOURCE_MASTER" and reason == "REASON_RECONCILIATION" and not uuid,
        extra,
    )
