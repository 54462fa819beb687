"""Random histories of events (hypothesis strategies over a few tasks, agents and every Mesos
state) and views rebuilt from events: what the tests of the views, the drift, the queries,
the snapshots, the replay kernel and the Ledger share."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from engine.events import (
    FrameworkDisconnected,
    FrameworkRegistered,
    FrameworkReregistered,
    KillRequested,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
)
from engine.mesos_states import TaskState
from projections.views import Views

TASK_IDS = ["t1", "t2", "t3", "t4"]
task_ids = st.sampled_from(TASK_IDS)
agents = st.sampled_from(["a1", "a2"])
mesos_states = st.sampled_from([s.value for s in TaskState])
no_extra = st.just({})

statuses = st.builds(
    StatusUpdateReceived,
    st.just(0.0),
    st.none(),
    task_ids,
    mesos_states,
    st.none() | agents,
    st.none(),
    st.sampled_from(["SOURCE_MASTER", "SOURCE_AGENT", "SOURCE_EXECUTOR"]),
    st.sampled_from(["REASON_RECONCILIATION", "REASON_AGENT_REMOVED"]) | st.none(),
    st.none(),
    st.none() | st.floats(0, 2e9),
    st.none() | st.just("AAECAwQFBgcICQoLDA0ODw=="),
    st.none(),
    st.none(),
    st.booleans(),
    no_extra,
)
scheduler_facts = st.one_of(
    st.builds(
        TaskCreated,
        st.just(0.0),
        st.none(),
        task_ids,
        st.sampled_from(["j1", "j2"]),
        st.integers(0, 3),
        no_extra,
    ),
    st.builds(TaskAssigned, st.just(0.0), st.none(), task_ids, agents, no_extra),
    st.builds(KillRequested, st.just(0.0), st.none(), task_ids, no_extra),
)
framework_facts = st.one_of(
    st.builds(FrameworkRegistered, st.just(0.0), st.none(), st.just("fw"), st.just("m1"), no_extra),
    st.builds(
        FrameworkReregistered, st.just(0.0), st.none(), st.just("fw"), st.just("m2"), no_extra
    ),
    st.builds(FrameworkDisconnected, st.just(0.0), st.none(), st.none() | st.just("m1"), no_extra),
)
# Status updates twice as likely: they are most of a real log.
any_event = st.one_of(scheduler_facts, statuses, statuses, framework_facts)


def number(events: list[Any]) -> list[tuple[int, Any]]:
    """Events as a log holds them: (notification id, event), ids from 1, each event's time
    its id."""
    return [(nid, e._replace(time=float(nid))) for nid, e in enumerate(events, start=1)]


histories = st.lists(any_event, max_size=60).map(number)


def run(*events: Any) -> Views:
    """The views of a log of these events, in this order."""
    return Views.rebuild(number(list(events)))
