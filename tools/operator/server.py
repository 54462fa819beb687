"""The operator API and the live web view of a running `taskledger run` (aiohttp).

    GET  /health              subscribed, last heartbeat, log writable, breaker (no token)
    GET  /                    the job page          GET /task?id=TASK   a task's page
    GET  /static/NAME         the pages' CSS and JavaScript (served from tools/operator/static)
    GET  /api/v1/status       the scheduler, the job, dry run and the breaker, live
    GET  /api/v1/view         the job page's document (taskledger.view/1)
    GET  /api/v1/task?id=     the task page's document (taskledger.task/1)
    POST /api/v1/resume       {"reason"}                  resume dispatch after the breaker
    POST /api/v1/reconcile    {"kind", "reason"}          start a run now
    POST /api/v1/kill         {"task", "reason", "replace"}  kill a task (and replace it)
    POST /api/v1/scale        {"instances", "reason"}     keep that many instances
    POST /api/v1/dry-run      {"dry_run", "reason"}       dry run on (true) or off (false)

Every order names its operator (the ``X-Taskledger-Operator`` header, or the token's name).
The server runs on a thread and an event loop of its own; page documents are built by one
worker thread (they fold the log, tools/operator/live.py) and orders are carried out by
another, so a slow page never delays an order and nothing here holds the Ledger's locks
longer than an append does.

Bound to a loopback address it answers only requests addressed to loopback (no DNS
rebinding); bound elsewhere it needs tokens (``--api-token-file``) for everything but
/health and the static pages. Orders must be JSON and same-origin, so a web page elsewhere
cannot post them through an operator's browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from aiohttp import web

from tools.commands.common import CommandError, iso
from tools.operator.handle import RuntimeScheduler, Scheduler
from tools.operator.live import LiveState, breaker, task_document, view_document
from tools.operator.orders import OrderError, Orders

log = logging.getLogger("taskledger.operator")

OPERATOR_HEADER = "X-Taskledger-Operator"
# Written into the log folder while the API serves, so `taskledger ctl --log` finds it.
URL_FILE = "operator-api"
PAGES = {"/": "job.html", "/task": "task.html"}
STATIC = {"app.css": "text/css", "app.js": "text/javascript"}
# The pages load their own script and style and fetch from this server only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_OPEN = frozenset({"/health", *PAGES}) | {f"/static/{name}" for name in STATIC}
# The operator a request's token names (None: no token, or one without a name).
TOKEN_NAME = web.RequestKey("token_name", object)


class Tokens:
    """Bearer tokens, each optionally naming its operator: the file has one per line,
    ``TOKEN`` or ``NAME TOKEN``; blank lines and lines starting with # are skipped."""

    def __init__(self, tokens: dict[str, str | None]) -> None:
        if not tokens:
            raise ValueError("a token file must hold at least one token")
        self._tokens = tokens

    @classmethod
    def read(cls, path: str) -> Tokens:
        """The tokens of the file; ValueError (naming the file) if it is unusable."""
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise ValueError(f"cannot read the token file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"the token file {path} is not UTF-8 text") from None
        tokens: dict[str, str | None] = {}
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) > 2:
                raise ValueError(f"{path} line {number}: expected TOKEN or NAME TOKEN")
            token = fields[-1]
            if len(token) < 16:
                raise ValueError(f"{path} line {number}: a token needs at least 16 characters")
            tokens[token] = fields[0] if len(fields) == 2 else None
        if not tokens:
            raise ValueError(f"the token file {path} holds no token")
        return cls(tokens)

    def names(self) -> list[str]:
        return sorted({n for n in self._tokens.values() if n})

    def __len__(self) -> int:
        return len(self._tokens)

    def check(self, header: str | None) -> tuple[bool, str | None]:
        """(accepted, the token's operator name) for an Authorization header."""
        if not header or not header.startswith("Bearer "):
            return False, None
        given = header[len("Bearer ") :].strip().encode()
        for token, name in self._tokens.items():
            if hmac.compare_digest(given, token.encode()):
                return True, name
        return False, None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound before anything else starts, so a busy port is an error
    before the log exists); OSError names the address."""
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as e:
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None


def log_health(scheduler: Scheduler) -> dict[str, Any]:
    """Whether the log can take appends: its folder and file writable, the disk not full."""
    path = scheduler.ledger.path
    data = os.path.join(path, "data.mdb")
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        free = 0
    writable = os.access(path, os.W_OK) and os.access(data, os.W_OK) and free > 0
    return {
        "path": path,
        "writable": writable,
        "free_bytes": free,
        "last_id": scheduler.ledger.last_id,
    }


def health(scheduler: Scheduler) -> tuple[bool, dict[str, Any]]:
    """(healthy, the document): healthy means subscribed, a heartbeat within the watchdog's
    limit, and a writable log. A halted breaker is reported, not unhealthy: restarting the
    process would not resume it (an operator does)."""
    facts = scheduler.facts()
    now = scheduler.now()
    age = None if facts.last_heartbeat is None else now - facts.last_heartbeat
    fresh = age is not None and age <= facts.watchdog
    logged = log_health(scheduler)
    outbox = scheduler.ledger.saga.outbox
    problems = []
    if not facts.subscribed:
        problems.append("not subscribed to the master")
    elif not fresh:
        problems.append(f"no heartbeat for {age:.1f} s (limit {facts.watchdog:g} s)")
    if not logged["writable"]:
        problems.append(f"the log {logged['path']} is not writable")
    if outbox.halted is not None:
        problems.append(f"dispatch halted by the breaker: {outbox.halted.reason}")
    ok = facts.subscribed and fresh and logged["writable"]
    return ok, {
        "schema": "taskledger.health/1",
        "ok": ok,
        "problems": problems,
        "subscribed": facts.subscribed,
        "master": facts.master,
        "framework_id": scheduler.ledger.mesos_view.framework_id,
        "last_heartbeat": facts.last_heartbeat,
        "last_heartbeat_iso": iso(facts.last_heartbeat),
        "heartbeat_age": age,
        "heartbeat_limit": facts.watchdog,
        "log": logged,
        "breaker": breaker(outbox),
    }


def scheduler_json(scheduler: Scheduler) -> dict[str, Any]:
    facts = scheduler.facts()
    return {
        "framework_name": facts.framework_name,
        "framework_id": scheduler.ledger.mesos_view.framework_id,
        "master": facts.master,
        "master_given": facts.master_given,
        "subscribed": facts.subscribed,
        "last_heartbeat": facts.last_heartbeat,
        "last_heartbeat_iso": iso(facts.last_heartbeat),
        "driver_starts": facts.driver_starts,
        "callback_errors": facts.callback_errors,
        "last_error": facts.last_error,
    }


def status(scheduler: Scheduler) -> dict[str, Any]:
    """What `taskledger ctl status` prints: live, cheap, no fold."""
    ledger = scheduler.ledger
    job = scheduler.job()
    ok, checked = health(scheduler)
    return {
        "schema": "taskledger.status/1",
        "log": ledger.path,
        "last_id": ledger.last_id,
        "healthy": ok,
        "problems": checked["problems"],
        "scheduler": scheduler_json(scheduler),
        "job": None if job is None else {"name": job.name, "instances": job.instances},
        "dry_run": ledger.saga_config.dry_run,
        "breaker": checked["breaker"],
        "pending_commands": len(ledger.saga.outbox.pending),
    }


def _error(status_code: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status_code, headers=headers)


class App:
    """The routes over one scheduler."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        tokens: Tokens | None,
        loopback_only: bool,
        live: LiveState | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.tokens = tokens
        self.loopback_only = loopback_only
        ledger = scheduler.ledger
        self.live = live or LiveState.of(ledger)
        self.orders = Orders(scheduler, self.live)
        self.reads = ThreadPoolExecutor(1, thread_name_prefix="operator-reads")
        self.writes = ThreadPoolExecutor(1, thread_name_prefix="operator-orders")
        self._files = {name: _static(name) for name in (*PAGES.values(), *STATIC)}

    def close(self) -> None:
        self.reads.shutdown(wait=True, cancel_futures=True)
        self.writes.shutdown(wait=True, cancel_futures=True)

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/health", self._health)
        for path, name in PAGES.items():
            app.router.add_get(path, self._page(name))
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/v1/status", self._status)
        app.router.add_get("/api/v1/view", self._view)
        app.router.add_get("/api/v1/task", self._task)
        orders: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
            "resume": lambda body, who: self.orders.resume(operator=who, reason=_reason(body)),
            "reconcile": lambda body, who: self.orders.reconcile(
                kind=body.get("kind", "explicit"), operator=who, reason=_reason(body)
            ),
            "kill": lambda body, who: self.orders.kill(
                task_id=body.get("task"),
                operator=who,
                reason=_reason(body),
                replace=body.get("replace", True),
            ),
            "scale": lambda body, who: self.orders.scale(
                instances=body.get("instances"), operator=who, reason=_reason(body)
            ),
            "dry-run": lambda body, who: self.orders.dry_run(
                on=body.get("dry_run"), operator=who, reason=_reason(body)
            ),
        }
        for name, order in orders.items():
            app.router.add_post(f"/api/v1/{name}", self._order(order))
        return app

    # -- the guard: tokens, the Host header, the origin of orders --------------------------
    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.loopback_only and not is_loopback(_host_of(request.host)):
            return _error(421, f"this server answers loopback addresses only, not {request.host}")
        request[TOKEN_NAME] = None
        if self.tokens is not None and request.path not in _OPEN:
            accepted, name = self.tokens.check(request.headers.get("Authorization"))
            if not accepted:
                return _error(
                    401,
                    "a valid bearer token is needed (Authorization: Bearer TOKEN)",
                    **{"WWW-Authenticate": 'Bearer realm="taskledger"'},
                )
            request[TOKEN_NAME] = name
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin not in (
                f"http://{request.host}",
                f"https://{request.host}",
            ):
                return _error(403, f"orders from another origin ({origin}) are refused")
            if request.content_type != "application/json":
                return _error(415, "an order is a JSON body (Content-Type: application/json)")
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as e:  # a bug, or the log failing under us: say so, in JSON
            log.exception("operator API: %s %s failed", request.method, request.path)
            return _error(500, f"the scheduler failed to answer: {type(e).__name__}: {e}")

    # -- reads ------------------------------------------------------------------------------
    async def _run(self, pool: ThreadPoolExecutor, work: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, work)

    async def _health(self, request: web.Request) -> web.Response:
        ok, doc = health(self.scheduler)
        return web.json_response(doc, status=200 if ok else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(status(self.scheduler))

    async def _view(self, request: web.Request) -> web.Response:
        scheduler = self.scheduler

        def build() -> dict[str, Any]:
            return view_document(
                self.live,
                scheduler=scheduler_json(scheduler),
                job=scheduler.job(),
                config=scheduler.ledger.saga_config,
                now=scheduler.now(),
            )

        return web.json_response(await self._run(self.reads, build))

    async def _task(self, request: web.Request) -> web.Response:
        task_id = request.query.get("id", "")
        if not task_id:
            return _error(400, "name the task: /api/v1/task?id=TASK")
        try:
            doc = await self._run(self.reads, lambda: task_document(self.live, task_id))
        except CommandError as e:
            return _error(404, e.message)
        return web.json_response(doc)

    def _page(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def page(request: web.Request) -> web.Response:
            return web.Response(
                body=self._files[name],
                content_type="text/html",
                charset="utf-8",
                headers=_page_headers(),
            )

        return page

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            return _error(404, f"no such file: {name}")
        return web.Response(
            body=self._files[name],
            content_type=STATIC[name],
            charset="utf-8",
            headers=_page_headers(),
        )

    # -- orders -----------------------------------------------------------------------------
    def _order(
        self, order: Callable[[dict[str, Any], str], dict[str, Any]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                body = json.loads(await request.read() or b"{}")
            except ValueError as e:
                return _error(400, f"the body is not JSON: {e}")
            if not isinstance(body, dict):
                return _error(400, "the body must be a JSON object")
            who = (
                request[TOKEN_NAME] or request.headers.get(OPERATOR_HEADER) or body.get("operator")
            )
            try:
                result = await self._run(self.writes, lambda: order(body, who))
            except OrderError as e:
                return _error(e.status, str(e))
            log.info("operator %s: %s: %s", who, request.path.rsplit("/", 1)[-1], result["detail"])
            return web.json_response(result)

        return handle


def _reason(body: dict[str, Any]) -> Any:
    return body.get("reason", "")


def _host_of(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }


def _static(name: str) -> bytes:
    return resources.files("tools.operator").joinpath("static", name).read_bytes()


class OperatorAPI:
    """The API and the web view as a runtime service (engine/mesos/runtime.py starts it
    once the runtime is ready and stops it before the log closes)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        tokens: Tokens | None = None,
        url_file: bool = True,
    ) -> None:
        host, port = sock.getsockname()[:2]
        self.sock = sock
        self.tokens = tokens
        self.loopback_only = is_loopback(host)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"
        self._url_file = url_file
        self._written: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._app: App | None = None
        self._runner: web.AppRunner | None = None

    def start(self, runtime: Any) -> None:
        self.serve(RuntimeScheduler(runtime))

    def serve(self, scheduler: Scheduler) -> None:
        """Serves the API for ``scheduler`` on a thread of its own; returns once listening."""
        self._app = App(scheduler, tokens=self.tokens, loopback_only=self.loopback_only)
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            assert self._loop is not None and self._app is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._runner = web.AppRunner(self._app.application(), access_log=None)
                self._loop.run_until_complete(self._runner.setup())
                site = web.SockSite(self._runner, self.sock)
                self._loop.run_until_complete(site.start())
            except BaseException as e:
                failed.append(e)
                started.set()
                return
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="operator-api", daemon=True)
        self._thread.start()
        started.wait(10)
        if failed:
            raise failed[0]
        if self._url_file:
            self._written = os.path.join(scheduler.ledger.path, URL_FILE)
            with open(self._written, "w") as f:
                f.write(self.url + "\n")

    def stop(self) -> None:
        if self._written is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._written)
            self._written = None
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if self._app is not None:
            self._app.close()
            self._app = None
