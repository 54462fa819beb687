"""Stored times as people read them: the one place a forensic reader turns a number into a date.

An event's time is whatever its writer gave: the Ledger's clock, a status's `timestamp`
(which `taskledger ingest` takes as the event time), a test's or a simulation's clock. A log
may therefore hold times no calendar has (NaN, +-inf, 1e300, a timestamp in milliseconds:
year 56301), and logs are never pruned, so every reader must print them. Here a time that
makes a date prints as a UTC date; one that does not prints as its raw number, never as a
traceback. Pure: no clock.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch seconds datetime can hold (0001-01-01 .. 9999-12-31 23:59:59 UTC): a cheap test for
# a loop over every event (NaN fails every comparison); date_of stays the authority.
DATABLE_FROM = -62135596800.0
DATABLE_UNTIL = 253402300799.0
# Event times this far from the epoch are stored faithfully but are not believable as a
# cluster's clock: `taskledger verify` warns about them. The band holds every real log
# (1970..2099) and a virtual clock that starts at 0 (the deterministic simulation's).
PLAUSIBLE_FROM = 0.0
PLAUSIBLE_UNTIL = 4102444800.0  # 2100-01-01T00:00:00Z
# JSON has no NaN or infinities: they are written as these strings (the proto3 JSON
# mapping's spelling), so a document stays valid JSON and the stored value stays visible.
JSON_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def date_of(t: float | None) -> datetime | None:
    """The UTC moment of epoch seconds `t`, or None when it makes no date (None, NaN,
    +-inf, or outside the years 1..9999 that datetime holds)."""
    if t is None or isinstance(t, bool) or not isinstance(t, int | float):
        return None
    try:
        # Not datetime.fromtimestamp: it goes through the platform's time_t (EOVERFLOW for
        # -1e18 on this one) where a timedelta does not.
        return _EPOCH + timedelta(seconds=t)
    except (OverflowError, ValueError):  # also NaN and +-inf
        return None


def raw(t: Any) -> str:
    """The stored number as text: "1714532502000.0", "1e+300", "nan", "-inf"."""
    return repr(t) if isinstance(t, float) else str(t)


_SECONDS: dict[float, str] = {}  # whole epoch second -> its ISO text (a bounded cache)


def iso(t: float | None) -> str | None:
    """ISO-8601 UTC ("2024-05-01T03:01:42Z", milliseconds when they matter), or None when
    `t` makes no date (JSON's `..._iso` twins: the number itself stays in `time`)."""
    if type(t) is float and PLAUSIBLE_FROM <= t < PLAUSIBLE_UNTIL:
        # The common case, several times faster than through datetime (a drift may list
        # 100,000 times, most within a few seconds of each other: the second's text is
        # cached); microseconds rounded half-even as datetime.fromtimestamp rounds them.
        fraction, whole = math.modf(t)
        micro = round(fraction * 1e6)
        if micro >= 1_000_000:
            whole, micro = whole + 1, micro - 1_000_000
        text = _SECONDS.get(whole)
        if text is None:
            if len(_SECONDS) >= 4096:
                _SECONDS.clear()
            text = _SECONDS[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        return f"{text}.{micro // 1000:03d}Z" if micro else f"{text}Z"
    moment = date_of(t)
    if moment is None:
        return None
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def _formatted(t: float | None, pattern: str) -> str:
    if t is None:
        return "-"
    moment = date_of(t)
    if moment is None:
        return f"{raw(t)} (no date)"
    return moment.strftime(pattern)


def when(t: float | None) -> str:
    """ "2024-05-01 03:12:04" (UTC), "-" for None, the raw number when it makes no date."""
    return _formatted(t, "%Y-%m-%d %H:%M:%S")


def clock(t: float | None) -> str:
    """The time of day, "03:12:04" (UTC); "-" for None; the raw number when no date."""
    return _formatted(t, "%H:%M:%S")


def chart_label(t: float, span: float) -> str:
    """A time axis's tick: the time of day, or month-day and time for spans over a day."""
    return _formatted(t, "%H:%M:%S" if span < 86400 else "%m-%d %H:%M")


def datable(t: float | None) -> bool:
    """Whether `t` makes a date (what a chart can place on a time axis)."""
    return date_of(t) is not None


def implausible(t: float | None) -> str | None:
    """Why `t` is not believable as a cluster's clock, or None if it is (or is None)."""
    if t is None or isinstance(t, bool) or not isinstance(t, int | float):
        return None
    if not math.isfinite(t):
        return f"{raw(t)} is not a time"
    if PLAUSIBLE_FROM <= t < PLAUSIBLE_UNTIL:
        return None
    if t >= PLAUSIBLE_UNTIL and PLAUSIBLE_FROM <= t / 1000 < PLAUSIBLE_UNTIL:
        return f"{raw(t)} looks like milliseconds ({iso(t / 1000)} if it is)"
    date = iso(t)
    where = "before 1970" if t < PLAUSIBLE_FROM else "after 2099"
    return f"{raw(t)} is {where} ({date or 'no date'})"


def json_number(t: float | None) -> float | str | None:
    """A stored number for a JSON document: as is, NaN and +-inf as strings."""
    if isinstance(t, float) and not math.isfinite(t):
        return JSON_NONFINITE[repr(t)]
    return t
