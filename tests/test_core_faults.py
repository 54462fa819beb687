"""Errors in the scheduler's callbacks become facts in the log, never raises into pymesos's
IO thread (a raise there aborts the driver)."""

from __future__ import annotations

from engine.events import FrameworkError, SchedulerFault
from engine.ledger import Ledger
from engine.mesos.core import JobSpec, SchedulerCore


class RecordingDriver:
    """The calls the core makes, kept for the assertions, each taken at once (the transport
    is tested end to end against the simulated master in test_e2e_*)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def _took(self, call, done):
        self.calls.append(call)
        if done is not None:
            done(None)

    def acknowledge(self, status, done=None):
        self._took(("ack", status["uuid"]), done)

    def launch(self, offer_id, task_infos, done=None):
        self._took(("launch", offer_id, [t["task_id"]["value"] for t in task_infos]), done)

    def decline(self, offer_ids, refuse_seconds, done=None):
        self._took(("decline", tuple(offer_ids)), done)

    def kill(self, task_id, agent_id, done=None):
        self._took(("kill", task_id), done)

    def reconcile(self, tasks, done=None):
        self._took(("reconcile", tuple(tasks)), done)

    def revive(self, done=None):
        self._took(("revive",), done)


def _core(ledger: Ledger) -> SchedulerCore:
    core = SchedulerCore(ledger, JobSpec("web", 2), clock=lambda: 100.0)
    core.driver = RecordingDriver()
    return core


def test_a_failing_callback_is_recorded_not_raised(tmp_path):
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        core = _core(ledger)
        core.offers([{"id": {"value": "o1"}}])  # no agent_id, no resources: unusable
        faults = [e for _, e in ledger.events() if isinstance(e, SchedulerFault)]
        assert len(faults) == 1
        assert faults[0].where == "offers" and "KeyError" in faults[0].error
        assert core.stats.callback_errors == 1


def test_a_master_error_is_recorded(tmp_path):
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        core = _core(ledger)
        core.error("Framework has been removed")
        errors = [e for _, e in ledger.events() if isinstance(e, FrameworkError)]
        assert [e.message for e in errors] == ["Framework has been removed"]


def test_an_update_is_acknowledged_only_after_it_is_in_the_log(tmp_path):
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        core = _core(ledger)
        seen_in_log: list[bool] = []
        driver = core.driver
        original = driver.acknowledge

        def acknowledge(status, done=None):
            uuids = [getattr(e, "uuid", None) for _, e in ledger.events()]
            seen_in_log.append(status["uuid"] in uuids)
            original(status, done)

        driver.acknowledge = acknowledge
        status = {
            "task_id": {"value": "web/0/g0"},
            "state": "TASK_RUNNING",
            "agent_id": {"value": "a1"},
            "uuid": "AAECAwQFBgcICQoLDA0ODw==",
        }
        core.update(status)
        core.update(status)  # a re-delivery (maybe while the first commits): recorded once
        ledger.flush()
        assert seen_in_log == [True, True]
        assert sum(1 for _, e in ledger.events() if getattr(e, "uuid", None)) == 1
        assert core.in_flight.count == 0
