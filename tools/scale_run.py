"""The scale run: `taskledger sim` and `taskledger run` as two processes over HTTP, with N tasks.

What a user runs, watched the way a user can watch it: the scheduler's Prometheus metrics
(`--metrics-port`), its log opened read-only, the master's admin API for the fault, and a
signal for the operator's reconciliation. Nothing reaches into either process.

    run = ScaleRun(tasks=100_000, folder=...)
    run.start()                  # the master, then the scheduler's empty baseline (RSS)
    launch = run.launch()        # until every task is RUNNING and acknowledged
    explicit = run.failover()    # a master failover, then the explicit run of all N
    implicit = run.implicit()    # an operator's implicit run (SIGUSR2)
    run.stop()

Each phase returns a `Burst`: how long it took, the answers it recorded and how fast
(between the first and the last, by the times the log gives them), and the mean events per
group commit over the phase (from the scheduler's commit histogram). `taskledger demo
--tasks N` shows it with progress; benchmarks/e2e.py adds the ceilings beside it. With
``tls=True`` the master serves https with throwaway certificates (tools/throwaway_pki.py)
and everything that reaches it (the scheduler, the admin API) speaks TLS.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

TASKS_PER_AGENT = 250
AGENT_CPUS = 100.0
AGENT_MEM = 100_000.0
TASK_CPUS = 0.01
TASK_MEM = 1.0


@dataclass
class Burst:
    """One phase of the run, measured."""

    name: str
    seconds: float = 0.0  # the phase, from its start to its end condition
    answers: int = 0  # tasks answered (each counted once) while the phase's run ran
    answer_seconds: float = 0.0  # from the first answer to the one that completed the set
    answers_per_second: float = 0.0
    commits: int = 0
    events: int = 0
    events_per_commit: float = 0.0
    run_id: str | None = None
    # CPU seconds each process used during the phase (of its wall time: are they busy?)
    scheduler_cpu: float = 0.0
    sim_cpu: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(proc: subprocess.Popen[bytes] | None) -> float:
    """User + system CPU time the process used so far (0 if it is gone)."""
    if proc is None:
        return 0.0
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> dict[str, int]:
    """The process's resident memory in bytes: all of it, and its anonymous part (the
    rest is file pages: the log's memory map, the interpreter's files)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return {
        "rss": out.get("VmRSS", 0),
        "anon": out.get("RssAnon", 0),
        "file": out.get("RssFile", 0),
    }


class Metrics:
    """A scrape of the scheduler's /metrics: sample name and labels -> value."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, tuple], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[s.name, tuple(sorted(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def commits(self) -> tuple[float, float]:
        """(commits, events) the group commit made so far."""
        name = "taskledger_group_commit_batch_size"
        return self.get(f"{name}_count"), self.get(f"{name}_sum")


class ScaleRun:
    """The two processes and the phases (see the module docstring)."""

    def __init__(
        self,
        *,
        tasks: int,
        folder: str,
        time_scale: float = 10.0,
        max_in_flight: int | None = None,
        run_args: tuple[str, ...] = (),
        progress: Callable[[str], None] = lambda line: None,
        timeout: float = 1800.0,
        tls: bool = False,
    ) -> None:
        self.tasks, self.folder, self.time_scale = tasks, folder, time_scale
        self.tls = tls
        self.ca_file: str | None = None  # with tls: the CA the master's certificate is of
        self._context: ssl.SSLContext | None = None
        self.max_in_flight = max_in_flight
        self.run_args = tuple(run_args)  # more options of taskledger run
        self.progress = progress
        self.timeout = timeout
        self.agents = max(1, -(-tasks // TASKS_PER_AGENT))
        self.master = f"127.0.0.1:{free_port()}"
        self.log = os.path.join(folder, "log")
        self.sim: subprocess.Popen[bytes] | None = None
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.memory: dict[str, Any] = {}

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        err = open(os.path.join(self.folder, f"{name}.stderr"), "wb")  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "tools.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )

    def start(self) -> None:
        """Starts the master and measures both processes' empty baselines."""
        port = self.master.rsplit(":", 1)[1]
        serve_tls: list[str] = []
        if self.tls:
            from pathlib import Path

            from tools.throwaway_pki import local_master

            ca, cert = local_master(Path(self.folder))
            self.ca_file = str(ca.cert)
            self._context = ssl.create_default_context(cafile=self.ca_file)
            serve_tls = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]
        self.sim = self._spawn(
            "sim",
            [
                "sim",
                "--port",
                port,
                "--agents",
                str(self.agents),
                "--cpus",
                str(AGENT_CPUS),
                "--mem",
                str(AGENT_MEM),
                "--time-scale",
                str(self.time_scale),
                *serve_tls,
            ],
        )
        self._wait(lambda: self._master_up(), 60, "the master to listen")
        time.sleep(0.5)
        self.memory["sim_empty"] = rss(self.sim.pid)
        # The scheduler's baseline: the same program with no task, subscribed, then stopped.
        empty = self._run_scheduler(os.path.join(self.folder, "empty-log"), 0, "empty")
        self._wait(lambda: self._registered(), 60, "the empty scheduler to subscribe")
        time.sleep(1.0)
        self.memory["scheduler_empty"] = rss(empty.pid)
        self._terminate(empty)

    def _run_scheduler(self, log: str, instances: int, name: str) -> subprocess.Popen[bytes]:
        self.metrics_port = free_port()
        args = [
            "run",
            "--master",
            self.master_url,
            "--log",
            log,
            "--instances",
            str(instances),
            "--cpus",
            str(TASK_CPUS),
            "--mem",
            str(TASK_MEM),
            "--time-scale",
            str(self.time_scale),
            "--heartbeat",
            str(15.0 / self.time_scale),
            "--metrics-port",
            str(self.metrics_port),
        ]
        if self.max_in_flight is not None:
            args += ["--max-in-flight", str(self.max_in_flight)]
        if self.ca_file is not None:
            args += ["--ca-file", self.ca_file]
        return self._spawn(name, [*args, *self.run_args])

    def _terminate(self, proc: subprocess.Popen[bytes]) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def stop(self) -> None:
        """Stops both processes (the scheduler cleanly, first)."""
        for proc in (self.scheduler, self.sim):
            if proc is not None:
                self._terminate(proc)

    def stop_scheduler(self) -> None:
        if self.scheduler is not None:
            self.memory["scheduler_full"] = rss(self.scheduler.pid)
            code = self._terminate(self.scheduler)
            self.scheduler = None
            if code != 0:
                raise RuntimeError(f"taskledger run exited {code}: {self._stderr('run')}")

    # -- observing ---------------------------------------------------------------------------
    @property
    def master_url(self) -> str:
        """The master as `taskledger run --master` takes it (https:// with tls)."""
        return f"{'https' if self.tls else 'http'}://{self.master}"

    def _master_up(self) -> bool:
        try:
            url = f"{self.master_url}/version"
            with urllib.request.urlopen(url, timeout=2, context=self._context) as r:
                return r.status == 200
        except OSError:
            return False

    def scrape(self) -> Metrics | None:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as r:
                return Metrics(r.read().decode())
        except OSError:
            return None

    def _registered(self) -> bool:
        m = self.scrape()
        return (
            m is not None
            and m.get("taskledger_events_appended_total", kind="FrameworkRegistered") > 0
        )

    def _wait(self, ok: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            for name, proc in (("sim", self.sim), ("run", self.scheduler)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}: {self._stderr(name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout:.0f} s")
            time.sleep(every)

    def _stderr(self, name: str) -> str:
        try:
            with open(os.path.join(self.folder, f"{name}.stderr"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def inject(self, fault: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{self.master_url}/admin/fault",
            data=json.dumps(fault).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30, context=self._context) as r:
            if r.status != 200:
                raise RuntimeError(f"fault {fault} refused: {r.status}")

    # -- phases -------------------------------------------------------------------------------
    def launch(self) -> Burst:
        """Starts the scheduler with N instances; ends once every task is RUNNING in its
        view and no update is in flight (each one acknowledged)."""
        burst = Burst("launch")
        started = time.monotonic()
        sim_cpu = cpu_seconds(self.sim)
        self.scheduler = self._run_scheduler(self.log, self.tasks, "run")
        last_print = 0.0
        state: dict[str, float] = {}

        def done() -> bool:
            nonlocal last_print
            m = self.scrape()
            if m is None:
                return False
            state["running"] = m.get("taskledger_tasks", state="RUNNING")
            state["in_flight"] = m.get("taskledger_updates_in_flight")
            state["commits"], state["events"] = m.commits()
            now = time.monotonic()
            if now - last_print >= 5.0:
                last_print = now
                self.progress(
                    f"  {now - started:6.1f} s: {state['running']:,.0f} of {self.tasks:,} "
                    f"RUNNING, {state['in_flight']:,.0f} updates in flight"
                )
            return state["running"] >= self.tasks and state["in_flight"] == 0

        self._wait(done, self.timeout, f"{self.tasks} tasks RUNNING", every=0.5)
        burst.seconds = time.monotonic() - started
        burst.scheduler_cpu = cpu_seconds(self.scheduler)
        burst.sim_cpu = cpu_seconds(self.sim) - sim_cpu
        burst.commits, burst.events = int(state["commits"]), int(state["events"])
        burst.events_per_commit = burst.events / max(1, burst.commits)
        return burst

    def failover(self) -> Burst:
        """A master failover (agents back at once); ends when the explicit run the
        re-registration starts has completed."""
        return self._reconciliation(
            "explicit after failover",
            lambda: self.inject(
                {"kind": "master_failover", "down_for": 0.5, "reregister_after": 0}
            ),
            kind="explicit",
        )

    def implicit(self) -> Burst:
        """An operator's implicit run (SIGUSR2); ends when it has completed (quiet)."""
        assert self.scheduler is not None
        return self._reconciliation(
            "implicit",
            lambda: self.scheduler.send_signal(signal.SIGUSR2),  # type: ignore[union-attr]
            kind="implicit",
        )

    def _reconciliation(self, name: str, cause: Callable[[], None], *, kind: str) -> Burst:
        from tools.readonly import ReadOnlyLedger

        burst = Burst(name)
        before = self.scrape()
        assert before is not None
        with ReadOnlyLedger.open(self.log) as ledger:
            since = ledger.last_id
        runs = "taskledger_reconciliation_runs_total"
        completed = sum(
            v for (n, labels), v in before.samples.items() if n == runs and ("kind", kind) in labels
        )
        started = time.monotonic()
        cpu = cpu_seconds(self.scheduler), cpu_seconds(self.sim)
        cause()
        last_print = 0.0

        def done() -> bool:
            nonlocal last_print
            m = self.scrape()
            if m is None:
                return False
            now = time.monotonic()
            if now - last_print >= 2.0:
                last_print = now
                awaited = m.get("taskledger_reconciliation_answers_awaited", kind=kind)
                self.progress(f"  {now - started:6.1f} s: {awaited:,.0f} answers awaited")
            ended = sum(
                v for (n, labels), v in m.samples.items() if n == runs and ("kind", kind) in labels
            )
            return ended > completed and self._runs(since, kind)[0] is not None

        self._wait(done, self.timeout, f"the {name} reconciliation", every=0.25)
        burst.seconds = time.monotonic() - started
        burst.scheduler_cpu = cpu_seconds(self.scheduler) - cpu[0]
        burst.sim_cpu = cpu_seconds(self.sim) - cpu[1]
        after = self.scrape()
        assert after is not None
        (c0, e0), (c1, e1) = before.commits(), after.commits()
        burst.commits, burst.events = int(c1 - c0), int(e1 - e0)
        burst.events_per_commit = burst.events / max(1, burst.commits)
        self._answers(burst, since, kind)
        return burst

    def _runs(self, since: int, kind: str) -> tuple[Any, list[Any]]:
        """The first run of ``kind`` started after ``since`` that completed (its
        ReconciliationCompleted, or None), and the times of the answers recorded while it
        ran that answered a task for the first time in it. (A re-registration starts a run,
        and the saga's own after-registration run may supersede it: whichever completes is
        the one measured. Another run's answers may come meanwhile: a task answered twice
        counts once.)"""
        from tools.readonly import ReadOnlyLedger

        started: dict[str, int] = {}
        answers: list[Any] = []
        with ReadOnlyLedger.open(self.log) as ledger:
            for nid, event in ledger.events(since + 1):
                topic = type(event).__name__
                if topic == "ReconciliationStarted" and event.kind == kind:
                    started[event.run_id] = nid
                elif topic == "StatusUpdateReceived" and started and event.is_reconciliation_answer:
                    answers.append((nid, event.time, event.task_id))
                elif topic == "ReconciliationCompleted" and event.run_id in started:
                    first = started[event.run_id]
                    seen: set[str] = set()
                    times = []
                    for nid, when, task in answers:
                        if nid > first and task not in seen:
                            seen.add(task)
                            times.append(when)
                    return event, times
        return None, [when for _, when, _ in answers]

    def _answers(self, burst: Burst, since: int, kind: str) -> None:
        """The run's answers, read from the log: how many, first to last."""
        completed, times = self._runs(since, kind)
        if completed is not None:
            burst.run_id = completed.run_id
            burst.extra = {
                "outcome": completed.outcome,
                "asked": completed.asked,
                "answered": completed.answered,
                "run_seconds": completed.duration,
            }
        burst.answers = len(times)
        if len(times) > 1 and times[-1] > times[0]:
            burst.answer_seconds = times[-1] - times[0]
            burst.answers_per_second = (len(times) - 1) / burst.answer_seconds
