"""A wall clock watched against a monotonic one: its steps, as ClockStepped events.

The runtime reads both clocks once per tick and hands the readings to `ClockWatch.observe`.
Between two readings both clocks advance alike, whatever the tick's length or a pause of the
process; the wall clock alone moves when it is stepped (NTP, an operator, a VM resumed
after a suspend: the monotonic clock does not count the suspend). A difference larger than
`threshold` is a step: the event says where the wall clock was, where it is, and how much
time passed meanwhile. Pure: the readings are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.events import ClockStepped

# NTP slews offsets below 128 ms and steps larger ones; between two ticks (0.25 s) slewing
# moves the wall clock by well under a millisecond.
DEFAULT_THRESHOLD = 1.0


@dataclass
class ClockWatch:
    """Detects steps of a wall clock from (wall, monotonic) reading pairs."""

    threshold: float = DEFAULT_THRESHOLD
    _last: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0 seconds, got {self.threshold!r}")

    def observe(self, wall: float, monotonic: float) -> ClockStepped | None:
        """The step between the previous reading pair and this one, or None (also for the
        first pair: there is nothing to compare it with)."""
        last, self._last = self._last, (wall, monotonic)
        if last is None:
            return None
        elapsed = monotonic - last[1]
        if abs(wall - last[0] - elapsed) <= self.threshold:
            return None
        return ClockStepped(wall, None, last[0], elapsed)
