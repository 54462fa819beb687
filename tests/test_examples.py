"""examples/embedded_scheduler.py runs and leaves the log it says; the README shows it as it
is; the demo's closing commands name the log's own tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cli_log import run

from tools.next_steps import next_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "embedded_scheduler.py")


def test_the_embedded_scheduler_example_runs(tmp_path):
    log = str(tmp_path / "log")
    done = subprocess.run(
        [sys.executable, EXAMPLE, log], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "run explicit-1 answered: 2 of 2 answered" in out
    assert "pending: RESCHEDULE web/1/a by R-LIFECYCLE-RESCHEDULE" in out
    assert "pending: KILL web/0/a on agent-1 by R-KILL-REQUESTED" in out
    assert "web/0/a: KILLED | pending: []" in out
    why = json.loads(run("why", "web/1/a", "--log", log, "--json").output)
    (resched,) = why["commands"]
    assert (resched["kind"], resched["status"]) == ("RESCHEDULE", "confirmed")
    assert resched["outcome"].startswith("rescheduled as web/1/r")


def test_the_readme_shows_the_example_as_it_is():
    with open(EXAMPLE) as f:
        code = f.read()
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert f"```python\n{code}```\n" in readme


def test_the_next_steps_name_the_logs_own_tasks(story_log):
    steps = next_steps(story_log)
    assert any(s.startswith(f"taskledger why rogue/1 --log {story_log} ") for s in steps), steps
    assert all("--log" in s and "  # " in s for s in steps)
