"""What the cluster model asks its transport to do, and its answer to one HTTP call."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Emit:
    """Write one event (a RecordIO record) to a subscriber's stream."""

    stream_id: str
    event: dict


@dataclass(frozen=True)
class CloseStream:
    """End a stream: cleanly after what was emitted, or (abort) by cutting the connection."""

    stream_id: str
    abort: bool = False


@dataclass(frozen=True)
class ListenerDown:
    """The master is gone: close every connection and the listening socket (clients get
    'connection refused' rather than 503, which pymesos would retry in a tight loop)."""


@dataclass(frozen=True)
class ListenerUp:
    """A new master is elected: listen again on the same address."""


Effect = Emit | CloseStream | ListenerDown | ListenerUp


@dataclass
class Reply:
    """The answer to one HTTP call: a status, a message for errors, effects, and for
    SUBSCRIBE the new stream's id. `delay` asks the transport to answer that much later."""

    status: int
    message: str = ""
    effects: list[Effect] = field(default_factory=list)
    stream_id: str | None = None
    delay: float = 0.0
