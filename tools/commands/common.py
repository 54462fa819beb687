"""What every forensic command shares: the read options, errors as one line, output.

Every read command takes ``--log PATH``, ``--as-of`` (a notification id or an ISO timestamp)
and ``--json``. A user's mistake (a bad path, a file that is not a log, a log held by another
process, an unknown task, a bad ``--as-of``) is ONE line on stderr and exit status 2; a
damaged log is one line and exit status 1. Never a traceback.
"""

from __future__ import annotations

import functools
import json
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
from engine.store import DamagedRecord, LogOpenError
from engine.wire import WireError
from tools.readonly import ReadOnlyLedger

# Where the log is unless --log or TASKLEDGER_LOG says otherwise (DESIGN.md's example folder).
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
        try:
            return command(*args, **kwargs)
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

    return wrapper


# -- options -------------------------------------------------------------------------------
def log_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--log",
        "log_path",
        default=DEFAULT_LOG,
        envvar=LOG_ENVVAR,
        show_default=True,
        metavar="PATH",
        help=f"the log folder (or ${LOG_ENVVAR})",
    )(command)


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
    """--log, --as-of, --json and one-line errors: the options of every read command."""
    return log_option(as_of_option(json_option(handle_errors(command))))


# -- opening the log -----------------------------------------------------------------------
@contextmanager
def open_readonly(path: str) -> Iterator[ReadOnlyLedger]:
    """The log opened read-only; a bad path becomes a CommandError naming it."""
    try:
        ledger = ReadOnlyLedger.open(path)
    except LogOpenError as e:
        raise CommandError(one_line(e)) from e
    try:
        yield ledger
    finally:
        ledger.close()


@contextmanager
def open_writer(path: str, *, durable: bool = True) -> Iterator[Ledger]:
    """The log opened for writing (created if missing); a log held by another process or a
    bad path becomes a CommandError naming it."""
    try:
        ledger = Ledger.open(path, durable=durable)
    except LogOpenError as e:
        raise CommandError(one_line(e)) from e
    try:
        yield ledger
    finally:
        ledger.close()


# -- --as-of ---------------------------------------------------------------------------------
class AsOf(NamedTuple):
    """The moment a read command answers for."""

    nid: int  # the last notification id included
    time: float | None  # the timestamp asked for, if --as-of was a time
    asked: str | None  # --as-of as given (None: the end of the log)
    last_id: int  # the log's last notification id

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
    """--as-of as a notification id of this log; CommandError if it is not one."""
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
        return AsOf(nid, None, text, last)
    moment = parse_time(stripped)
    if moment is None:
        raise CommandError(
            f"bad --as-of {text!r}: not a notification id or an ISO timestamp "
            "(e.g. 42 or 2024-05-01T03:12:00Z)"
        )
    return AsOf(ledger.id_at(moment), moment, text, last)


# -- output ----------------------------------------------------------------------------------
def console(stderr: bool = False) -> Console:
    """A rich console; wide enough for tables when the output is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, soft_wrap=True)
    return Console(stderr=stderr, width=160, no_color=True, soft_wrap=True)


def emit_json(data: dict[str, Any]) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "_asdict"):
        return value._asdict()
    return str(value)


def iso(t: float | None) -> str | None:
    """Epoch seconds as an ISO-8601 UTC timestamp (milliseconds when they matter)."""
    if t is None:
        return None
    moment = datetime.fromtimestamp(t, UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def clock(t: float | None) -> str:
    """Epoch seconds as the time of day, UTC, e.g. "03:12:04"."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def when(t: float | None) -> str:
    """Epoch seconds as "2024-05-01 03:12:04" UTC."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def schema(name: str) -> str:
    """The identifier of a command's JSON shape; the number changes only on a breaking
    change (fields may be added without one)."""
    return f"taskledger.{name}/1"


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)
