"""The simulated master's HTTP shell: aiohttp routes, event streams, and the scaled clock.

Everything the master decides lives in `cluster.Cluster`; this module only moves bytes and
time. Simulated time is `(monotonic - start) * time_scale`, so a time-scale of 20 turns the
15 s heartbeat into 0.75 s and the 10 s update re-send into 0.5 s.

Routes:
- GET /version: {"version": "1.11.0"}
- POST /api/v1/scheduler: SUBSCRIBE (a chunked RecordIO stream) and every other call
- GET /state: the cluster snapshot (snapshot.py): whole by default; `?counts=1` for counts
  only (fast at any size), `?offset=N&limit=M` for a page of tasks, `?task_id=ID` for one
  task, `&acknowledged=0` to leave out the acknowledged updates
- POST /admin/fault: inject a fault (one JSON object, or a list), see faults.py
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import sys
import threading
import weakref
from dataclasses import replace
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tools.sim_master import calls, recordio
from tools.sim_master.cluster import Cluster
from tools.sim_master.config import SimConfig
from tools.sim_master.effects import CloseStream, Effect, Emit, ListenerDown, ListenerUp, Reply
from tools.sim_master.faults import Fault, InvalidFault, parse_fault
from tools.sim_master.snapshot import InvalidQuery, StateQuery

log = logging.getLogger("taskledger.sim")

SCHEDULER_PATH = "/api/v1/scheduler"
MAX_BODY = 1 << 30
_CLOSE = b"close"
_ABORT = b"abort"


class SimServer:
    """One simulated master on one address. Use inside a running asyncio loop:
    `await server.start()`, later `await server.stop()`."""

    def __init__(
        self,
        config: SimConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 5050,
        time_scale: float = 1.0,
        faults: list[Fault | dict] | None = None,
        credentials: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.host = host
        self.port = port
        self.time_scale = time_scale
        self._config = config
        self._initial_faults = [f if isinstance(f, Fault) else parse_fault(f) for f in faults or []]
        # principal -> secret: with these, the scheduler API needs HTTP basic authentication
        # and a SUBSCRIBE's framework_info.principal must be the authenticated one (Mesos).
        self.credentials = credentials
        # With one, every route is served over TLS only (a Mesos master built with SSL).
        self.ssl_context = ssl_context
        self.cluster: Cluster | None = None
        self._streams: dict[str, asyncio.Queue[bytes]] = {}
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._t0 = 0.0
        self._listener_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        # aiohttp refuses bodies over 1 MB by default; one ACCEPT of thousands of tasks or a
        # RECONCILE of 100,000 is several MB, and a real master takes them.
        app = web.Application(middlewares=[self._track_transport], client_max_size=MAX_BODY)
        app.router.add_get("/version", self._version)
        app.router.add_route("*", SCHEDULER_PATH, self._scheduler)
        app.router.add_get("/state", self._state)
        app.router.add_post("/admin/fault", self._fault)
        # Handler cancellation tells a stream handler at once that its client went away.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, logger=_OneLineLog(log, {})
        )
        await self._runner.setup()
        await self._listen()
        config = replace(self._config, port=self.port, wire_time_scale=self.time_scale)
        self.cluster = Cluster(config)
        self._t0 = asyncio.get_running_loop().time()
        for fault in self._initial_faults:
            self._dispatch(self.cluster.inject(fault, self.now()))
        self._clock_task = asyncio.create_task(self._run_clock())

    async def stop(self) -> None:
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock_task
        for queue in self._streams.values():
            queue.put_nowait(_ABORT)
        await self._close_connections()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner,
            self.host,
            self.port,
            reuse_address=True,
            ssl_context=self.ssl_context,
        )
        await self._site.start()
        if self.port == 0:
            server = self._site._server  # the one way aiohttp exposes the bound port
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _close_connections(self) -> None:
        for transport in list(self._transports):
            transport.close()

    async def _go_down(self) -> None:
        async with self._listener_lock:
            if self._site is not None:
                await self._site.stop()
                self._site = None
            for queue in self._streams.values():
                queue.put_nowait(_ABORT)
            await self._close_connections()

    async def _go_up(self) -> None:
        async with self._listener_lock:
            if self._site is None:
                await self._listen()

    # ----------------------------------------------------------------------------- clock

    def now(self) -> float:
        """Simulated seconds since start."""
        return (asyncio.get_running_loop().time() - self._t0) * self.time_scale

    async def _run_clock(self) -> None:
        # A timer handle plus an Event, not asyncio.wait_for: on 3.11 wait_for can swallow
        # the cancellation that stop() sends, leaving the server unable to shut down.
        assert self.cluster is not None
        loop = asyncio.get_running_loop()
        while True:
            deadline = self.cluster.next_deadline()
            alarm = None
            if deadline is not None:
                delay = max(0.0, (deadline - self.now()) / self.time_scale)
                alarm = loop.call_later(delay, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if alarm is not None:
                    alarm.cancel()
            self._wake.clear()
            try:
                self._dispatch(self.cluster.tick(self.now()), wake=False)
            except Exception:  # a bug in the model must not silently stop the clock
                log.exception("simulator tick failed")

    def _dispatch(self, effects: list[Effect], *, wake: bool = True) -> None:
        """Carry out the model's effects; `wake` makes the clock re-read the next deadline."""
        for effect in effects:
            if isinstance(effect, Emit):
                queue = self._streams.get(effect.stream_id)
                if queue is not None:
                    queue.put_nowait(recordio.encode(effect.event))
            elif isinstance(effect, CloseStream):
                queue = self._streams.get(effect.stream_id)
                if queue is not None:
                    queue.put_nowait(_ABORT if effect.abort else _CLOSE)
            elif isinstance(effect, ListenerDown):
                self._spawn(self._go_down())
            elif isinstance(effect, ListenerUp):
                self._spawn(self._go_up())
        if wake:
            self._wake.set()

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------------------- routes

    @web.middleware
    async def _track_transport(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.transport is not None:
            self._transports.add(request.transport)
        try:
            response = await handler(request)
        except web.HTTPException as err:  # e.g. the router's 404
            _log_refusal(request, err.status, err.text or err.reason)
            raise
        if response.status >= 400:
            text = response.text if isinstance(response, web.Response) else None
            _log_refusal(request, response.status, text or response.reason)
        return response

    async def _version(self, request: web.Request) -> web.Response:
        assert self.cluster is not None
        return web.json_response({"version": self.cluster.config.version})

    async def _state(self, request: web.Request) -> web.Response:
        assert self.cluster is not None
        try:
            query = StateQuery.from_params(dict(request.query))
        except InvalidQuery as err:
            return web.json_response({"error": str(err)}, status=400)
        snap = self.cluster.snapshot(query)
        snap["master"]["time_scale"] = self.time_scale
        snap["master"]["port"] = self.port
        return web.json_response(snap)

    async def _fault(self, request: web.Request) -> web.Response:
        assert self.cluster is not None
        try:
            body = json.loads(await request.read())
            faults = [parse_fault(f) for f in (body if isinstance(body, list) else [body])]
            for fault in faults:
                self._dispatch(self.cluster.inject(fault, self.now()))
        except (ValueError, InvalidFault) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response({"injected": [f.to_json() for f in faults]})

    async def _scheduler(self, request: web.Request) -> web.StreamResponse:
        """Mesos's order of checks (src/master/http.cpp, `scheduler`): a master that cannot
        answer (503), the method (405), the Content-Type, compared exactly (400 without
        one, 415 for any other), the body (400); then the model's own checks."""
        assert self.cluster is not None
        ready = self.cluster.availability(self.now())
        self._dispatch(ready.effects)
        if ready.status != 200:
            return _plain(ready.status, ready.message)
        if request.method != "POST":
            return _plain(405, f"Expecting 'POST', received '{request.method}'", allow="POST")
        content_type = request.headers.get("Content-Type")
        if content_type is None:
            return _plain(400, "Expecting 'Content-Type' to be present")
        if content_type == calls.PROTOBUF:
            return _plain(415, f"This simulated master reads {calls.JSON} bodies only")
        if content_type != calls.JSON:
            return _plain(415, f"Expecting 'Content-Type' of {calls.JSON} or {calls.PROTOBUF}")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as err:
            return _plain(400, f"Failed to parse body into JSON: {err}")
        refused = self._refuse(request, body)
        if refused is not None:
            return refused
        stream_id = request.headers.get("Mesos-Stream-Id")
        if isinstance(body, dict) and body.get("type") == "SUBSCRIBE":
            return await self._subscribe(request, body, stream_id)
        reply = self.cluster.call(body, stream_id, self.now())
        self._dispatch(reply.effects)
        if reply.delay > 0:
            await asyncio.sleep(reply.delay / self.time_scale)
        if reply.status == 202:
            return web.Response(status=202)
        return _plain(reply.status, reply.message)

    def _refuse(self, request: web.Request, body: object) -> web.Response | None:
        """401 without valid credentials, 403 for a framework of another principal."""
        if self.credentials is None:
            return None
        principal, _, secret = _basic(request.headers.get("Authorization", ""))
        if principal not in self.credentials or self.credentials[principal] != secret:
            return web.Response(
                status=401, text="Unauthorized", headers={"WWW-Authenticate": 'Basic realm="mesos"'}
            )
        if isinstance(body, dict) and body.get("type") == "SUBSCRIBE":
            info = (body.get("subscribe") or {}).get("framework_info") or {}
            if info.get("principal") != principal:
                return _plain(
                    403,
                    f"Framework principal {info.get('principal')!r} does not match {principal!r}",
                )
        return None

    async def _subscribe(
        self, request: web.Request, body: dict, stream_id: str | None
    ) -> web.StreamResponse:
        assert self.cluster is not None
        accept = request.headers.get("Accept")
        reply: Reply = self.cluster.subscribe(body, stream_id, self.now(), accept=accept)
        if reply.status != 200 or reply.stream_id is None:
            self._dispatch(reply.effects)
            return _plain(reply.status, reply.message)
        sid = reply.stream_id
        # The queue exists before any effect is dispatched, so nothing for it is lost.
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._streams[sid] = queue
        self._dispatch(reply.effects)
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Mesos-Stream-Id": sid}
        )
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            while True:
                item = await queue.get()
                if item is _ABORT:
                    if request.transport is not None:
                        request.transport.close()
                    break
                if item is _CLOSE:
                    await response.write_eof()
                    break
                await response.write(item)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._streams.pop(sid, None)
            if self.cluster is not None:
                self._dispatch(self.cluster.disconnected(sid, self.now()))
        return response


def _basic(header: str) -> tuple[str, str, str]:
    """(principal, ":", secret) of an HTTP basic Authorization header, or empty parts."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", "", ""
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", "", ""


def _log_refusal(request: web.Request, status: int, reason: str | None) -> None:
    """One line for each request the master refused: what was asked, and why not."""
    log.warning("%s %s: %d %s", request.method, request.path_qs, status, reason)


class _OneLineLog(logging.LoggerAdapter):
    """aiohttp's server log, with one line for each request it could not parse (a bad
    request line, header, Content-Length or chunk: it answers 400) instead of a traceback.
    Any other exception, a bug in the simulator, keeps its traceback."""

    def exception(self, msg: object, *args: object, exc_info: object = True, **kw: Any) -> None:
        err = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(err, HttpProcessingError):
            lines = [ln.strip() for ln in str(err.message).splitlines() if ln.strip()]
            reason = lines[0].rstrip(":") if lines else type(err).__name__
            peer = args[0] if args else "?"
            log.warning("a request from %s it could not parse: %d %s", peer, err.code, reason)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kw)


def _plain(status: int, message: str, **headers: str) -> web.Response:
    extra = {k.capitalize(): v for k, v in headers.items()}
    return web.Response(status=status, text=message, headers=extra)


async def serve(
    config: SimConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 5050,
    time_scale: float = 1.0,
    faults: list[Fault | dict] | None = None,
    started: threading.Event | None = None,
    stop: asyncio.Event | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> SimServer:
    """Run a simulated master until `stop` is set (forever without one)."""
    server = SimServer(
        config,
        host=host,
        port=port,
        time_scale=time_scale,
        faults=faults,
        ssl_context=ssl_context,
    )
    await server.start()
    try:
        if started is not None:
            started.set()
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop()
    return server


class BackgroundSim:
    """A simulated master on its own thread and event loop, for tests and demos.

    with BackgroundSim(SimConfig(agents=2), time_scale=20) as sim:
        sim.address   # "127.0.0.1:PORT", what pymesos takes as master
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        faults: list[Fault | dict] | None = None,
        credentials: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._server = SimServer(
            config or SimConfig(),
            host=host,
            port=port,
            time_scale=time_scale,
            faults=faults,
            credentials=credentials,
            ssl_context=ssl_context,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sim-master", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._server.start())
        except BaseException as err:
            self._error = err
            self._started.set()
            self._loop.close()
            return
        self._started.set()
        try:
            self._loop.run_forever()
            self._loop.run_until_complete(self._server.stop())
        finally:
            self._loop.close()

    def start(self) -> BackgroundSim:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("simulated master did not start within 10 s")
        if self._error is not None:
            raise RuntimeError(f"simulated master failed to start: {self._error}")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("simulated master did not stop within 10 s")

    def __enter__(self) -> BackgroundSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def address(self) -> str:
        return f"{self._server.host}:{self._server.port}"

    @property
    def url(self) -> str:
        scheme = "http" if self._server.ssl_context is None else "https"
        return f"{scheme}://{self.address}"
