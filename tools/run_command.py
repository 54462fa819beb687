"""`taskledger run`: the embedded scheduler as a program.

    taskledger run --master HOST:PORT|https://HOST:PORT|zk://HOST:PORT/PATH --log PATH ...

Keeps N instances of a job running on the master, feeds every update into the Ledger (and
acknowledges it only once durable), runs the reconciliation schedules, dispatches the
saga's commands, serves Prometheus metrics, the operator API and the live web view
(tools/operator), starts an explicit reconciliation on SIGUSR1 and an implicit one on
SIGUSR2, and shuts down cleanly on SIGTERM or Ctrl-C.

Every option can also come from TASKLEDGER_<OPTION> or a TOML file (tools/run_config.py).
Before the log folder is touched the master's address is checked and the master (or
ZooKeeper and the leader it names) must answer within --master-timeout: a wrong address is
one line on stderr and exit status 2, with nothing left behind.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from typing import Any

import click

from engine.mesos.core import MAX_LAUNCHING
from engine.mesos.inflight import DEFAULT_LIMIT as DEFAULT_IN_FLIGHT
from tools.run_config import Duration, config_option, file_note, render, setting
from tools.secret_file import SecretFileError, postgres_password, read_secret

# Test-only hooks (tests/test_crash_loop.py). With one of these set to N, the process prints
# "taskledger: test hook: killed before <appending|acknowledging> <task id> <uuid>" on
# stderr and SIGKILLs itself: right before the Nth update that carries a uuid is handed to
# the log (received, not committed), or right before the acknowledgement of the Nth one is
# handed to the sender (committed, not acknowledged). Never set them in production.
CRASH_BEFORE_APPEND = "TASKLEDGER_TEST_CRASH_BEFORE_APPEND"
CRASH_BEFORE_ACK = "TASKLEDGER_TEST_CRASH_BEFORE_ACK"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What the master answers a SUBSCRIBE with when it will not take us: retrying cannot help.
FATAL_ANSWERS = {
    "HTTP 401": "the master refused the credentials (HTTP 401): check --principal and "
    "--secret-file",
    "HTTP 403": "the master does not let this principal register (HTTP 403): check --principal "
    "and --role",
}

log = logging.getLogger("taskledger.run")


def _install_crash_hooks() -> None:
    from engine.ledger import Ledger
    from engine.mesos.driver import PymesosDriver

    for variable, owner, name, what in (
        (CRASH_BEFORE_APPEND, Ledger, "submit_status_update", "appending"),
        (CRASH_BEFORE_ACK, PymesosDriver, "acknowledge", "acknowledging"),
    ):
        nth = os.environ.get(variable)
        if nth:
            setattr(owner, name, _crashing(getattr(owner, name), int(nth), what))


def _crashing(original: Any, nth: int, what: str) -> Any:
    seen = 0

    def hooked(self: Any, status: dict, *args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        if isinstance(status, dict) and status.get("uuid"):
            seen += 1
            if seen == nth:
                task = (status.get("task_id") or {}).get("value")
                line = f"taskledger: test hook: killed before {what} {task} {status['uuid']}\n"
                os.write(2, line.encode())
                os.kill(os.getpid(), signal.SIGKILL)
        return original(self, status, *args, **kwargs)

    return hooked


def in_flight_for(time_scale: float) -> int:
    """The default bound on updates in flight: what a master takes in acknowledgements
    before it re-sends an update not acknowledged (10 s), that is 10,000 at 1,000 a second,
    compressed like the master's clock by ``time_scale`` (a window that drains slower than
    the re-sends come only makes the master send it all again)."""
    return max(100, round(DEFAULT_IN_FLIGHT / max(1.0, time_scale)))


def _serve(port: int) -> Any:
    """The runtime's metrics, served on 127.0.0.1:``port`` (Prometheus's text format)."""
    from prometheus_client import start_http_server

    from tools.metrics import Metrics

    metrics = Metrics()
    start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    return metrics


def _label(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    labels = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}")
        labels[key] = val
    return labels


class Failed(click.ClickException):
    """`taskledger run` cannot start (or must stop): one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"taskledger run: {self.message}", err=True)


# -- logging, once ---------------------------------------------------------------------------
class _OneLine(logging.Filter):
    """Without -v, a logged traceback becomes one line: the message and the exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage().rstrip(':')}: {type(error).__name__}: {error}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def configure_logging(verbose: bool) -> None:
    """One handler on stderr, one format, for taskledger, pymesos and kazoo alike (pymesos
    installs a handler of its own at import: removed, so nothing prints twice)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    if not verbose:
        handler.addFilter(_OneLine())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in ("pymesos", "kazoo"):
        library = logging.getLogger(name)
        for old in list(library.handlers):
            library.removeHandler(old)
        library.setLevel(logging.NOTSET)
        library.propagate = True
    # The start-up and stop lines, and every operator's order, whatever the level.
    log.setLevel(logging.INFO)
    logging.getLogger("taskledger.operator").setLevel(logging.INFO)


# -- credentials and the API -----------------------------------------------------------------
def _secret(path: str) -> str:
    """read_secret's answer, or Failed naming the file."""
    try:
        return read_secret(path)
    except SecretFileError as e:
        raise Failed(str(e)) from None


def _credential(principal: str | None, secret_file: str | None) -> tuple[str, str] | None:
    if secret_file and not principal:
        raise Failed("--secret-file needs --principal (the name the secret belongs to)")
    if not principal:
        return None
    if not secret_file:
        raise Failed("--principal needs --secret-file (the secret is never a command-line value)")
    if ":" in principal or not principal.isascii():
        raise Failed(f"--principal {principal!r}: ASCII without ':' (HTTP basic authentication)")
    return principal, _secret(secret_file)


def _api(listen: str, token_file: str | None) -> Any:
    """The operator API's bound socket and tokens, or None for --api off."""
    from tools.operator.server import OperatorAPI, Tokens, bind, is_loopback

    if listen.strip().lower() == "off":
        if token_file:
            raise Failed("--api-token-file given but --api is off")
        return None
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise Failed(f"--api {listen!r}: give HOST:PORT (port 0: any free port) or off")
    tokens = None
    if token_file:
        try:
            tokens = Tokens.read(token_file)
        except ValueError as e:
            raise Failed(str(e)) from None
    elif not is_loopback(host):
        raise Failed(
            f"--api {listen}: an operator API off loopback needs --api-token-file (who may "
            "give orders)"
        )
    try:
        sock = bind(host, int(port))
    except OSError as e:
        raise Failed(e.strerror or str(e)) from None
    return OperatorAPI(sock, tokens=tokens)


class _Announce:
    """The start-up line (what it connected to, where the log is, where the web view is),
    and the stop line; a runtime service."""

    def __init__(self, found: Any, config: Any, api: Any) -> None:
        self.found, self.config, self.api = found, config, api
        self._runtime: Any = None

    def start(self, runtime: Any) -> None:
        from tools.mesos_master import masked

        self._runtime = runtime
        found, config = self.found, self.config
        via = f" (leader named by {masked(found.via)})" if found.via else ""
        if config.tls is not None:
            via += f" over TLS (trusting {config.tls.settings.trusted})"
        who = f"framework {config.framework_name!r} as user {config.user!r}"
        for key in ("principal", "role"):
            if config.framework_fields.get(key):
                who += f", {key} {config.framework_fields[key]!r}"
        ledger = runtime.ledger
        web = f"; operator API and web view {self.api.url}" if self.api else "; no operator API"
        log.info(
            "taskledger run: Mesos %s master %s%s, %s; log %s (%d events)%s",
            found.version,
            found.address,
            via,
            who,
            ledger.path,
            ledger.last_id,
            web,
        )
        self._warn_above(runtime)

    def _warn_above(self, runtime: Any) -> None:
        job = runtime.core.job if runtime.core is not None else None
        if job is None:
            return
        try:
            tasks = list(runtime.ledger.scheduler_view.tasks.items())
        except RuntimeError:  # a commit added a task meanwhile: the warning is not worth a retry
            return
        live = [
            t
            for t, r in tasks
            if r.job == job.name
            and r.instance is not None
            and r.instance >= job.instances
            and r.state not in ("FINISHED", "FAILED", "KILLED", "LOST", "DELETED")
        ]
        if live:
            log.warning(
                "%d live task(s) of job %s belong to instances at or above --instances %d "
                "(scaled up before a restart?); `taskledger ctl scale %d` stops them",
                len(live),
                job.name,
                job.instances,
                job.instances,
            )

    def stop(self) -> None:
        if self._runtime is not None and self._runtime.ledger is not None:
            ledger = self._runtime.ledger
            log.info("taskledger run: stopping; log %s at id %d", ledger.path, ledger.last_id)


def _fatal_abort() -> str | None:
    """pymesos reports its IO thread's abort by storing the exception and interrupting the
    main thread (a simulated SIGINT). Returns why, if the SIGINT just received is that (and
    not a person's Ctrl-C): a fatal answer's message, or "" for an abort the runtime's
    supervisor recovers from by starting a new driver."""
    from pymesos import process

    stored = process._exc_info
    if stored is None:
        return None
    process._exc_info = None
    text = str(stored[1])
    for needle, message in FATAL_ANSWERS.items():
        if needle in text:
            return message
    return ""


def print_config(ctx: click.Context, values: dict[str, Any]) -> None:
    notes = {}
    for key, what in (("secret_file", "the secret"), ("password_file", "the password")):
        note = file_note(values.get(key), what)
        if note:
            notes[key.replace("_", "-")] = note
    if values.get("api_token_file"):
        from tools.operator.server import Tokens

        try:
            tokens = Tokens.read(values["api_token_file"])
            names = ", ".join(tokens.names()) or "none"
            notes["api-token-file"] = f"{len(tokens)} token(s), not shown; names: {names}"
        except ValueError as e:
            notes["api-token-file"] = str(e)
    if values.get("master"):
        from tools.mesos_master import masked

        values = dict(values, master=masked(values["master"]))
    click.echo(render(ctx, values, config=values.get("config"), notes=notes), nl=False)


@click.command("run")
@config_option
@click.option(
    "--print-config",
    is_flag=True,
    help="print the effective settings, and where each came from, as TOML; start nothing",
)
@setting(
    "--master",
    metavar="ADDRESS",
    help="the Mesos master: HOST:PORT, https://HOST:PORT (TLS), or "
    "zk://HOST:PORT[,HOST:PORT...]/PATH (required)",
)
@setting(
    "--master-tls",
    is_flag=True,
    help="reach every master over TLS (for zk://, whose masters have no scheme; the same as "
    "https:// for HOST:PORT)",
)
@setting(
    "--ca-file",
    metavar="FILE",
    help="the CA certificates (PEM) the master's certificate must chain to  "
    "[default: the system's CAs]",
)
@setting("--client-cert", metavar="FILE", help="our certificate (PEM), if the master asks")
@setting(
    "--client-key",
    metavar="FILE",
    help="the private key of --client-cert (PEM)  [default: in the --client-cert file]",
)
@setting(
    "--master-timeout",
    default="30s",
    show_default=True,
    type=Duration(),
    help="how long start-up waits for the master (and ZooKeeper) to answer",
)
@setting(
    "--log",
    "log_path",
    help="the log folder (created if missing; required), or postgresql://USER@HOST:PORT/DB"
    "[?schema=NAME]: a replicated scheduler (needs --zk) whose log of record is there",
)
@setting(
    "--zk",
    metavar="HOST:PORT[,...]/PATH",
    help="ZooKeeper and the election's path, for --log postgresql://...",
)
@setting(
    "--replica",
    help="this replica's name in the election and the log  [default: the host's name]",
)
@setting(
    "--local",
    metavar="DIR",
    help="the replica's local mirror of the log (LMDB)  [default: taskledger-mirror-REPLICA]",
)
@setting(
    "--session-timeout",
    default="10s",
    show_default=True,
    type=Duration(),
    help="the ZooKeeper session: how long a leader that vanished keeps leading",
)
@setting(
    "--password-file",
    metavar="FILE",
    help="the PostgreSQL password (one line); else PGPASSWORD",
)
@setting("--principal", help="authenticate to the master as this principal")
@setting("--secret-file", metavar="FILE", help="the principal's secret (one line)")
@setting("--role", help="the framework's role (FrameworkInfo.role)")
@setting("--framework-name", default="taskledger", show_default=True)
@setting("--user", default="root", show_default=True, help="the user tasks run as")
@setting(
    "--failover-timeout",
    default="7d",
    show_default=True,
    type=Duration(),
    help="how long the master keeps the framework's tasks after it disconnects",
)
@setting("--webui-url", metavar="URL", help="the link the Mesos web UI shows for the framework")
@setting("--job", default="web", show_default=True, help="the job's name")
@setting(
    "--instances",
    default=3,
    show_default=True,
    type=click.IntRange(0),
    help="instances of the job (at start-up: `ctl scale` changes it while running)",
)
@setting("--cmd", default="sleep 3600", show_default=True, help="the task's command")
@setting("--cpus", default=0.1, show_default=True, type=float)
@setting("--mem", default=32.0, show_default=True, type=float)
@setting("--label", "labels", multiple=True, callback=_label, help="task label KEY=VALUE")
@setting(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=float,
    help="compress the saga's schedules and timeouts by this factor (demo, tests)",
)
@setting("--heartbeat", default=15.0, show_default=True, help="master heartbeat (s)")
@setting("--metrics-port", default=None, type=int, help="serve Prometheus metrics here")
@setting(
    "--api",
    default="127.0.0.1:0",
    show_default=True,
    metavar="HOST:PORT|off",
    help="the operator API and live web view (port 0: any free one, printed at start-up)",
)
@setting(
    "--api-token-file",
    metavar="FILE",
    help="bearer tokens for the API, one per line ([NAME] TOKEN); required off loopback",
)
@setting("--dry-run", is_flag=True, help="decide and record commands, never dispatch")
@setting(
    "--digest",
    "digest_path",
    default=None,
    help="on a clean stop, write a digest of the live state here (the demo's audit)",
)
@setting(
    "--snapshot-every",
    default=100_000,
    show_default=True,
    type=click.IntRange(0),
    help="take a snapshot every this many events (0: never); a restart folds the newest "
    "snapshot and the tail after it",
)
@setting(
    "--snapshots-kept",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="older snapshots are deleted (the log never is)",
)
@setting(
    "--max-in-flight",
    default=None,
    type=click.IntRange(1),
    help=f"at most this many status updates between arrival and acknowledgement; past it the "
    f"master's event stream is read only as fast as the log commits and the master takes "
    f"acknowledgements (memory stays bounded)  [default: {DEFAULT_IN_FLIGHT:,} divided by "
    f"--time-scale]",
)
@setting(
    "--max-launching",
    default=MAX_LAUNCHING,
    show_default=True,
    type=click.IntRange(1),
    help="at most this many of the job's tasks launching (ASSIGNED or STARTING) at once: a "
    "large job launches in waves, each RUNNING before the saga's transient timeout",
)
@setting("-v", "--verbose", is_flag=True, help="log what happens (INFO), tracebacks in full")
@click.pass_context
def run_command(ctx: click.Context, **values: Any) -> None:
    """Run the embedded scheduler against a Mesos master."""
    if values["print_config"]:
        print_config(ctx, values)
        return
    # Everything that can be checked is, before anything is configured or created.
    runtime, failure = _prepare(values)
    import pymesos  # noqa: F401  (in the main thread: it installs a SIGINT handler)

    configure_logging(values["verbose"])

    def stop(signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            fatal = _fatal_abort()
            if fatal == "":
                return  # pymesos's driver aborted: the supervisor starts a new one
            if fatal is not None:
                failure.append(fatal)
        runtime.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # An operator's reconciliation, now: SIGUSR1 an explicit run, SIGUSR2 an implicit one.
    signal.signal(signal.SIGUSR1, lambda signum, frame: runtime.request_reconciliation("explicit"))
    signal.signal(signal.SIGUSR2, lambda signum, frame: runtime.request_reconciliation("implicit"))
    status = _run(runtime)
    if failure:
        raise Failed(failure[0])
    raise SystemExit(status)


def _prepare(values: dict[str, Any]) -> tuple[Any, list[str]]:
    """The runtime, once everything that can be checked before the log exists is checked."""
    from engine.mesos.core import JobSpec
    from engine.mesos.runtime import Runtime, RuntimeConfig
    from tools.mesos_master import (
        MasterAddressError,
        MasterTLSError,
        MasterUnreachable,
        find,
        parse,
    )

    if not values["master"]:
        raise Failed("--master is required (or TASKLEDGER_MASTER, or master = ... in --config)")
    if not values["log_path"]:
        raise Failed("--log is required (or TASKLEDGER_LOG, or log = ... in --config)")
    try:
        address = parse(values["master"], tls=values["master_tls"])
    except MasterAddressError as e:
        raise Failed(str(e)) from None
    tls = _tls(values, address.tls)
    credential = _credential(values["principal"], values["secret_file"])
    local, replication = _replication(values)
    api = _api(values["api"], values["api_token_file"])
    try:
        found = find(address, values["master_timeout"], tls)
    except (MasterUnreachable, MasterTLSError) as e:
        if api is not None:
            api.sock.close()
        if isinstance(e, MasterTLSError):
            raise Failed(str(e)) from None
        raise Failed(f"{e} (waited {values['master_timeout']:g} s: --master-timeout)") from None
    saga_options: dict[str, Any] = {}
    if values["time_scale"] != 1.0:
        saga_options["time_scale"] = values["time_scale"]
    if values["dry_run"]:
        saga_options["dry_run"] = True
    framework_fields = {
        key: values[key] for key in ("principal", "role", "webui_url") if values[key]
    }
    config = RuntimeConfig(
        master=address.text,
        log_path=local,
        replication=replication,
        job=JobSpec(
            values["job"],
            values["instances"],
            values["cmd"],
            values["cpus"],
            values["mem"],
            values["labels"],
        ),
        framework_name=values["framework_name"],
        user=values["user"],
        failover_timeout=values["failover_timeout"],
        heartbeat_interval=values["heartbeat"],
        saga_options=saga_options,
        digest_path=values["digest_path"],
        snapshot_every=values["snapshot_every"],
        snapshots_kept=values["snapshots_kept"],
        framework_fields=framework_fields,
        credential=credential,
        tls=tls,
        max_in_flight=values["max_in_flight"] or in_flight_for(values["time_scale"]),
        max_launching=values["max_launching"],
    )
    _install_crash_hooks()
    services: list[Any] = [_Announce(found, config, api)]
    if api is not None:
        services.append(api)
    port = values["metrics_port"]
    return Runtime(config, services=services, observer=None if port is None else _serve(port)), []


TLS_FILES = ("ca_file", "client_cert", "client_key")


def _tls(values: dict[str, Any], wanted: bool) -> Any:
    """The TLS every connection to the master uses (None: plain HTTP), its files read."""
    from engine.mesos.tls import MasterTLS, TLSSettings, TLSSettingsError

    if not wanted:
        given = [f"--{k.replace('_', '-')}" for k in TLS_FILES if values[k]]
        if given:
            raise Failed(
                f"{given[0]} is for TLS to the master: give --master https://HOST:PORT "
                "(or --master-tls)"
            )
        return None
    try:
        return MasterTLS(TLSSettings(**{k: values[k] for k in TLS_FILES}))
    except TLSSettingsError as e:
        raise Failed(str(e)) from None


HA_OPTIONS = ("zk", "replica", "local", "password_file")


def _replication(values: dict[str, Any]) -> tuple[str, Any]:
    """The mirror's folder and the replication settings (None: the embedded LMDB log)."""
    from engine.log_address import LogAddressError, is_log_url, parse_log_url, parse_zk
    from engine.replication import ReplicationConfig

    if not is_log_url(values["log_path"]):
        given = [f"--{k.replace('_', '-')}" for k in HA_OPTIONS if values[k]]
        if given:
            raise Failed(f"{given[0]} is for a replicated log: give --log postgresql://...")
        return values["log_path"], None
    if not values["zk"]:
        raise Failed("--log postgresql://... needs --zk HOST:PORT/PATH (the leader election)")
    try:
        address = parse_log_url(values["log_path"])
        hosts, path = parse_zk(values["zk"])
    except LogAddressError as e:
        raise Failed(str(e)) from None
    replica = values["replica"] or socket.gethostname()
    if "/" in replica or not replica.strip():
        raise Failed(f"--replica {replica!r}: a name without '/'")
    try:
        password = postgres_password(values["password_file"])
    except SecretFileError as e:
        raise Failed(str(e)) from None
    config = ReplicationConfig(
        log=address,
        zk_hosts=hosts,
        zk_path=path,
        replica=replica,
        password=password,
        session_timeout=values["session_timeout"],
    )
    return values["local"] or f"taskledger-mirror-{replica}", config


def _run(runtime: Any) -> int:
    from eventsourcing.persistence import OperationalError

    from engine.election import ElectionError
    from engine.replication import Diverged
    from engine.store import LogOpenError

    try:
        return runtime.run()
    except (LogOpenError, ElectionError, Diverged) as e:
        raise Failed(str(e)) from None
    except OperationalError as e:  # PostgreSQL unreachable (or refusing us) at start-up
        raise Failed(f"the log of record: {e}".splitlines()[0]) from None
    except Exception as e:
        # kazoo's KazooTimeoutError: a driver restarted while ZooKeeper is unreachable.
        if type(e).__name__ == "KazooTimeoutError":
            raise Failed(
                f"ZooKeeper did not answer while starting a new driver for "
                f"{runtime.config.master}: stopped (a restart waits for it again)"
            ) from None
        raise
