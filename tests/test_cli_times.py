"""Stored times no calendar has (milliseconds, 1e300, -1e18, NaN, +-inf): every reader
prints them, in text and JSON and the HTML report, and `verify` names them."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from cli_log import ODD_TIMES, build_odd_times, fingerprint, run
from hypothesis import given
from hypothesis import strategies as st

from tools.forensics import times


@pytest.fixture(scope="module")
def odd_log(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("odd") / "log")
    build_odd_times(path)
    return path


def strict_json(text: str) -> dict:
    """JSON as the standard reads it: no NaN, no Infinity."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


READS = [
    ["history", "odd/0"],
    ["history", "odd/1"],
    ["history", "odd/2"],
    ["history", "odd/3"],
    ["why", "odd/1"],
    ["why", "odd/3"],
    ["drift"],
    ["drift", "--as-of", "5"],
    ["query"],
    ["replay"],
    ["verify"],
    ["snapshot", "list"],
]


@pytest.mark.parametrize("args", READS, ids=lambda a: " ".join(a))
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_every_reader_prints_any_stored_time(odd_log, args, as_json):
    result = run(*args, "--log", odd_log, *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    if as_json:
        strict_json(result.stdout)


def test_history_shows_the_raw_number_where_no_date_can_be_made(odd_log):
    text = run("history", "odd/1", "--log", odd_log).stdout
    assert "1e+300 (no date)" in text
    (event,) = strict_json(run("history", "odd/1", "--log", odd_log, "--json").stdout)["events"]
    assert event["time"] == 1e300 and event["time_iso"] is None
    ms = strict_json(run("history", "odd/0", "--log", odd_log, "--json").stdout)["events"][0]
    assert ms["time"] == ODD_TIMES[0] and ms["time_iso"] is None
    assert "1714532502000.0 (no date)" in run("history", "odd/0", "--log", odd_log).stdout


def test_json_spells_nan_and_infinities_as_strings(odd_log):
    data = strict_json(run("why", "odd/3", "--log", odd_log, "--json").stdout)
    (kill,) = data["commands"]
    times_by_step = {s["step"]: s["time"] for s in kill["chain"] if s["id"] is not None}
    assert times_by_step["command"] == "-Infinity"
    assert times_by_step["dispatch"] == "NaN"
    text = run("why", "odd/3", "--log", odd_log).stdout
    assert "-inf (no date)" in text and "nan (no date)" in text


def test_verify_is_sound_and_names_each_implausible_time(odd_log):
    result = run("verify", "--log", odd_log, "--json")
    assert result.exit_code == 0
    data = strict_json(result.stdout)
    assert data["ok"] is True and data["problems"] == []
    assert [c["name"] for c in data["checks"]] == [
        "records",
        "ids",
        "index",
        "unique",
        "snapshots",
        "views",
    ]
    assert "8 event(s) with an implausible time" in data["checks"][0]["detail"]
    warned = {w["id"]: w["problem"] for w in data["warnings"]}
    assert sorted(warned) == [1, 2, 3, 4, 5, 6, 7, 8]  # not 9: time 0 is plausible
    assert "looks like milliseconds (2024-05-01T03:01:42Z if it is)" in warned[1]
    assert "1e+300 is after 2099" in warned[2] and "-1e+18 is before 1970" in warned[3]
    assert "nan is not a time" in warned[4] and "inf is not a time" in warned[5]
    assert data["implausible_times"] == 8
    text = run("verify", "--log", odd_log)
    assert (
        text.exit_code == 0
        and "is sound" in text.stdout
        and "looks like milliseconds" in (text.stdout)
    )


def test_the_report_renders_and_leaves_undatable_events_out_of_the_charts(odd_log, tmp_path):
    before = fingerprint(odd_log)
    out = tmp_path / "odd.html"
    result = run("report", "--log", odd_log, "--html", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "1e+300 (no date)" in page and "nan" not in page.split("<svg")[1].split("</svg>")[0]
    assert "have a time that makes no date" in page
    assert fingerprint(odd_log) == before


# -- the formatting functions ------------------------------------------------------------------
any_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.none(),
)


@given(any_number)
def test_formatting_never_raises_and_says_no_date_only_when_there_is_none(t):
    texts = [times.when(t), times.clock(t), times.chart_label(0.0 if t is None else t, 1.0)]
    iso = times.iso(t)
    if t is None:
        assert iso is None and texts[:2] == ["-", "-"]
        return
    dated = times.date_of(t)
    assert (iso is None) == (dated is None)
    assert all(("(no date)" in x) == (dated is None) for x in texts)
    if dated is None:
        assert all(times.raw(t) in x for x in texts)
    assert times.json_number(t) == t or not math.isfinite(t)


@given(st.floats(min_value=times.PLAUSIBLE_FROM, max_value=times.PLAUSIBLE_UNTIL - 1))
def test_iso_is_what_datetime_writes(t):
    moment = datetime.fromtimestamp(t, UTC)
    expected = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    assert times.iso(t) == expected.replace("+00:00", "Z")
    assert times.implausible(t) is None
