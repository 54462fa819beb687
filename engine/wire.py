"""The wire form of an event: a msgpack-friendly array, and the rules for later versions.

    [schema_version, time, causation, <kind fields...>, extra]

A later schema version may only APPEND kind fields (before `extra`), each with a default, so
an old reader keeps the surplus (under NEWER_FIELDS in extra) and a new reader fills fields
an old writer did not have from their defaults. The kinds themselves are engine/events.py's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from engine.events import EVENT_KINDS, KINDS

# Where from_wire keeps the positional fields of a NEWER schema version that this code does not
# know: extra[NEWER_FIELDS] = {"version": <writer's version>, "fields": [<surplus values>]}.
NEWER_FIELDS = "__newer_fields__"

# topic -> (class, schema version, wire length). Wire length counts the version slot.
_WIRE: dict[str, tuple[type, int, int]] = {
    kind.topic: (kind, kind.schema_version, len(kind._fields) + 1) for kind in EVENT_KINDS
}
_new = tuple.__new__


class WireError(ValueError):
    """A stored event array that cannot be read; names the topic and the problem."""

    def __init__(self, topic: object, problem: str) -> None:
        super().__init__(f"event {topic!r}: {problem}")
        self.topic = topic
        self.problem = problem


class UnknownTopic(WireError):
    """The topic names no registered event kind."""

    def __init__(self, topic: object) -> None:
        super().__init__(topic, f"unknown topic (known: {', '.join(KINDS)})")


class MalformedWire(WireError):
    """The array does not have the shape of its kind's schema."""


def topic_of(event: NamedTuple) -> str:
    """The stable topic string of an event."""
    return type(event).topic


def to_wire(event: NamedTuple) -> list[Any]:
    """`[schema_version, time, causation, fields..., extra]`, ready for msgpack."""
    wire = [event.schema_version, *event]
    if type(wire[-1]) is not dict:
        wire[-1] = dict(wire[-1])
    return wire


def from_wire(topic: str, wire: list[Any] | tuple[Any, ...]) -> NamedTuple:
    """The event that `to_wire` produced `wire` from, or a WireError naming topic and problem.

    Arrays of a newer schema version with extra positional fields are accepted: the surplus is
    kept in extra[NEWER_FIELDS]. Arrays of an older version get the missing trailing fields'
    defaults. Field types are not re-checked here (they were checked before the append).
    """
    try:
        kind, version, width = _WIRE[topic]
    except (KeyError, TypeError):
        raise UnknownTopic(topic) from None
    wire_type = type(wire)
    if (
        (wire_type is list or wire_type is tuple)
        and len(wire) == width
        and wire[0] == version
        and type(wire[0]) is int  # True == 1, but a bool is not a version
        and type(wire[-1]) is dict
    ):
        return _new(kind, wire[1:])
    return _from_other_wire(topic, kind, version, width, wire)


def _from_other_wire(topic: str, kind: type, version: int, width: int, wire: Any) -> NamedTuple:
    """The slow path: other versions, and precise errors for malformed arrays."""
    if not isinstance(wire, list | tuple):
        raise MalformedWire(topic, f"expected an array, got {type(wire).__name__}")
    if not wire:
        raise MalformedWire(topic, "empty array (no schema version)")
    wire_version = wire[0]
    if type(wire_version) is not int or wire_version < 1:
        raise MalformedWire(topic, f"schema version must be a positive int, got {wire_version!r}")
    if len(wire) < 2 or not isinstance(wire[-1], dict):
        raise MalformedWire(topic, f"last element must be the extra map, got {wire[-1]!r}")
    fields, extra = list(wire[1:-1]), wire[-1]
    known = width - 2  # positional fields of our version, without version and extra
    if wire_version == version and len(fields) != known:
        raise MalformedWire(topic, f"version {version} has {known} fields, got {len(fields)}")
    if wire_version > version:
        if len(fields) < known:
            raise MalformedWire(
                topic,
                f"newer version {wire_version} has fewer fields ({len(fields)}) than "
                f"version {version} ({known}): fields may only be appended",
            )
        extra = dict(extra)
        extra[NEWER_FIELDS] = {"version": wire_version, "fields": fields[known:]}
        fields = fields[:known]
    elif wire_version < version:
        if len(fields) > known:
            raise MalformedWire(
                topic, f"older version {wire_version} has more fields than version {version}"
            )
        defaults = kind._field_defaults
        for name in kind._fields[len(fields) : known]:
            if name not in defaults:
                raise MalformedWire(
                    topic,
                    f"older version {wire_version} lacks field {name!r}, which has no default",
                )
            fields.append(defaults[name])
    return _new(kind, (*fields, extra))
