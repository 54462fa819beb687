"""What every forensic command shares: the read options, errors as one line, output.

Every read command takes ``--log PATH``, ``--as-of`` (a notification id or an ISO timestamp)
and ``--json``. A user's mistake (a bad path, a file that is not a log, a log held by another
process, an unknown task, a bad ``--as-of``) is ONE line on stderr and exit status 2; a
damaged log is one line and exit status 1. Never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple

import click
import lmdb
from eventsourcing.persistence import OperationalError
from rich.console import Console

from engine.ledger import Ledger
from engine.log_address import is_log_url
from engine.store import DamagedRecord, LogOpenError
from engine.wire import WireError
from tools.forensics import times
from tools.forensics.times import clock, iso, when  # noqa: F401  (the commands' formatters)
from tools.readonly import ReadOnlyLedger, open_log
from tools.secret_file import SecretFileError, postgres_password

# Where the log is unless --log or TASKLEDGER_LOG says otherwise (relative to where the command
# runs).
DEFAULT_LOG = "var/ledger"
LOG_ENVVAR = "TASKLEDGER_LOG"

USAGE_ERROR = 2  # the user asked for something that cannot be answered
DAMAGE_FOUND = 1  # the log is damaged (verify, or any command that trips over it)


class CommandError(click.ClickException):
    """A user's mistake: one line on stderr, exit status 2."""

    exit_code = USAGE_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"taskledger: {self.message}", err=True)


class DamageError(CommandError):
    """The log is damaged: one line on stderr, exit status 1."""

    exit_code = DAMAGE_FOUND


def one_line(error: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turns the log's errors into one line on stderr and the right exit status."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _notes.clear()
        try:
            answer = command(*args, **kwargs)
        except click.ClickException:
            raise
        except DamagedRecord as e:
            raise DamageError(f"{one_line(e)} (run `taskledger verify` for a full check)") from e
        except WireError as e:
            raise DamageError(f"log holds an unreadable event: {one_line(e)}") from e
        except LogOpenError as e:
            raise CommandError(one_line(e)) from e
        except OperationalError as e:  # e.g. LogFull: the map or the disk is full
            raise CommandError(one_line(e)) from e
        except lmdb.Error as e:
            raise CommandError(f"cannot read the log: {one_line(e)}") from e
        except BrokenPipeError:  # `taskledger history x | head`
            sys.stderr.close()
            raise SystemExit(0) from None
        finally:
            notes = list(_notes)
            _notes.clear()
        for note in notes:  # after the answer, and only with one: an error is ONE line
            click.echo(f"taskledger: note: {note}", err=True)
        return answer

    return wrapper


# Remarks about an answer that is not wrong but may surprise (an --as-of before the log's
# first event): said on stderr after the answer.
_notes: list[str] = []


def note(text: str) -> None:
    """Says `text` on stderr once the command has answered (not if it fails)."""
    _notes.append(text)


# -- options -------------------------------------------------------------------------------
def _log(metavar: str, help: str) -> Callable[..., Any]:
    return click.option(
        "--log",
        "log_path",
        default=DEFAULT_LOG,
        envvar=LOG_ENVVAR,
        show_default=True,
        metavar=metavar,
        help=f"{help} (or ${LOG_ENVVAR})",
    )


def log_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--log, a folder: for the commands that write it (and `ctl`, which finds the
    scheduler serving it)."""
    return _log("PATH", "the log folder")(command)


def log_address_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--log, a folder or a log of record's URL (tools/readonly.py's open_log), and
    --password-file: for the commands that read it."""
    command = click.option(
        "--password-file",
        metavar="FILE",
        expose_value=False,
        callback=_remember_password_file,
        help="with --log postgresql://...: the PostgreSQL password (one line); else PGPASSWORD",
    )(command)
    url = "the log folder, or a replicated log of record postgresql://USER@HOST:PORT/DB"
    return _log("PATH|URL", url)(command)


PASSWORD_FILE = "taskledger.password_file"  # where --password-file waits in click's context


def _remember_password_file(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    # Kept aside rather than passed to every command: only opening the log needs it.
    ctx.meta[PASSWORD_FILE] = value


def log_password() -> str:
    """The log of record's password, as `taskledger run` takes it: the --password-file's
    line, else $PGPASSWORD (never the command line)."""
    ctx = click.get_current_context(silent=True)
    try:
        return postgres_password(None if ctx is None else ctx.meta.get(PASSWORD_FILE))
    except SecretFileError as e:
        raise CommandError(str(e)) from None


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="print JSON (stable shape, see the README)"
    )(command)


def as_of_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--as-of",
        "as_of",
        metavar="ID|TIME",
        help="answer as the ledger knew it then: a notification id, or an ISO timestamp "
        "(UTC unless it names a zone, e.g. 2024-05-01T03:12:00Z)",
    )(command)


def read_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--log (and --password-file), --as-of, --json and one-line errors: the options of
    every read command."""
    return log_address_option(as_of_option(json_option(handle_errors(command))))


# -- opening the log -----------------------------------------------------------------------
@contextmanager
def open_readonly(path: str) -> Iterator[ReadOnlyLedger]:
    """The log (a folder or a log of record's URL, tools/readonly.py's open_log) opened
    read-only; a bad path, or a log of record that cannot be read, becomes a CommandError
    naming it."""
    try:
        ledger = open_log(path, password=log_password() if is_log_url(path) else "")
    except LogOpenError as e:
        raise CommandError(one_line(e)) from e
    try:
        yield ledger
    finally:
        ledger.close()


@contextmanager
def open_writer(path: str, *, durable: bool = True) -> Iterator[Ledger]:
    """The log opened for writing (created if missing); a log held by another process or a
    bad path becomes a CommandError naming it, and so does a log of record: only its elected
    `taskledger run` replica writes it."""
    local_only(path, "a log of record is written only by its elected `taskledger run`")
    try:
        ledger = Ledger.open(path, durable=durable)
    except LogOpenError as e:
        raise CommandError(one_line(e)) from e
    try:
        yield ledger
    finally:
        ledger.close()


def local_only(path: str, why: str) -> None:
    """CommandError unless ``path`` names an LMDB log (a folder): ``why`` a log of record
    will not do."""
    if is_log_url(path):
        raise CommandError(
            f"--log {path}: {why}; give an LMDB log (a replica's mirror: its --local folder)"
        )


# -- --as-of ---------------------------------------------------------------------------------
class AsOf(NamedTuple):
    """The moment a read command answers for."""

    nid: int  # the last notification id included
    time: float | None  # the timestamp asked for, if --as-of was a time
    asked: str | None  # --as-of as given (None: the end of the log)
    last_id: int  # the log's last notification id
    before_log: bool = False  # --as-of came before the log's first event (nothing yet)

    @property
    def is_now(self) -> bool:
        return self.asked is None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.nid,
            "time": self.time,
            "time_iso": iso(self.time),
            "asked": self.asked,
            "last_id": self.last_id,
            "before_log": self.before_log,
        }

    def label(self) -> str:
        if self.asked is None:
            return f"now (notification id {self.nid})"
        if self.time is not None:
            return f"as of {iso(self.time)} (notification id {self.nid})"
        return f"as of notification id {self.nid}"


def parse_time(text: str) -> float | None:
    """An ISO timestamp as epoch seconds (naive means UTC), or None if it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def resolve_as_of(ledger: ReadOnlyLedger, text: str | None) -> AsOf:
    """--as-of as a notification id of this log; CommandError if it is not one. An --as-of
    before the log's first event is not an error (the answer is "nothing yet"), but it is
    said: a note on stderr after the answer, and `before_log` in the JSON."""
    last = ledger.last_id
    if text is None:
        return AsOf(last, None, None, last)
    stripped = text.strip()
    if stripped.isdigit():
        nid = int(stripped)
        if nid > last:
            raise CommandError(
                f"bad --as-of {text!r}: notification id {nid} is past the end of the log "
                f"(last id {last})"
            )
        at = AsOf(nid, None, text, last)
    else:
        moment = parse_time(stripped)
        if moment is None:
            raise CommandError(
                f"bad --as-of {text!r}: not a notification id or an ISO timestamp "
                "(e.g. 42 or 2024-05-01T03:12:00Z)"
            )
        at = AsOf(ledger.id_at(moment), moment, text, last)
    if at.nid == 0 and last > 0:
        at = at._replace(before_log=True)
        first = ledger.event_at(1)
        start = "" if first is None else f", at {when(first.time)} UTC"
        note(
            f"--as-of {text} is before the log's first event (id 1{start}): "
            "the answer is the empty state before it"
        )
    return at


# -- output ----------------------------------------------------------------------------------
def console(stderr: bool = False) -> Console:
    """A rich console: a terminal's width, or when the output is not a terminal $COLUMNS
    (default 160, wide enough for the tables)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, soft_wrap=True)
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else 160
    return Console(stderr=stderr, width=width, no_color=True, soft_wrap=True)


def emit_json(data: dict[str, Any]) -> None:
    """One JSON document on stdout, indented, each object or list that holds no other on
    one line (a task of 100,000 in a drift, an `as_of`): readable, and written by json's C
    encoder (an indented dump is pure Python, ~7x slower). Always valid JSON: a NaN or
    infinite number a log holds is written as the string "NaN", "Infinity" or "-Infinity"."""
    try:
        text = _dumps(data, "", _ENCODE)
    except ValueError:  # rare: only a log holding such a number pays for the walk
        text = _dumps(_finite(data), "", _ENCODE)
    click.echo(text)


_ENCODE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, default=lambda v: _jsonable(v), separators=(", ", ": ")
).encode


class RawJSON(str):
    """JSON text already encoded (by a command's fast path for many rows): emit_json writes
    it as is, one per line in its list."""


_CONTAINERS = (dict, list, tuple, set, frozenset, RawJSON)
_SCALARS = frozenset({str, int, float, bool, type(None)})  # the common case, tested first


def _flat(values: Any) -> bool:
    """Whether no value is a container or RawJSON (so the C encoder writes them on one
    line)."""
    scalars = _SCALARS
    return all(type(v) in scalars or not isinstance(v, _CONTAINERS) for v in values)


def _key(key: Any, encode: Callable[[Any], str]) -> str:
    """A dict key as json.dumps writes it (None -> "null", True -> "true", 1 -> "1")."""
    return encode(key if isinstance(key, str) else encode(key))


def _dumps(value: Any, indent: str, encode: Callable[[Any], str]) -> str:
    if type(value) is RawJSON:
        return value
    if isinstance(value, dict):
        items = value.items()
        if _flat(value.values()):
            return encode(value)
        inner = indent + "  "
        body = ",\n".join(f"{inner}{_key(k, encode)}: {_dumps(v, inner, encode)}" for k, v in items)
        return "{\n" + body + "\n" + indent + "}" if body else "{}"
    if isinstance(value, list | tuple | set | frozenset) and not hasattr(value, "_asdict"):
        values = list(value)
        inner = indent + "  "
        if values and all(type(v) is RawJSON for v in values):  # a command's many rows
            return "[\n" + ",\n".join(inner + v for v in values) + "\n" + indent + "]"
        if _flat(values):
            return encode(values)
        body = ",\n".join(inner + _dumps(v, inner, encode) for v in values)
        return "[\n" + body + "\n" + indent + "]"
    if hasattr(value, "_asdict"):  # as _jsonable writes it
        return _dumps(value._asdict(), indent, encode)
    return encode(value)


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by its JSON string."""
    if isinstance(value, float):
        return times.json_number(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):  # as json.dumps writes them
        return [_finite(v) for v in value]
    if hasattr(value, "_asdict"):  # as _jsonable writes it
        return _finite(value._asdict())
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "_asdict"):
        return value._asdict()
    return str(value)


def schema(name: str) -> str:
    """The identifier of a command's JSON shape; the number changes only on a breaking
    change (fields may be added without one)."""
    return f"taskledger.{name}/1"


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)
