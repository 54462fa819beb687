"""Fault injection as data: the catalogue of faults, their parameters, and armed rules.

A fault is a JSON object `{"kind": ..., <params>, "after": seconds}`. Two families:

- actions happen once, when injected (or `after` simulated seconds): a stream drop, a master
  failover, an agent partition, ...
- rules are armed and fire on matching traffic later, `count` times (null: until a
  `clear_rules`), each time with `probability` drawn from the simulator's seeded fault RNG,
  optionally only for one `task_id` or for some call types (`calls`).

All durations are simulated seconds (the server's time-scale compresses them).
`describe()` prints the catalogue; the state endpoint lists the armed rules.
"""

from __future__ import annotations

import json
import random
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

REQUIRED = object()
AgentRef = (str, int)  # an agent id, or its index in the agent list
_NUM = (int, float)

# kind -> {param: (accepted types, default)}
ACTIONS: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "stream_drop": {"framework_id": ((str,), None)},
    "stream_silent": {"framework_id": ((str,), None)},
    "master_failover": {
        "down_for": (_NUM, 5.0),
        "reregister_after": (_NUM, 10.0),
        "never_return": ((list,), []),
        "agent_reregister_timeout": (_NUM, 600.0),
        "recover_for": (_NUM, 0.0),
    },
    "agent_partition": {"agent_id": (AgentRef, REQUIRED), "detect_after": (_NUM, 0.0)},
    "agent_heal": {"agent_id": (AgentRef, REQUIRED)},
    "agent_remove": {"agent_id": (AgentRef, REQUIRED)},
    "rogue_task": {
        "agent_id": (AgentRef, None),
        "framework_id": ((str,), None),
        "task_id": ((str,), None),
    },
    "rescind_offers": {"agent_id": (AgentRef, None)},
    "executor_lost": {"task_id": ((str,), REQUIRED), "framework_id": ((str,), None)},
    "clear_rules": {},
}

RULES: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    # agent updates (those with a uuid) forwarded to the framework
    "drop_updates": {},
    "duplicate_updates": {},
    # held back until an update of another task has gone out, or `hold` seconds
    "reorder_updates": {"hold": (_NUM, 30.0)},
    # ACKNOWLEDGE answered 202 but never reaching the agent
    "lose_acks": {},
    # ACCEPT answered 202 but never reaching the master
    "lose_accept": {},
    # LAUNCH reaching the master but not the agent; the agent drops it `drop_after` later
    "lose_launch": {"drop_after": (_NUM, 60.0)},
    "fail_calls": {"status": ((int,), 503), "calls": ((list,), None)},
    "delay_calls": {"seconds": (_NUM, 2.0), "calls": ((list,), None)},
}

# What each fault does, for `taskledger sim --list-faults` and the README.
WHAT: dict[str, str] = {
    "stream_drop": "cut a framework's event stream (the connection is aborted, no clean "
    "end); framework_id null: every subscribed framework's",
    "stream_silent": "keep a framework's stream open but send nothing more on it, heartbeats "
    "included (a scheduler's watchdog must notice)",
    "master_failover": "the master dies: connections are refused for down_for s; the new "
    "master knows the frameworks and agents but no task until each agent re-registers "
    "(reregister_after s after it is up); those still away after agent_reregister_timeout "
    "are marked unreachable; never_return lists agents (ids or indices) that stay away; "
    "the new master answers 503 for recover_for s first",
    "agent_partition": "cut the network between an agent (id or index) and the master; the "
    "master marks it unreachable detect_after s later (0: at once)",
    "agent_heal": "restore an agent's network: it re-registers (or, if never marked "
    "unreachable, reconnects) and its updates flow again",
    "agent_remove": "the operator removes an agent for good (its tasks are gone)",
    "rogue_task": "a task the framework never launched runs on an agent (default: the first "
    "registered) for a framework (default: the first), with task_id (default: rogue-N)",
    "rescind_offers": "rescind the outstanding offers of one agent (null: of every agent)",
    "executor_lost": "a task's executor dies: a FAILURE event, then TASK_FAILED "
    "(REASON_EXECUTOR_TERMINATED)",
    "clear_rules": "disarm every armed rule",
    "drop_updates": "an agent update (one with a uuid) on its way to the framework is lost; "
    "the agent sends it again after its backoff",
    "duplicate_updates": "an agent update reaches the framework twice",
    "reorder_updates": "an agent update is held back until another task's update has gone "
    "out, or hold s",
    "lose_acks": "an ACKNOWLEDGE is answered 202 but never reaches the agent (the update "
    "comes again)",
    "lose_accept": "an ACCEPT is answered 202 but never reaches the master: its offers are "
    "rescinded, its tasks are unknown",
    "lose_launch": "a LAUNCH reaches the master but not the agent, which reports the task "
    "TASK_DROPPED (TASK_LOST without PARTITION_AWARE) drop_after s later",
    "fail_calls": "calls (those whose type is in `calls`; null: any, SUBSCRIBE included) "
    "are answered `status` and do nothing",
    "delay_calls": "calls (those in `calls`; null: any) take effect, then are answered "
    "`seconds` late",
}

_RULE_COMMON: dict[str, tuple[tuple[type, ...], Any]] = {
    "count": ((int,), 1),
    "probability": (_NUM, 1.0),
    "task_id": ((str,), None),
}


class InvalidFault(ValueError):
    """A fault description that names an unknown kind or a bad parameter."""


@dataclass(frozen=True)
class Fault:
    """One validated fault: its kind, its parameters (defaults filled in) and its delay."""

    kind: str
    params: Mapping[str, Any]
    after: float = 0.0

    @property
    def is_rule(self) -> bool:
        return self.kind in RULES

    def to_json(self) -> dict:
        return {"kind": self.kind, **self.params, "after": self.after}


def parse_fault(obj: object) -> Fault:
    """Validate a fault description (a dict decoded from JSON)."""
    if not isinstance(obj, dict):
        raise InvalidFault(f"a fault is a JSON object, got {obj!r}")
    kind = obj.get("kind")
    if not isinstance(kind, str):  # a list or map is unhashable: no lookup
        kind = repr(kind)
    if kind in ACTIONS:
        spec = ACTIONS[kind]
    elif kind in RULES:
        spec = {**_RULE_COMMON, **RULES[kind]}
    else:
        known = ", ".join(sorted([*ACTIONS, *RULES]))
        raise InvalidFault(f"unknown fault kind {kind!r}; known kinds: {known}")
    after = obj.get("after", 0.0)
    if isinstance(after, bool) or not isinstance(after, _NUM) or after < 0:
        raise InvalidFault(f"{kind}: 'after' must be a number of seconds >= 0, got {after!r}")
    params: dict[str, Any] = {}
    for name, (types, default) in spec.items():
        if name not in obj or obj[name] is None:
            if default is REQUIRED:
                raise InvalidFault(f"{kind}: parameter {name!r} is required")
            params[name] = list(default) if isinstance(default, list) else default
            continue
        got = obj[name]
        if isinstance(got, bool) or not isinstance(got, types):
            want = "/".join(t.__name__ for t in types)
            raise InvalidFault(f"{kind}: parameter {name!r} must be {want}, got {got!r}")
        params[name] = float(got) if types is _NUM else got
    unknown = set(obj) - set(spec) - {"kind", "after"}
    if unknown:
        raise InvalidFault(f"{kind}: unknown parameter(s) {sorted(unknown)}")
    if kind in RULES:
        if params["count"] is not None and params["count"] < 1:
            raise InvalidFault(f"{kind}: 'count' must be >= 1 or null, got {params['count']}")
        if not 0.0 <= params["probability"] <= 1.0:
            raise InvalidFault(f"{kind}: 'probability' must be in [0, 1]")
    if kind == "fail_calls" and not 400 <= params["status"] <= 599:
        raise InvalidFault(
            f"fail_calls: 'status' must be a 4xx or 5xx code, got {params['status']}"
        )
    return Fault(kind, params, float(after))


@dataclass
class ArmedRule:
    """A rule waiting for matching traffic; `remaining` None means unlimited."""

    fault: Fault
    remaining: int | None
    fired: int = 0

    def to_json(self) -> dict:
        return {**self.fault.to_json(), "remaining": self.remaining, "fired": self.fired}


@dataclass
class RuleBook:
    """The armed rules, consulted by the cluster at each point where a fault can strike."""

    rng: random.Random
    rules: list[ArmedRule] = field(default_factory=list)

    def arm(self, fault: Fault) -> None:
        self.rules.append(ArmedRule(fault, fault.params["count"]))

    def clear(self) -> None:
        self.rules.clear()

    def fire(
        self, kind: str, *, task_id: str | None = None, call: str | None = None
    ) -> Fault | None:
        """The first matching rule of `kind` that fires now (consuming one count), or None."""
        for rule in self.rules:
            params = rule.fault.params
            if rule.fault.kind != kind:
                continue
            if params["task_id"] is not None and params["task_id"] != task_id:
                continue
            calls = params.get("calls")
            if calls is not None and call not in calls:
                continue
            # Draw only for probabilistic rules so that certain rules leave the RNG untouched.
            if params["probability"] < 1.0 and self.rng.random() >= params["probability"]:
                continue
            rule.fired += 1
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    self.rules.remove(rule)
            return rule.fault
        return None

    def to_json(self) -> list[dict]:
        return [r.to_json() for r in self.rules]


def describe() -> str:
    """The catalogue as text (for `taskledger sim --list-faults`): each fault, its
    parameters with their defaults, and what it does."""
    lines = [
        'A fault is a JSON object {"kind": ..., <parameters>, "after": seconds}: given to',
        "`taskledger sim --fault JSON` (repeatable) or POSTed to /admin/fault (one object or a",
        "list). `after` (default 0) is simulated seconds to wait before it applies. An agent is",
        "named by its id or its index (0, 1, ...). Durations are simulated seconds.",
        "",
        "actions (happen once):",
    ]
    for kind, spec in ACTIONS.items():
        lines += _entry(kind, spec)
    lines += [
        "",
        "rules (armed now; each strikes matching traffic `count` times (null: until",
        "clear_rules), each time with `probability`, only for `task_id` if given):",
    ]
    for kind, spec in RULES.items():
        lines += _entry(kind, {**_RULE_COMMON, **spec})
    return "\n".join(lines)


def _entry(kind: str, spec: Mapping[str, tuple[tuple[type, ...], Any]]) -> list[str]:
    params = " ".join(
        f"{name}=<required>" if default is REQUIRED else f"{name}={json.dumps(default)}"
        for name, (_types, default) in spec.items()
    )
    return [
        f"  {kind} {params}".rstrip(),
        *textwrap.wrap(WHAT[kind], 88, initial_indent="      ", subsequent_indent="      "),
    ]
