"""Throwaway PostgreSQL and ZooKeeper servers for the tests, the benchmarks and `taskledger
demo --ha`.

Each server runs from Debian's packages (``postgresql``, ``zookeeper``; ``make test``
installs them, and so does ``install_missing``) in a fresh temporary folder, on a free
loopback port, and is removed on ``stop()``. The folder is made under a world-enterable
temporary directory, never under the checkout: as root, PostgreSQL must run as the
``postgres`` user, who may not be able to enter a 0700 home or a ``mktemp -d`` folder the
checkout lies in. A server that cannot start raises ``ServerError`` with one line saying why
(the last meaningful line of its log).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
ZK_JARS = (
    "/usr/share/java/zookeeper.jar",
    # zookeeper.jar's manifest names its other dependencies; a logging backend it leaves out.
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
)
START_TIMEOUT = 30.0
# Debian's package that provides each server, and the file that says it is installed.
PACKAGES = {"postgresql": f"{PG_BIN_GLOB}/initdb", "zookeeper": ZK_JARS[0]}


class ServerError(RuntimeError):
    """A test server could not be installed, started or stopped; the message says why."""


# ----------------------------------------------------------------------------- helpers
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _enterable_by_all(path: str) -> bool:
    """Whether every folder from / down to ``path`` can be entered by any user."""
    path = os.path.realpath(path)
    while True:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return False
        if not (mode & stat.S_IXOTH):
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def world_enterable_tempdir(prefix: str) -> str:
    """A new 0755 folder under the first temporary directory any user can reach."""
    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(base) and _enterable_by_all(base) and os.access(base, os.W_OK):
            folder = tempfile.mkdtemp(prefix=prefix, dir=base)
            os.chmod(folder, 0o755)
            return folder
    raise ServerError("no temporary folder that other users can enter (tried $TMPDIR, /tmp)")


def _why(path: str, default: str) -> str:
    """The line of a server's log that says why it stopped: Java's innermost cause, else
    PostgreSQL's FATAL or PANIC, else the first ERROR, else the last line."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return default
    causes = [line for line in lines if line.startswith("Caused by:")]
    fatal = [line for line in lines if "FATAL" in line or "PANIC" in line]
    errors = [line for line in lines if "ERROR" in line]
    for found in (causes[-1:], fatal[-1:], errors[:1], lines[-1:]):
        if found:
            return found[0]
    return default


# The reaper's program: it blocks on a pipe that only the process that started the server
# holds, so it wakes when that process ends, however (a timeout's SIGTERM, a SIGKILL).
_REAPER = """
import json, shutil, subprocess, sys
sys.stdin.buffer.read()
plan = json.loads(sys.argv[1])
if plan["stop"]:
    subprocess.run(plan["stop"], cwd="/", capture_output=True, timeout=60)
shutil.rmtree(plan["folder"], ignore_errors=True)
"""


class _Reaper:
    """Stops a server and removes its folder if the process that started it dies without
    doing so: a fixture's finalizer never runs when pytest itself is killed."""

    def __init__(self, folder: str, stop: list[str] | None) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _REAPER, json.dumps({"folder": folder, "stop": stop})],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,  # a Ctrl-C to the tests' process group spares it
        )

    def dismiss(self) -> None:
        """The server was stopped the ordinary way: the reaper ends with nothing to do."""
        self._process.kill()
        self._process.wait()


def install_missing(say: Callable[[str], None] = print) -> None:
    """Installs Debian's packages of the servers that are missing (as `make servers` does),
    telling ``say`` first; ServerError if they cannot be installed (not root, no apt-get)."""
    missing = [name for name, path in PACKAGES.items() if not glob.glob(path)]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServerError(
            f"{' and '.join(missing)} missing: apt-get install {' '.join(missing)} (as root)"
        )
    say(f"installing {' and '.join(missing)} with apt-get (once)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
            raise ServerError(f"{' '.join(command[:2])} failed: {lines[-1]}")


# ----------------------------------------------------------------------------- PostgreSQL
@dataclass
class PostgresServer:
    """A PostgreSQL cluster of its own: one superuser with a password, TCP on 127.0.0.1.

    ``durable=False`` turns off fsync (the tests' time budget: nothing they assert depends on
    surviving a power cut); the benchmarks run durable.
    """

    durable: bool = False
    settings: dict[str, str] = field(default_factory=dict)  # more -c name=value for postgres
    user: str = "taskledger"
    dbname: str = "postgres"
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    port: int = 0
    folder: str = ""
    _bin: str = ""
    _run_as: list[str] = field(default_factory=list)
    _reaper: _Reaper | None = None

    def start(self) -> PostgresServer:
        self._bin = _postgres_bin()
        self.folder = world_enterable_tempdir("tl-pg-")
        try:
            self._initdb()
            stop = [*self._run_as, os.path.join(self._bin, "pg_ctl"), "-D", self.data]
            self._reaper = _Reaper(self.folder, [*stop, "-m", "immediate", "stop"])
            self._run("mkdir", os.path.join(self.folder, "sock"), what="mkdir", tool=False)
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        pwfile = os.path.join(self.folder, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if os.geteuid() == 0:
            # initdb refuses root: the cluster belongs to Debian's postgres user, and so do
            # its folder and password file.
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerError("no 'postgres' user to run PostgreSQL as root") from None
            for path in (self.folder, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb",
            "-D",
            self.data,
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            what="initdb",
        )
        os.unlink(pwfile)

    def _start(self, port: int | None = None) -> None:
        """Starts the server on ``port``, else on a free port (another, if taken)."""
        socket_dir = os.path.join(self.folder, "sock")
        options = [
            f"-c listen_addresses=127.0.0.1 -k {socket_dir}",
            "-c max_connections=200",
            "-c shared_buffers=64MB",
        ]
        if not self.durable:
            options.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        options.extend(f"-c {name}={value}" for name, value in self.settings.items())
        for _attempt in range(1 if port else 3):
            self.port = port or free_port()
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    self.data,
                    "-l",
                    self.log,
                    "-w",
                    "-t",
                    str(int(START_TIMEOUT)),
                    "-o",
                    f"-p {self.port} " + " ".join(options),
                    "start",
                    what="PostgreSQL",
                )
                return
            except ServerError:
                # Another process took the port between free_port() and the bind: retry.
                if "already in use" not in _why(self.log, ""):
                    raise

    def halt(self) -> None:
        """Stops the server as an administrator would (fast shutdown: every session is
        ended, what was committed stays), keeping its data and port for ``resume``."""
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", what="pg_ctl stop")

    def resume(self) -> None:
        """Starts the halted server again, on the same port and data."""
        self._start(self.port)

    def _run(self, program: str, *args: str, what: str, tool: bool = True) -> None:
        command = [*self._run_as, os.path.join(self._bin, program) if tool else program, *args]
        # cwd: the postgres user may not be able to enter the caller's folder.
        done = subprocess.run(
            command, cwd=self.folder, capture_output=True, text=True, timeout=START_TIMEOUT + 10
        )
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip().splitlines()
            reason = _why(self.log, output[-1] if output else f"exit {done.returncode}")
            raise ServerError(f"{what} could not start: {reason}")

    @property
    def data(self) -> str:
        return os.path.join(self.folder, "data")

    @property
    def log(self) -> str:
        return os.path.join(self.folder, "postgresql.log")

    @property
    def dsn(self) -> str:
        """A libpq connection string (with the password: for tests only)."""
        return (
            f"host=127.0.0.1 port={self.port} user={self.user} dbname={self.dbname} "
            f"password={self.password}"
        )

    def env(self, schema: str) -> dict[str, str]:
        """eventsourcing's PostgreSQL settings for a log in ``schema``."""
        return {
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_SCHEMA": schema,
        }

    def datastore(self, schema: str, **kwargs: Any) -> PostgresDatastore:
        """An eventsourcing datastore on ``schema`` (text originator ids unless told)."""
        kwargs.setdefault("originator_id_type", "text")
        kwargs.setdefault("pool_size", 2)
        kwargs.setdefault("max_overflow", 8)
        return PostgresDatastore(
            self.dbname, "127.0.0.1", self.port, self.user, self.password, schema=schema, **kwargs
        )

    @contextlib.contextmanager
    def fresh_schema(self) -> Iterator[str]:
        """A new empty schema, dropped (with everything in it) afterwards."""
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        try:
            yield name
        finally:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stops the server (fast shutdown) and removes its folder; safe to call twice."""
        if not self.folder:
            return
        pid_file = os.path.join(self.data, "postmaster.pid")
        if os.path.exists(pid_file):
            try:
                self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", what="pg_ctl")
            except (ServerError, subprocess.TimeoutExpired):
                _kill_pid_file(pid_file)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = ""
        if self._reaper is not None:
            self._reaper.dismiss()
            self._reaper = None


def _postgres_bin() -> str:
    candidates = sorted(glob.glob(PG_BIN_GLOB), key=lambda p: int(p.split("/")[-2]))
    for folder in reversed(candidates):
        if os.path.exists(os.path.join(folder, "initdb")):
            return folder
    raise ServerError(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
        "apt-get install postgresql, or run make test"
    )


def _kill_pid_file(pid_file: str) -> None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(pid_file) as f:
            pid = int(f.readline())
        os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- ZooKeeper
@dataclass
class ZooKeeperServer:
    """A standalone ZooKeeper on 127.0.0.1.

    tickTime 500 ms: ZooKeeper clamps session timeouts to 2..20 ticks, so sessions of 1 s
    to 10 s can be asked for (Debian's default tick of 2 s allows nothing under 4 s).
    """

    tick_ms: int = 500
    port: int = 0
    folder: str = ""
    _process: subprocess.Popen | None = None
    _reaper: _Reaper | None = None

    def start(self) -> ZooKeeperServer:
        missing = [jar for jar in ZK_JARS if not os.path.exists(jar)]
        if missing:
            raise ServerError(
                f"ZooKeeper is not installed (no {missing[0]}): apt-get install zookeeper, "
                "or run make test"
            )
        java = shutil.which("java")
        if java is None:
            raise ServerError("ZooKeeper needs java, and there is none on PATH")
        self.folder = world_enterable_tempdir("tl-zk-")
        self.port = free_port()
        conf = os.path.join(self.folder, "conf")
        os.makedirs(os.path.join(self.folder, "data"))
        os.makedirs(conf)
        with open(os.path.join(conf, "zoo.cfg"), "w") as f:
            f.write(
                f"tickTime={self.tick_ms}\n"
                f"dataDir={self.folder}/data\n"
                f"clientPort={self.port}\n"
                "clientPortAddress=127.0.0.1\n"
                "admin.enableServer=false\n"
                "4lw.commands.whitelist=srvr,mntr\n"
            )
        with open(os.path.join(conf, "log4j.properties"), "w") as f:
            f.write(
                "log4j.rootLogger=INFO, FILE\n"
                "log4j.appender.FILE=org.apache.log4j.FileAppender\n"
                f"log4j.appender.FILE.File={self.log}\n"
                "log4j.appender.FILE.layout=org.apache.log4j.PatternLayout\n"
                "log4j.appender.FILE.layout.ConversionPattern=%d %-5p [%t] %c{1} - %m%n\n"
            )
        self._java = java
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self) -> None:
        conf = os.path.join(self.folder, "conf")
        command = [
            self._java,
            "-Xmx128m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # starts in half the time; a test server is idle
            "-cp",
            ":".join([conf, *ZK_JARS]),
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            os.path.join(conf, "zoo.cfg"),
        ]
        with open(os.path.join(self.folder, "stdout.log"), "ab") as out:
            self._process = subprocess.Popen(
                command, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT
            )
        if self._reaper is not None:
            self._reaper.dismiss()  # it knew the previous process
        self._reaper = _Reaper(self.folder, ["kill", "-KILL", str(self._process.pid)])
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                reason = _why(self.log, _why(self.stdout_log, "no output"))
                raise ServerError(f"ZooKeeper could not start: {reason}")
            # "ruok" answers before the server serves; "srvr" names its mode once it does.
            if "Mode:" in self.four_letter("srvr"):
                return
            time.sleep(0.05)
        raise ServerError(
            f"ZooKeeper did not answer within {START_TIMEOUT:.0f} s: " + _why(self.log, "no log")
        )

    @property
    def log(self) -> str:
        return os.path.join(self.folder, "zookeeper.log")

    @property
    def stdout_log(self) -> str:
        return os.path.join(self.folder, "stdout.log")

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def four_letter(self, word: str) -> str:
        """Sends a four-letter command; returns the answer, or "" if there is none."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1.0) as s:
                s.sendall(word.encode())
                chunks = []
                while chunk := s.recv(4096):
                    chunks.append(chunk)
                return b"".join(chunks).decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """Stops the server process (its data stays, so ``restart`` brings sessions back)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        """Stops the server and starts it again on the same port and data."""
        self.kill()
        self._launch()

    def stop(self) -> None:
        """Stops the server and removes its folder; safe to call twice."""
        self.kill()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = ""
        if self._reaper is not None:
            self._reaper.dismiss()
            self._reaper = None
