"""The command line under random arguments and random input files.

Random arguments: exit status 0, 1 or 2, never a traceback, and the log's events unchanged.
Random JSON-lines files to `ingest`: a bad line stops it with exit status 2 and one line on
stderr naming that line; every good line before it is in the log, none after it; the events
already in the log do not change.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os

import pytest
from cli_log import private_copy
from click.testing import CliRunner
from fuzz_support import event_hash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.cli import cli

FUZZ = settings(
    max_examples=int(os.environ.get("TASKLEDGER_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Long-running commands (a scheduler, a server, the demo, benchmarks, the whole-system
# simulation) are left out; each of the others is fuzzed with its own options.
SKIP = {"run", "sim", "demo", "bench", "simulate"}


def _commands() -> list[tuple[list[str], list[str]]]:
    out = []
    for name, command in sorted(cli.commands.items()):
        if name in SKIP:
            continue
        subs = getattr(command, "commands", None)
        for path, cmd in (
            [([name, s], c) for s, c in sorted(subs.items())] if subs else [([name], command)]
        ):
            out.append((path, [o for p in cmd.params for o in p.opts if o.startswith("-")]))
    return out


COMMANDS = _commands()


@pytest.fixture(scope="module")
def log(story_log, tmp_path_factory) -> str:
    return private_copy(story_log, tmp_path_factory.mktemp("fuzz-cli"))


def _token(log: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(log),
        st.sampled_from(
            ["web/0", "rogue/1", "0", "21", "-1", "99999", "2024-05-01T03:00:05Z", "--", "-"]
        ),
        st.sampled_from(["nope", "bad.jsonl", "/", "/dev/null", "var/ledger", "x" * 300]),
        st.text(max_size=12),
        st.integers(-(2**70), 2**70).map(str),
    )


@FUZZ
@given(data=st.data())
def test_random_arguments_exit_0_1_or_2_and_change_no_event(log, tmp_path_factory, data):
    path, options = data.draw(st.sampled_from(COMMANDS), label="command")
    tokens = data.draw(
        st.lists(st.one_of(st.sampled_from(options or ["--json"]), _token(log)), max_size=6),
        label="arguments",
    )
    before = event_hash(log)
    # Relative paths (a report's --html, the default var/ledger) land in a scratch folder.
    with contextlib.chdir(tmp_path_factory.mktemp("cwd")):
        result = CliRunner().invoke(cli, [*path, *tokens], input="")
    assert result.exit_code in (0, 1, 2), (path, tokens, result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        path,
        tokens,
        repr(result.exception),
    )
    assert "Traceback" not in result.output
    if result.exit_code:
        assert result.stderr.strip(), (path, tokens)
    assert event_hash(log) == before


# -- ingest ------------------------------------------------------------------------------------
_serial = iter(range(1, 10**9))


def _good() -> tuple[str, str]:
    n = next(_serial)
    uuid = base64.b64encode(n.to_bytes(16, "big")).decode()
    status = {
        "task_id": {"value": f"fuzz/{n}"},
        "state": "TASK_RUNNING",
        "timestamp": 1_714_600_000.0 + n,
        "uuid": uuid,
    }
    if n % 2:
        status = {"type": "UPDATE", "update": {"status": status}}
    return "good", json.dumps(status)


bad_lines = st.one_of(
    st.just("{not json"),
    st.just('"just a string"'),
    st.just("[1, 2, 3]"),
    st.just('{"state": "TASK_RUNNING"}'),
    st.just('{"task_id": {"value": "t"}, "state": "TASK_NOPE"}'),
    st.just('{"task_id": {"value": "t"}, "state": "TASK_RUNNING", "timestamp": "soon"}'),
    st.just('{"task_id": {"value": "t"}, "state": "TASK_RUNNING", "big": 100000000000000000000}'),
    st.just('{"task_id": {"value": "t\\ud800"}, "state": "TASK_RUNNING"}'),
    st.just('{"task_id": {"value": 5}, "state": "TASK_RUNNING"}'),
    st.just("\udcff\udcfe"),  # not UTF-8 (written with surrogateescape)
    # One line: a newline inside would make two (ingest splits the file at b"\n").
    st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=20).filter(
        lambda t: t.strip() and t.strip()[0] not in "{"
    ),
)
line_kinds = st.lists(
    st.one_of(
        st.just("good"),
        st.just("blank"),
        bad_lines.map(lambda text: ("bad", text)),
    ),
    max_size=12,
)


@FUZZ
@given(kinds=line_kinds, batch=st.integers(1, 4))
def test_random_input_files_stop_at_the_first_bad_line_and_keep_the_lines_before(
    log, tmp_path_factory, kinds, batch
):
    lines = []
    for kind in kinds:
        if kind == "good":
            lines.append(_good())
        elif kind == "blank":
            lines.append(("blank", "   "))
        else:
            lines.append(kind)
    feed = tmp_path_factory.mktemp("feed") / "in.jsonl"
    feed.write_bytes(
        "".join(text + "\n" for _, text in lines).encode("utf-8", errors="surrogateescape")
    )
    before = _records(log)
    result = CliRunner().invoke(
        cli, ["ingest", str(feed), "--log", log, "--batch", str(batch), "--json"]
    )
    after = _records(log)
    assert {k: v for k, v in after.items() if k in before} == before, "old events changed"
    added = [uuid for nid, uuid in sorted(after.items()) if nid not in before]
    first_bad = next((i for i, (kind, _) in enumerate(lines) if kind == "bad"), None)
    kept = lines if first_bad is None else lines[:first_bad]
    expected = [json.loads(t) for kind, t in kept if kind == "good"]
    expected = [s.get("update", {}).get("status", s)["uuid"] for s in expected]
    assert "Traceback" not in result.output
    if first_bad is None:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 2, (lines, result.output)
        errors = result.stderr.splitlines()
        assert len(errors) == 1 and errors[0].startswith("taskledger: "), result.stderr
        assert f"line {first_bad + 1}:" in errors[0], (errors, lines)
    assert added == expected


def _records(path: str) -> dict[int, str]:
    """notification id -> the uuid (or the raw record's hash) of every stored record."""
    from engine.ledger import Ledger

    with Ledger.open(path) as ledger:
        return {
            nid: getattr(event, "uuid", None) or hashlib.sha256(repr(event).encode()).hexdigest()
            for nid, event in ledger.events()
        }
