"""Times at the door: what a time argument and a TaskStatus timestamp may be.

Every time the Ledger records is epoch seconds as a float. Two kinds are checked here, once,
before anything is appended:

- a time a caller hands the Ledger (``time=``, ``now=``): any number within `MAX_TIME` of
  the epoch (a virtual clock may start at 0, or below); anything else is a `BadTime` naming
  the argument: a NaN compares false with everything (no timer, schedule or ``--as-of``
  could place it), an infinity or a huge value overflows the saga's schedule arithmetic,
  and a value in milliseconds (1.7e12) is beyond the bound and named as such;
- a TaskStatus's own ``timestamp`` (the agent's or master's clock): finite, not negative,
  and at most `MAX_AHEAD` (a day) after the time it was received. A day is far more than
  the clock skew of a working cluster and far less than the factor of 1000 a timestamp in
  milliseconds is off by; when the value scaled down by 1000 (or 1e6, 1e9) is a plausible
  date, the error says so ("milliseconds?").

Pure: no clock; the reference time is an argument.
"""

from __future__ import annotations

import math
import reprlib
from datetime import UTC, datetime

# How far after its receipt a status's timestamp may lie: a day of clock skew.
MAX_AHEAD = 86_400.0
# The largest time argument, either side of the epoch (about the year 5100): every sum the
# saga's timers form stays far inside a float's range, and milliseconds lie beyond it.
MAX_TIME = 1e11
# Scaled-down values below this (2000-01-01) are not taken for a plausible date in a hint.
_PLAUSIBLE_SINCE = 946_684_800.0
# A timestamp off by one of these factors is in that unit, not in seconds.
_UNITS = ((1e3, "milliseconds"), (1e6, "microseconds"), (1e9, "nanoseconds"))


class BadTime(ValueError):
    """A time argument that is not a number of seconds within `MAX_TIME` of the epoch;
    names the argument and the value (and the unit it looks to be in, if any)."""

    def __init__(self, name: str, value: object, hint: str = "") -> None:
        message = (
            f"{name} must be a finite number of seconds within {MAX_TIME:g} of the epoch, "
            f"got {reprlib.repr(value)}"
        )
        super().__init__(f"{message}; {hint}" if hint else message)
        self.name = name
        self.value = value


def check_time(name: str, value: object) -> float:
    """``value`` as float seconds, or `BadTime` naming ``name`` (NaN, infinities, and
    anything that is not an int or a float: a bool, a text, None)."""
    if type(value) is float and -MAX_TIME <= value <= MAX_TIME:  # the common case, first
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadTime(name, value)
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond a float's range
        raise BadTime(name, value) from None
    if -MAX_TIME <= seconds <= MAX_TIME:  # false for a NaN
        return seconds
    raise BadTime(name, value, unit_hint(seconds, MAX_TIME) if math.isfinite(seconds) else "")


def iso(seconds: float) -> str:
    """``seconds`` as an ISO-8601 UTC time (for messages), or the number if it has none."""
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return repr(seconds)


def timestamp_problem(seconds: float, received: float | None) -> tuple[str, str] | None:
    """What is wrong with a finite TaskStatus timestamp received at ``received`` (None: no
    upper bound), as (problem, hint), or None if it is plausible. The hint names the unit
    the value looks to be in, or is empty."""
    if seconds < 0:
        problem = "must not be negative (epoch seconds)"
    elif received is not None and seconds > received + MAX_AHEAD:
        problem = (
            f"must be epoch seconds at most a day after the update was received ({iso(received)})"
        )
    else:
        return None
    return problem, unit_hint(seconds, math.inf if received is None else received + MAX_AHEAD)


def unit_hint(seconds: float, latest: float) -> str:
    """ "milliseconds? ..." when ``seconds`` scaled down by 1e3 (1e6, 1e9) is a plausible
    date (from 2000 to ``latest``), else empty."""
    for factor, unit in _UNITS:
        scaled = seconds / factor
        if _PLAUSIBLE_SINCE <= scaled <= latest:
            return f"{unit}? {seconds!r} / {factor:g} is {iso(scaled)}"
    return ""
