"""Where a replicated log lives: `taskledger run`'s ``--log postgresql://...`` and ``--zk``.

Kept apart from engine/replication.py (PostgreSQL, ZooKeeper clients) so that a command can
tell a log of record from an LMDB folder without importing either.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

LOG_SCHEMES = ("postgresql", "postgres")


class LogAddressError(ValueError):
    """A --log postgresql://... or --zk address that cannot be used; says which and why."""


def is_log_url(text: str) -> bool:
    """Whether a --log value names a PostgreSQL log (rather than an LMDB folder)."""
    return urllib.parse.urlsplit(text).scheme in LOG_SCHEMES


@dataclass(frozen=True)
class LogAddress:
    """Where the log of record is: ``postgresql://USER@HOST:PORT/DB[?schema=NAME]``."""

    user: str
    host: str
    port: int
    dbname: str
    schema: str = "public"

    @property
    def text(self) -> str:
        schema = "" if self.schema == "public" else f"?schema={self.schema}"
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}{schema}"


def parse_log_url(url: str) -> LogAddress:
    """The log's address; ``LogAddressError`` names what is wrong (a password in the URL
    is refused: it would be on the command line, in ps and in shell histories)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in LOG_SCHEMES:
        raise LogAddressError(f"--log {url!r}: expected postgresql://USER@HOST:PORT/DB")
    if parts.password is not None:
        raise LogAddressError(
            "--log: the URL holds a password; give it in --password-file or PGPASSWORD, "
            "never on the command line"
        )
    try:
        port = parts.port or 5432
    except ValueError:
        raise LogAddressError(f"--log {url!r}: the port is not a number") from None
    dbname = parts.path.lstrip("/")
    if not parts.username or not parts.hostname or not dbname or "/" in dbname:
        raise LogAddressError(f"--log {url!r}: expected postgresql://USER@HOST:PORT/DB")
    query = urllib.parse.parse_qs(parts.query)
    unknown = sorted(set(query) - {"schema"})
    if unknown:
        raise LogAddressError(f"--log {url!r}: unknown parameter {unknown[0]!r} (known: schema)")
    schema = (query.get("schema") or ["public"])[-1]
    return LogAddress(urllib.parse.unquote(parts.username), parts.hostname, port, dbname, schema)


def parse_zk(text: str) -> tuple[str, str]:
    """``HOST:PORT[,HOST:PORT...]/PATH`` -> (hosts, election path)."""
    hosts, sep, path = text.partition("/")
    if not sep or not hosts or not path.strip("/"):
        raise LogAddressError(f"--zk {text!r}: expected HOST:PORT[,HOST:PORT...]/PATH")
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":")
        if not colon or not name or not port.isdigit():
            raise LogAddressError(f"--zk {text!r}: {host!r} is not HOST:PORT")
    return hosts, "/" + path.strip("/")
