"""The faults and the workload of one simulation, drawn from its seed.

Each step of the fault phase injects, with the seed's fault rate, one fault chosen by weight:
scheduler crashes (between steps, or at a driver call or event delivery: before the call
reaches the master, after it took effect, or between two events of the stream), master
failovers, agent partitions (healed later or never), agent removals (never the last agent),
dropped streams, silent streams (the watchdog's case), and the master's armed rules: dropped,
duplicated and reordered updates, lost acknowledgements, lost launches, lost ACCEPTs, slow
calls and failing calls. The workload also grows: scale-ups, executors that die, rogue tasks.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tools.sim_master import protocol
from tools.sim_master.cluster import REMOVED

if TYPE_CHECKING:
    from tools.deterministic.world import World

MAX_INSTANCES = 10

WEIGHTS: dict[str, int] = {
    "crash": 3,
    "crash_at_call": 3,
    "crash_at_event": 2,
    "master_failover": 2,
    "agent_partition": 3,
    "agent_remove": 1,
    "stream_drop": 2,
    "stream_silent": 1,
    "drop_updates": 2,
    "duplicate_updates": 2,
    "reorder_updates": 2,
    "lose_acks": 2,
    "lose_launch": 1,
    "lose_accept": 1,
    "delay_calls": 2,
    "fail_calls": 2,
    "rescind_offers": 1,
    "executor_lost": 2,
    "rogue_task": 1,
    "scale_up": 1,
}
_KINDS = sorted(WEIGHTS)
_CUM = [WEIGHTS[k] for k in _KINDS]


class Chaos:
    """Picks and applies the faults of one seed (all draws from the world's RNG)."""

    def __init__(self, rng: random.Random, world: World) -> None:
        self.rng = rng
        self.world = world
        self.rate = rng.uniform(0.03, 0.12)  # faults per step
        self.injected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def maybe(self) -> None:
        if self.rng.random() >= self.rate:
            return
        kind = self.rng.choices(_KINDS, weights=_CUM)[0]
        done = getattr(self, f"_{kind}")()
        (self.injected if done is not False else self.skipped)[kind] += 1

    # -- the scheduler ---------------------------------------------------------------------------
    def _crash(self) -> bool:
        return self.world.crash_now()

    def _crash_at_call(self) -> bool:
        where = self.rng.choice(("before-call", "after-call"))
        return self.world.arm_crash(where, self.rng.randint(1, 25))

    def _crash_at_event(self) -> bool:
        return self.world.arm_crash("event", self.rng.randint(1, 40))

    # -- the master and the agents -----------------------------------------------------------
    def _agent(self, *, up: bool | None = None) -> Any:
        cluster = self.world.cluster
        agents = [a for a in cluster.agents.values() if a.status != REMOVED]
        if up is not None:
            agents = [a for a in agents if a.link_up == up]
        return self.rng.choice(agents) if agents else None

    def _master_failover(self) -> bool:
        rng, cluster = self.rng, self.world.cluster
        down_for = rng.uniform(0.5, 30.0)
        reregister_after = rng.uniform(0.0, 20.0)
        never = []
        if rng.random() < 0.2:
            agent = self._agent()
            if agent is not None:
                never = [agent.index]
        if not cluster.master_up:
            return False
        return self.world.inject(
            {
                "kind": "master_failover",
                "down_for": down_for,
                "reregister_after": reregister_after,
                "never_return": never,
                # Mesos's agent_reregister_timeout, which the saga's window mirrors.
                "agent_reregister_timeout": self.world.saga_config.runs.reregister_window,
            }
        )

    def _agent_partition(self) -> bool:
        rng = self.rng
        detect_after = rng.choice((0.0, rng.uniform(0.0, 20.0)))
        heal_after = rng.choice((None, rng.uniform(1.0, 150.0)))
        agent = self._agent(up=True)
        if agent is None:
            return False
        done = self.world.inject(
            {"kind": "agent_partition", "agent_id": agent.index, "detect_after": detect_after}
        )
        if done and heal_after is not None:
            self.world.inject({"kind": "agent_heal", "agent_id": agent.index, "after": heal_after})
        return done

    def _agent_remove(self) -> bool:
        agent = self._agent()
        cluster = self.world.cluster
        left = [a for a in cluster.agents.values() if a.status != REMOVED]
        if agent is None or len(left) <= 1:
            return False  # keep room for the job: one agent holds all of it
        return self.world.inject({"kind": "agent_remove", "agent_id": agent.index})

    def _stream_drop(self) -> bool:
        return self.world.inject({"kind": "stream_drop"})

    def _stream_silent(self) -> bool:
        return self.world.inject({"kind": "stream_silent"})

    def _rescind_offers(self) -> bool:
        return self.world.inject({"kind": "rescind_offers"})

    # -- the master's rules ------------------------------------------------------------------------
    def _rule(self, kind: str, **params: Any) -> bool:
        count = self.rng.randint(1, 6)
        probability = self.rng.choice((1.0, 0.5, 0.25))
        return self.world.inject(
            {"kind": kind, "count": count, "probability": probability, **params}
        )

    def _drop_updates(self) -> bool:
        return self._rule("drop_updates")

    def _duplicate_updates(self) -> bool:
        return self._rule("duplicate_updates")

    def _reorder_updates(self) -> bool:
        return self._rule("reorder_updates", hold=self.rng.uniform(0.5, 30.0))

    def _lose_acks(self) -> bool:
        return self._rule("lose_acks")

    def _lose_launch(self) -> bool:
        return self._rule("lose_launch", drop_after=self.rng.uniform(1.0, 60.0))

    def _lose_accept(self) -> bool:
        return self._rule("lose_accept")

    def _delay_calls(self) -> bool:
        return self._rule("delay_calls", seconds=self.rng.uniform(0.1, 10.0))

    def _fail_calls(self) -> bool:
        calls = self.rng.choice(
            (None, ["ACKNOWLEDGE"], ["ACCEPT"], ["KILL", "RECONCILE"], ["SUBSCRIBE"])
        )
        return self._rule("fail_calls", status=self.rng.choice((500, 503)), calls=calls)

    # -- the workload -----------------------------------------------------------------------------
    def _ours(self) -> str | None:
        proc = self.world.proc
        fid = None if proc is None else proc.ledger.mesos_view.framework_id
        return fid if fid in self.world.cluster.frameworks else None

    def _executor_lost(self) -> bool:
        fid = self._ours()
        live = sorted(
            tid
            for (f, tid), t in self.world.cluster.agent_tasks.items()
            if f == fid and not protocol.is_terminal(t.state)
        )
        if not live:
            return False
        task = self.rng.choice(live)
        return self.world.inject({"kind": "executor_lost", "task_id": task, "framework_id": fid})

    def _rogue_task(self) -> bool:
        fid = self._ours()
        agent = self._agent(up=True)
        if fid is None or agent is None:
            return False
        return self.world.inject(
            {"kind": "rogue_task", "framework_id": fid, "agent_id": agent.index}
        )

    def _scale_up(self) -> bool:
        world = self.world
        more = self.rng.randint(1, 2)
        if world.job.instances >= MAX_INSTANCES:
            return False
        world.job = replace(world.job, instances=min(MAX_INSTANCES, world.job.instances + more))
        if world.proc is not None:
            world.proc.core.job = world.job
        return True
