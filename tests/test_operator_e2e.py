"""An operator's first hour, end to end: a real `taskledger run` process against the
simulated master with HTTP basic authentication, watched in headless Chromium and ordered
about with `taskledger ctl`.

One scheduler serves the whole module (in order): it subscribes with its principal and
secret; ctl needs its token; an operator kills a task and `why` names them; an agent
partition makes the saga want to give half the job up as LOST, the blast-radius breaker
halts it, the page shows it, and `ctl resume` releases it without a restart; the pages
show the numbers the forensic commands print for the same notification id. Screenshots of
each page are kept in test-artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pytest
from cli_log import run
from headless import browse, console_lines
from sim_session import inject, state, wait_until

from tools.operator.client import Client
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
SCALE = 120.0  # the master's clock and the saga's schedules alike
HEARTBEAT = 60.0  # simulated seconds: 0.5 s real
INSTANCES = 10
PRINCIPAL, SECRET = "ops", "s3cret-of-ops"
TOKEN = "tok-0123456789abcdef"
LIVE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING")


@dataclass
class Scheduler:
    proc: subprocess.Popen
    url: str
    log: str
    stderr: str
    token_file: str
    master: str

    def ctl(self, *args: str, token: bool = True) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "tools.cli", "ctl", *args, "--scheduler", self.url]
        if token:
            command += ["--token-file", self.token_file]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)

    def client(self) -> Client:
        return Client(self.url, token=TOKEN)

    def status(self) -> dict:
        return self.client().get("/api/v1/status")

    def view(self) -> dict:
        return self.client().get("/api/v1/view")


def running(address: str, agents: set[str]) -> Counter:
    """instance -> live tasks of it on these agents."""
    counts: Counter = Counter()
    for task in state(address)["tasks"]:
        if (
            task["agent_state"] in LIVE
            and task["agent_id"] in agents
            and task["task_id"].startswith("web/")
        ):
            counts[int(task["task_id"].split("/")[1])] += 1
    return counts


def converged(scheduler: Scheduler) -> bool:
    """Every instance RUNNING in the scheduler's view and every other task over (none being
    killed), no command pending or in flight, nothing halted, and the agents that can be
    reached run each instance once."""
    view = scheduler.view()
    reachable = {a["id"] for a in state(scheduler.master)["agents"] if a["link_up"]}
    states = set(view["counts"]["state"])
    return (
        view["instances"]["running"] == INSTANCES
        and view["counts"]["state"].get("RUNNING") == INSTANCES
        and states <= {"RUNNING", "KILLED", "FINISHED", "FAILED", "LOST", "null"}  # no KILLING
        and not view["breaker"]["halted"]
        and view["commands"]["pending"]["count"] == 0
        and view["commands"]["in_flight"]["count"] == 0  # every KILL sent is confirmed
        and running(scheduler.master, reachable) == Counter(range(INSTANCES))
    )


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    folder = tmp_path_factory.mktemp("operate")
    secret, tokens = folder / "secret", folder / "tokens"
    secret.write_text(SECRET + "\n")
    tokens.write_text(f"{PRINCIPAL} {TOKEN}\n")
    log, err = str(folder / "log"), str(folder / "run.stderr")
    config = SimConfig(agents=2, seed=3, heartbeat_interval=HEARTBEAT)
    with BackgroundSim(config, time_scale=SCALE, credentials={PRINCIPAL: SECRET}) as sim:
        command = [
            *(sys.executable, "-m", "tools.cli", "run", "--master", sim.address, "--log", log),
            *("--principal", PRINCIPAL, "--secret-file", str(secret), "--role", "web"),
            *("--framework-name", "operated", "--instances", str(INSTANCES)),
            *("--time-scale", str(SCALE), "--heartbeat", str(HEARTBEAT / SCALE)),
            *("--api", "127.0.0.1:0", "--api-token-file", str(tokens)),
        ]
        with open(err, "w") as stderr:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            url_file = os.path.join(log, "operator-api")
            wait_until(lambda: os.path.exists(url_file), 30, what="the operator API")
            with open(url_file) as f:
                url = f.read().strip()
            found = Scheduler(proc, url, log, err, str(tokens), sim.address)
            wait_until(lambda: converged(found), 45, what="10 instances running")
            yield found
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_it_subscribed_with_its_credentials_and_says_where_it_is(scheduler):
    frameworks = state(scheduler.master)["frameworks"]
    assert [(f["name"], f["connected"]) for f in frameworks] == [("operated", True)]
    with open(scheduler.stderr) as f:
        first = f.readline()
    assert f"master {scheduler.master}" in first and "principal 'ops', role 'web'" in first
    assert f"log {scheduler.log} " in first and scheduler.url in first
    status = scheduler.status()
    assert status["healthy"] and status["scheduler"]["subscribed"], status


def test_ctl_needs_the_token_and_says_so_in_one_line(scheduler):
    done = scheduler.ctl("status", token=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"taskledger ctl: the scheduler at {scheduler.url.rstrip('/')} answers HTTP 401: it "
        "needs a token (--token-file)"
    ]
    unknown = scheduler.ctl("kill", "web/99/g0")
    assert unknown.returncode == 2 and "unknown task 'web/99/g0'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    dead = subprocess.run(
        [sys.executable, "-m", "tools.cli", "ctl", "status", "--scheduler", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dead.returncode == 2
    assert dead.stderr.strip() == (
        "taskledger ctl: cannot reach the scheduler at http://127.0.0.1:9: Connection refused"
    )


def test_a_kill_is_replaced_and_why_names_the_operator(scheduler):
    task = "web/3/g3"
    done = scheduler.ctl("kill", task, "--reason", "stuck on a bad disk")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{task} (RUNNING) is being killed; web/3/o")
    wait_until(lambda: converged(scheduler), 30, what="the replacement running")
    why = json.loads(run("why", task, "--log", scheduler.log, "--json").output)
    (decision,) = why["scheduler_kills"]
    # The token's name is the operator, whoever ran ctl.
    assert (decision["operator"], decision["reason"]) == ("ops", "stuck on a bad disk")
    (kill,) = why["commands"]
    assert (kill["kind"], kill["rule"], kill["status"]) == ("KILL", "R-KILL-REQUESTED", "confirmed")


def page(chromium_path: str, url: str, profile: str, shot: str | None = None) -> str:
    """The page's DOM after its script ran (and a screenshot of it)."""
    budget = "--virtual-time-budget=4000"
    dom = browse(chromium_path, url, profile + "-dom", budget, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_lines(dom.stderr) == [], console_lines(dom.stderr)
    if shot is not None:
        os.makedirs(ARTIFACTS, exist_ok=True)
        painted = browse(
            chromium_path,
            url,
            profile + "-shot",
            budget,
            f"--screenshot={os.path.join(ARTIFACTS, shot)}",
            "--window-size=1280,2400",
        )
        assert painted.returncode == 0, painted.stderr[-2000:]
        assert console_lines(painted.stderr) == []
    return dom.stdout.decode()


def table_counts(dom: str, table: str) -> dict[str, int]:
    body = re.search(rf'<table id="{table}"[^>]*>(.*?)</table>', dom, re.S)
    assert body, table
    rows = re.findall(r'<tr data-key="([^"]*)">.*?<td class="n">(\d+)</td>', body.group(1), re.S)
    return {key: int(n) for key, n in rows}


def as_of(dom: str) -> str:
    found = re.search(r'<body[^>]*data-as-of="(\d+)"', dom)
    assert found, "the page never rendered a document"
    return found.group(1)


def test_the_breaker_halts_a_partition_and_ctl_resumes_it(scheduler, chromium, tmp_path):
    agents = {a["id"]: a["index"] for a in state(scheduler.master)["agents"]}
    on: Counter = Counter(
        t["agent_id"] for t in state(scheduler.master)["tasks"] if t["agent_state"] in LIVE
    )
    agent, count = on.most_common(1)[0]
    assert count >= 5, f"the job is not spread as expected: {on}"
    inject(scheduler.master, {"kind": "agent_partition", "agent_id": agents[agent]})
    # After the partition timeout the saga would mark half the job LOST: the breaker holds.
    wait_until(lambda: scheduler.status()["breaker"]["halted"], 40, what="the breaker to trip")
    halted = scheduler.status()
    assert halted["breaker"]["affected"] >= 5 and halted["pending_commands"] >= 5
    shown = page(
        chromium, scheduler.url + f"#token={TOKEN}", str(tmp_path / "h"), "web-view-halted.png"
    )
    assert "Dispatch halted by the blast-radius breaker" in shown
    assert "taskledger ctl resume --scheduler" in shown
    done = scheduler.ctl("resume", "--reason", "the agent is gone for good")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dispatch resumed; it was halted because ")
    wait_until(lambda: converged(scheduler), 40, what="the replacements running")
    # The commands the breaker held name, in their why, the operator who let them go.
    query = json.loads(
        run("query", "--log", scheduler.log, "--state", "LOST", "--json", "--limit", "20").output
    )
    assert query["total"] >= 5, query
    approvals = set()
    for item in query["items"]:
        why = json.loads(run("why", item["task_id"], "--log", scheduler.log, "--json").output)
        approvals |= {
            s["what"] for c in why["commands"] for s in c["chain"] if "approved" in s["what"]
        }
    assert approvals == {
        "held by the blast-radius breaker; approved when ops resumed dispatch: the agent is "
        "gone for good"
    }
    (resumed,) = [o for o in scheduler.view()["orders"] if o["kind"] == "DispatchResumed"]
    assert (resumed["operator"], resumed["reason"]) == ("ops", "the agent is gone for good")


def test_the_pages_show_what_the_forensic_commands_print(scheduler, chromium, tmp_path):
    url = scheduler.url + f"#token={TOKEN}"
    dom = page(chromium, url, str(tmp_path / "job"), "web-view-job.png")
    at = as_of(dom)
    query = json.loads(
        run(
            *("query", "--log", scheduler.log, "--as-of", at, "--json"),
            *("--count-by", "state", "--count-by", "mesos_state", "--count-by", "cell"),
        ).output
    )
    assert table_counts(dom, "by-state") == query["counts"]["state"]
    assert table_counts(dom, "by-mesos-state") == query["counts"]["mesos_state"]
    assert table_counts(dom, "by-cell") == query["counts"]["cell"]
    drift = json.loads(run("drift", "--log", scheduler.log, "--as-of", at, "--json").output)
    assert f"{drift['total']} task(s) in disagreement" in dom
    assert "kill <a" in dom and ">web/3/g3</a>" in dom  # the operator's order, listed

    task = "web/3/g3"
    dom = page(
        chromium,
        scheduler.url + f"task?id={task}#token={TOKEN}",
        str(tmp_path / "t"),
        "web-view-task.png",
    )
    at = as_of(dom)
    why = json.loads(run("why", task, "--log", scheduler.log, "--as-of", at, "--json").output)
    history = json.loads(
        run("history", task, "--log", scheduler.log, "--as-of", at, "--json").output
    )
    shown = re.findall(r'<tr data-id="(\d+)">', dom)
    assert shown == [str(e["id"]) for e in history["events"]]
    assert re.findall(r'<div class="why" data-command="(\d+)">', dom) == [
        str(c["command"]) for c in why["commands"]
    ]
    assert "operator ops ordered it killed (order #" in dom
    assert 'data-task="web/3/o' in dom  # its replacement, the next generation
