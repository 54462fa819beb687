"""A replica's leadership, as one table: what each election signal does to its role.

Pure (no ZooKeeper, no clock): engine/election.py feeds it the signals it gets from kazoo
and from its own campaign, and reports each change. Only a LEADER may act (append to the log,
call Mesos); PAUSED is a leader whose ZooKeeper connection is suspended: its session, and so
its leadership, may still be alive, but it cannot know, so it stops acting until the
connection comes back (same session: it still leads, at the same epoch) or the session is
lost (someone else may lead now: it is a standby again).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Role(Enum):
    STANDBY = "standby"  # campaigning (or waiting to) while someone else leads
    LEADER = "leader"
    PAUSED = "paused"  # leader with a suspended connection: must not act
    RESIGNED = "resigned"  # out of the election for good


class Signal(Enum):
    ELECTED = "elected"  # won the lock and bumped the epoch
    SUSPENDED = "suspended"  # connection to ZooKeeper lost; the session may be alive
    RECONNECTED = "reconnected"  # connection back, same session
    LOST = "lost"  # session expired: its lock node (leadership) is gone
    RESIGNED = "resigned"  # left the election on purpose


TRANSITIONS: dict[tuple[Role, Signal], Role] = {
    (Role.STANDBY, Signal.ELECTED): Role.LEADER,
    (Role.STANDBY, Signal.SUSPENDED): Role.STANDBY,
    (Role.STANDBY, Signal.RECONNECTED): Role.STANDBY,
    (Role.STANDBY, Signal.LOST): Role.STANDBY,
    (Role.LEADER, Signal.SUSPENDED): Role.PAUSED,
    (Role.LEADER, Signal.RECONNECTED): Role.LEADER,
    (Role.LEADER, Signal.LOST): Role.STANDBY,
    (Role.PAUSED, Signal.SUSPENDED): Role.PAUSED,
    (Role.PAUSED, Signal.RECONNECTED): Role.LEADER,
    (Role.PAUSED, Signal.LOST): Role.STANDBY,
}
for _role in Role:
    TRANSITIONS[(_role, Signal.RESIGNED)] = Role.RESIGNED
for _signal in Signal:
    TRANSITIONS[(Role.RESIGNED, _signal)] = Role.RESIGNED

# The roles in which a replica may append and call Mesos.
ACTING = frozenset({Role.LEADER})


class IllegalSignal(ValueError):
    """A signal that cannot happen in a role (e.g. elected while already leading)."""

    def __init__(self, role: Role, signal: Signal) -> None:
        super().__init__(f"{signal.value} cannot happen to a replica that is {role.value}")
        self.role = role
        self.signal = signal


@dataclass(frozen=True)
class Change:
    """What one signal did: the role before and after, and the epoch led (None if none)."""

    signal: Signal
    before: Role
    role: Role
    epoch: int | None

    @property
    def acting(self) -> bool:
        """Whether the replica may append and call Mesos now."""
        return self.role in ACTING


@dataclass(frozen=True)
class Leadership:
    """A replica's role and the epoch it leads (kept while PAUSED: the same session may
    come back)."""

    role: Role = Role.STANDBY
    epoch: int | None = None

    def apply(self, signal: Signal, epoch: int | None = None) -> tuple[Leadership, Change]:
        """The leadership after ``signal`` (``epoch``: the one won, for ELECTED)."""
        role = TRANSITIONS.get((self.role, signal))
        if role is None:
            raise IllegalSignal(self.role, signal)
        if signal is Signal.ELECTED and (epoch is None or epoch < 1):
            raise ValueError(f"elected needs the epoch won (>= 1), got {epoch!r}")
        if role not in (Role.LEADER, Role.PAUSED):
            led = None
        else:
            led = epoch if signal is Signal.ELECTED else self.epoch
        after = Leadership(role, led)
        return after, Change(signal, self.role, role, led)
