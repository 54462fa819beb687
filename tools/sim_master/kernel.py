"""What every part of the simulated cluster shares: the simulated clock and its timers, the
effects going out, the seeded identities, and the armed fault rules.

Pure: time only moves when a driver calls `begin(now)`; the effects the parts produce in
between are collected in `out` and handed back by `take()`.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import random
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from tools.sim_master.config import SimConfig
from tools.sim_master.effects import Effect
from tools.sim_master.faults import RuleBook


class Kernel:
    """The clock, the timer queue, the outgoing effects and the identity RNG of one cluster.

    Timers are (due, sequence, kind, args); `handlers` maps each kind to the function that
    fires it, so firing is a table look-up. The sequence number keeps timers due at the same
    moment in the order they were set, which is what makes a seed reproducible.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._id_rng = random.Random(config.seed)
        self.rules = RuleBook(random.Random(f"faults-{config.seed}"))
        self.clock = 0.0
        self.timers: list[tuple[float, int, str, tuple]] = []
        self._seq = itertools.count()
        self.out: list[Effect] = []
        self.handlers: dict[str, Callable[..., None]] = {}

    # ---------------------------------------------------------------------------- the clock

    def next_deadline(self) -> float | None:
        """The simulated time of the earliest pending timer."""
        return self.timers[0][0] if self.timers else None

    def begin(self, now: float) -> None:
        """Start an entry point at `now`: fire every timer due by then, in order."""
        self.out = []
        timers, handlers = self.timers, self.handlers
        while timers and timers[0][0] <= now:
            due, _, kind, args = heapq.heappop(timers)
            self.clock = max(self.clock, due)
            handlers[kind](*args)
        self.clock = max(self.clock, now)

    def take(self) -> list[Effect]:
        """The effects produced since `begin`."""
        out, self.out = self.out, []
        return out

    def schedule(self, due: float, kind: str, *args: Any) -> None:
        heapq.heappush(self.timers, (due, next(self._seq), kind, args))

    def after(self, seconds: float, kind: str, *args: Any) -> None:
        """A timer `seconds` from the current simulated time."""
        self.schedule(self.clock + seconds, kind, *args)

    # ------------------------------------------------------------------------ identities

    def uuid(self) -> str:
        return str(uuidlib.UUID(int=self._id_rng.getrandbits(128), version=4))

    def update_uuid(self) -> str:
        """A status update's uuid: 16 random bytes, base64 as the v1 JSON API carries it."""
        return base64.b64encode(self._id_rng.getrandbits(128).to_bytes(16, "big")).decode()

    def timestamp(self) -> float:
        return round(self.config.epoch + self.clock, 6)
