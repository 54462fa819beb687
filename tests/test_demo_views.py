"""What `make demo` prints of the views after its audit (tools/demo.py show_views)."""

from __future__ import annotations

from builders import status_event
from rich.console import Console

from engine.events import StatusUpdateReceived, TaskCreated
from projections.views import Views
from tools.demo import show_views


def _status(task: str, state: str) -> StatusUpdateReceived:
    """An executor's update from agent-1."""
    return status_event(task, state, time=1.0, agent_id="agent-1", source="SOURCE_EXECUTOR")


def test_the_views_and_the_drift_count_are_shown():
    views = Views.rebuild(
        enumerate(
            [
                TaskCreated(1.0, None, "web/0", "web", 0, {}),
                TaskCreated(1.0, None, "web/1", "web", 1, {}),
                _status("rogue/0", "TASK_RUNNING"),  # Mesos runs what the scheduler never knew
            ],
            start=1,
        )
    )
    console = Console(record=True, width=200)
    show_views(console, views)
    text = console.export_text()
    assert "scheduler view: PENDING 2" in text
    assert "Mesos view: TASK_RUNNING 1" in text
    assert "drift: 1 task(s): non-terminal/absent 1" in text
    quiet = Console(record=True, width=200)
    show_views(quiet, Views())
    assert "drift: 0 task(s)" in quiet.export_text()
