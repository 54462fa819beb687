"""The allocator: what each agent has free, the offers made of it, and refusal filters.

Every `allocation_interval` (and after a SUBSCRIBE, a REVIVE or an agent's re-registration)
each connected agent with free resources is offered, whole, to the first framework (by id)
that wants offers and has not refused that agent: Mesos's allocator in its simplest form.
A pass costs O(agents + frameworks): what an agent's tasks hold is kept by the census.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from tools.sim_master import protocol
from tools.sim_master.census import Census
from tools.sim_master.kernel import Kernel
from tools.sim_master.records import Agent, Framework, Offer
from tools.sim_master.resources import Resources

if TYPE_CHECKING:
    from tools.sim_master.agents import Fleet
    from tools.sim_master.master import Master


class Allocator:
    """The offers outstanding (offer id -> Offer) and the allocation pass."""

    master: Master
    fleet: Fleet

    def __init__(self, kernel: Kernel, census: Census) -> None:
        self.k = kernel
        self.census = census
        self.offers: dict[str, Offer] = {}
        self._on_agent: dict[str, dict[str, Offer]] = {}  # agent id -> its offers
        self._ids = itertools.count()

    def used(self, agent: Agent) -> Resources:
        """What the agent's live tasks and its outstanding offers hold."""
        used = self.census.used(agent.id)
        for offer in self._on_agent.get(agent.id, {}).values():
            used = used + offer.resources
        return used

    def _add(self, offer: Offer) -> None:
        self.offers[offer.id] = offer
        self._on_agent.setdefault(offer.agent_id, {})[offer.id] = offer

    def take(self, offer_id: str) -> Offer | None:
        """Withdraw one offer (None if there is no such offer)."""
        offer = self.offers.pop(offer_id, None)
        if offer is not None:
            on_agent = self._on_agent[offer.agent_id]
            del on_agent[offer_id]
            if not on_agent:
                del self._on_agent[offer.agent_id]
        return offer

    def allocate(self) -> None:
        master = self.master
        if not master.up:
            return
        batches: dict[str, list[dict]] = {}
        active = [
            fw
            for _, fw in sorted(master.frameworks.items())
            if fw.stream_id is not None and not fw.removed and not fw.suppressed
        ]
        clock, never = self.k.clock, float("-inf")
        for agent in self.fleet.agents.values():
            if not active or not self.fleet.connected(agent):
                continue
            # The framework it goes to, looked for first: a pass over agents that every
            # framework refuses (the usual case once they are busy) then costs next to nothing.
            fw = next((f for f in active if f.filters.get(agent.id, never) <= clock), None)
            if fw is None:
                continue
            free = agent.total - self.used(agent)
            if free.is_empty():
                continue
            oid = f"{master.id}-O{next(self._ids)}"
            self._add(Offer(oid, fw.id, agent.id, free))
            batches.setdefault(fw.id, []).append(
                protocol.offer(oid, fw.id, agent.id, agent.hostname, free.to_proto())
            )
        for fid, batch in batches.items():
            master.send(fid, protocol.offers(batch))

    def t_allocate(self) -> None:
        self.allocate()
        self.k.after(self.k.config.allocation_interval, "allocate")

    def drop(
        self, framework_id: str | None, *, agent_id: str | None = None, rescind: bool = True
    ) -> None:
        """Withdraw the offers of a framework and/or an agent (None: any), rescinding them."""
        pool = self.offers if agent_id is None else self._on_agent.get(agent_id, {})
        for oid, offer in sorted(pool.items()):
            if framework_id is not None and offer.framework_id != framework_id:
                continue
            self.take(oid)
            if rescind:
                self.master.send(offer.framework_id, protocol.rescind(oid))

    def refuse_seconds(self, seconds: float | None) -> float:
        return self.k.config.default_refuse_seconds if seconds is None else seconds

    def refuse(self, fw: Framework, agent_id: str, seconds: float | None) -> None:
        """A filter: the agent is not offered to the framework for that long."""
        refuse = self.refuse_seconds(seconds)
        if refuse > 0:
            fw.filters[agent_id] = self.k.clock + refuse

    def decline(self, fw: Framework, offer_ids: tuple[str, ...], seconds: float | None) -> None:
        refuse = self.refuse_seconds(seconds)
        for oid in offer_ids:
            offer = self.offers.get(oid)
            if offer is None or offer.framework_id != fw.id:
                continue
            self.take(oid)
            if refuse > 0:
                fw.filters[offer.agent_id] = self.k.clock + refuse

    def clear(self) -> None:
        """A failover: the new master has made no offers."""
        self.offers.clear()
        self._on_agent.clear()
