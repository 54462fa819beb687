"""Why a task was acted on: for each command about it, the chain from observation to outcome.

    observations (the evidence events, with ids and times)
      -> what found it (a run, an update, a timer: tools/forensics/found_by.py) -> the rule
      -> the command -> its dispatch -> the outcome

and first a sentence: "killed because the implicit run #12 at 03:12:04 found it TASK_RUNNING
on agent-3 while the scheduler had it FINISHED since 02:58:10 (rule R-IMPLICIT-KILL-TERMINAL)".
A replacement also says where it came from: the RESCHEDULE that created it, and its ancestor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from engine import rules
from engine.events import (
    CommandCancelled,
    CommandConfirmed,
    CommandDispatched,
    CommandFailed,
    KillRequested,
    TaskMarkedLost,
)
from tools.forensics import found_by as finders
from tools.forensics.history import summary
from tools.forensics.index import RECONCILE, Command, LogIndex, Moment, Run
from tools.forensics.leaders import Leadership
from tools.forensics.outcomes import plural, run_story
from tools.forensics.times import clock as _clock

# The command kind as a past participle, for the sentence.
VERBS: dict[str, str] = {
    "KILL": "killed",
    "MARK_LOST": "marked LOST",
    "RESCHEDULE": "rescheduled",
    "RECONCILE": "asked about",
}


class Step(NamedTuple):
    """One link of a chain."""

    step: str  # "observation", "run", "rule", "command", "dispatch", "outcome", "leader"
    id: int | None  # the notification id of the event behind it, if one
    time: float | None
    what: str
    # Who wrote the event behind it, in a replicated log (tools/forensics/leaders.py).
    epoch: int | None = None
    replica: str | None = None


class Chain(NamedTuple):
    """One command about the task, and everything that led to it and came of it."""

    command: int  # the command id (its CommandIssued notification id)
    kind: str
    rule: str
    rule_reason: str | None  # from engine.rules; None for a rule this build does not know
    run: str | None
    run_ordinal: int | None
    status: str  # "confirmed", "cancelled", "dispatched", "failed", "pending"
    outcome: str | None
    sentence: str
    found: Moment | None
    steps: list[Step]
    found_by: str = finders.UPDATE  # tools/forensics/found_by.py's word
    answers: str | None = None  # a RECONCILE's: "answered", "partly answered", "unanswered"
    task: str | None = None  # the task it acts on (a replacement's chain: its ancestor)


class Lineage(NamedTuple):
    """Where a replacement came from."""

    command: int  # the RESCHEDULE that created it
    ancestor: str  # the task it replaced
    ancestors: list[str]  # all of them, the nearest first


def rule_reason(rule_id: str) -> str | None:
    found = rules.RULES.get(rule_id)
    return None if found is None else found.reason


def _found_clause(found: Moment | None) -> str:
    if found is None:
        return "found it"
    if found.mesos_state is None:
        mesos = "found Mesos had never reported it"
    else:
        mesos = f"found it {found.mesos_state}"
        if found.mesos_agent:
            mesos += f" on {found.mesos_agent}"
    if found.scheduler_state is None:
        scheduler = "the scheduler did not know it"
    else:
        scheduler = f"the scheduler had it {found.scheduler_state}"
        if found.scheduler_time is not None:
            scheduler += f" since {_clock(found.scheduler_time)}"
    return f"{mesos} while {scheduler}"


def _evidence(command: Command) -> list[int]:
    """The command's evidence ids, each once, in the order it gives them (a rule may name
    one event twice: the update that moved both views)."""
    return list(dict.fromkeys(command.event.evidence or ()))


def finder_of(index: LogIndex, command: Command, lookup: Callable[[int], Any | None]) -> str:
    """What made the saga issue the command (tools/forensics/found_by.py's word)."""
    run = index.runs.get(command.run_id) if command.run_id is not None else None
    kinds = [type(e).topic for e in map(lookup, _evidence(command)) if e is not None]
    return finders.found_by(command.rule, None if run is None else run.kind, kinds)


def who_found(command: Command, run: Run | None, finder: str) -> str:
    """The subject of the sentence: what found the task, with its time."""
    if run is not None:
        return f"the {run.kind} run #{run.ordinal} at {_clock(run.time)}"
    at = _clock(command.event.time)
    evidence = _evidence(command)
    if finder == finders.TIMER:
        return f"the saga's timer at {at}"
    if finder == finders.SCHEDULER:
        return f"the saga, carrying out the scheduler's own kill decision at {at},"
    if finder == finders.FOLLOW_UP:
        return f"the saga, following up its own verdict at {at},"
    source = f"event #{evidence[0]}" if evidence else "an update"
    return f"the saga, reacting to {source} at {at},"


def sentence(command: Command, run: Run | None, finder: str) -> str:
    """The chain in one sentence."""
    verb = VERBS.get(command.kind, f"{command.kind} issued")
    who = who_found(command, run, finder)
    text = f"{verb} because {who} {_found_clause(command.found)} (rule {command.rule})"
    answers = command.answers
    if command.status == "confirmed":
        text += f"; confirmed at {_clock(command.outcome_time)} ({command.outcome})"
    elif command.outcome_nid is not None:
        text += f"; {command.outcome} at {_clock(command.outcome_time)}"
    elif answers is not None:
        text += f"; {_answers(command)}"
    elif command.status in ("dispatched", "failed"):
        text += f"; {command.status}, not yet confirmed"
    else:
        text += "; not yet dispatched"
    if command.event.dry_run:
        text += " (dry run: never sent)"
    return text


def _answers(command: Command) -> str:
    """A RECONCILE's answers in words: "answered by 200 of 200 (03:01:42 to 03:01:43)"."""
    asked = "every task" if command.asked is None else str(command.asked)
    if not command.answered:
        return f"unanswered ({asked} asked)"
    span = _clock(command.first_answer_time)
    if command.last_answer_time != command.first_answer_time:
        span += f" to {_clock(command.last_answer_time)}"
    heard = plural(command.answered, "answer")
    return f"{command.answers}: {heard} to {asked} asked ({span})"


def _step_of(nid: int, event: Any) -> Step:
    kind = type(event)
    if kind is CommandDispatched:
        return Step("dispatch", nid, event.time, "handed to the driver")
    if kind is CommandFailed:
        return Step(
            "dispatch",
            nid,
            event.time,
            f"send failed: {event.error}; retry at {_clock(event.retry_at)}",
        )
    if kind is CommandConfirmed:
        what = f"confirmed: {event.outcome}"
        if event.causation is not None:
            what += f" (by event #{event.causation})"
        return Step("outcome", nid, event.time, what)
    if kind is CommandCancelled:
        return Step("outcome", nid, event.time, f"cancelled: {event.reason}")
    if kind is TaskMarkedLost:
        return Step("outcome", nid, event.time, f"task marked LOST by rule {event.rule}")
    return Step("outcome", nid, event.time, type(event).topic)


def chain(index: LogIndex, command: Command, lookup: Callable[[int], Any | None]) -> Chain:
    """The chain of one command; `lookup(nid)` reads an evidence event from the log."""
    e = command.event
    run = index.runs.get(e.run_id) if e.run_id is not None else None
    steps: list[Step] = []
    for nid in _evidence(command):
        evidence = lookup(nid)
        if evidence is None:
            steps.append(Step("observation", nid, None, "(not in the log)"))
        else:
            steps.append(Step("observation", nid, evidence.time, summary(evidence)))
    finder = finder_of(index, command, lookup)
    if run is not None:
        steps.append(
            Step(
                "run",
                run.nid,
                run.time,
                f"{run.kind} run #{run.ordinal} ({run.run_id}, {run.trigger}): "
                + run_story(run, index.commands),
            )
        )
    if command.found is not None:
        f = command.found
        steps.append(
            Step(
                "run" if run is not None else "observation",
                command.nid,
                e.time,
                f"found by {finder}: cell {f.cell} ({finders.cell_finder(f.found_by)}): "
                f"Mesos {f.mesos_state or '-'}, scheduler {f.scheduler_state or '-'}",
            )
        )
    reason = rule_reason(e.rule)
    steps.append(
        Step("rule", None, None, f"{e.rule}: {reason or '(not in this build’s rule table)'}")
    )
    what = f"{e.kind} #{command.nid}"
    if e.task_id is None and e.tasks is not None:
        what += f" for {len(e.tasks)} task(s)" if e.tasks else " (implicit)"
    if e.attempt > 1:
        what += f", attempt {e.attempt}"
    if e.retry_of is not None:
        what += f", retry of #{e.retry_of}"
    if e.dry_run:
        what += " (dry run)"
    steps.append(Step("command", command.nid, e.time, what))
    approval = approved_by(index, command)
    if approval is not None:
        steps.append(approval)
    steps.extend(_step_of(nid, ev) for nid, ev in command.steps)
    if command.kind == RECONCILE and command.answers is not None:
        steps.append(Step("outcome", None, command.last_answer_time, _answers(command)))
    elif command.outcome_nid is None:
        steps.append(Step("outcome", None, None, f"none yet ({command.status})"))
    steps = with_leaders(index, steps, run)
    return Chain(
        command.nid,
        e.kind,
        e.rule,
        reason,
        e.run_id,
        None if run is None else run.ordinal,
        command.status,
        command.outcome,
        sentence(command, run, finder) + failover_clause(index, command),
        command.found,
        steps,
        finder,
        command.answers,
        e.task_id,
    )


# What a change of leader between two links of a chain means, by the later link's step.
_TOOK_OVER: dict[str, str] = {
    "dispatch": "and dispatched what {old} had left pending",
    "outcome": "and saw the outcome of what {old} had begun",
    "command": "and issued the command on what {old} had recorded",
    "run": "and went on with the run {old} had started",
}


def _took_over(new: Leadership, old: Leadership | None, step: str) -> str:
    text = f"failover: {new.label()} took over (event #{new.nid})"
    if old is None:
        return text
    then = _TOOK_OVER.get(step, "after {old}")
    return f"{text} " + then.format(old=old.label())


def failover_clause(index: LogIndex, command: Command) -> str:
    """What the sentence adds when a failover split the command's life: who issued it and
    who carried it on; "" when one leader (or no replicated log) saw it through."""
    leaders = index.leaders
    issued = leaders.writer_of(command.nid)
    last = leaders.writer_of(command.steps[-1][0]) if command.steps else None
    if issued is None or last is None or last.nid <= issued.nid:
        return ""
    return f" (issued under {issued.label()}, carried on by {last.label()} after a failover)"


def with_leaders(index: LogIndex, steps: list[Step], run: Run | None) -> list[Step]:
    """The steps with their writers, in a replicated log, and a "leader" step wherever the
    leader changed between two of them (a failover in the middle of the chain) or the run
    was the first a new leader started (it reconciles when it takes over). A log one
    process wrote: the steps as they are."""
    leaders = index.leaders
    if not leaders:
        return steps
    took_over = None if run is None else index.first_runs.get(run.run_id)
    shown: list[Step] = []
    latest: Leadership | None = None  # the newest leadership of the steps so far
    announced: set[int] = set()  # the leaderships a "leader" step named already
    for s in steps:
        writer = None if s.id is None else leaders.writer_of(s.id)
        if writer is None:
            shown.append(s)
            continue
        what = None
        if latest is not None and writer.nid > latest.nid:
            what = _took_over(writer, latest, s.step)
        elif writer == took_over and s.step == "run":
            old = leaders.before(writer)
            what = f"{writer.label()} took over (event #{writer.nid})"
            if old is not None:
                what += f" from {old.label()}"
            what += " and started this run: a new leader reconciles first"
        if what is not None and writer.nid not in announced:
            announced.add(writer.nid)
            shown.append(Step("leader", writer.nid, writer.time, what, *writer[2:]))
        if latest is None or writer.nid > latest.nid:
            latest = writer
        shown.append(s._replace(epoch=writer.epoch, replica=writer.replica))
    return shown


def chains(index: LogIndex, task_id: str, lookup: Callable[[int], Any | None]) -> list[Chain]:
    """Every command that acted on the task, oldest first, as chains."""
    return [chain(index, c, lookup) for c in index.commands_about(task_id)]


def lineage(index: LogIndex, task_id: str) -> Lineage | None:
    """The RESCHEDULE that created the task and the tasks it replaced, or None for a task
    the scheduler created itself."""
    made = index.created_by.get(task_id)
    if made is None:
        return None
    ancestors: list[str] = []
    current = task_id
    while current in index.created_by and len(ancestors) <= len(index.created_by):
        parent = index.commands[index.created_by[current]].event.task_id
        if parent is None or parent in ancestors:
            break
        ancestors.append(parent)
        current = parent
    return Lineage(made, ancestors[0], ancestors) if ancestors else None


def approved_by(index: LogIndex, command: Command) -> Step | None:
    """The operator's resume that released the command, if it waited through one: the
    breaker holds every command but RECONCILE, and a resume approves those pending then."""
    if command.kind == "RECONCILE":
        return None
    until = command.steps[0][0] if command.steps else None
    for nid, resumed in index.resumes:
        if nid > command.nid and (until is None or nid < until):
            why = f": {resumed.reason}" if resumed.reason else ""
            return Step(
                "dispatch",
                nid,
                resumed.time,
                f"held by the blast-radius breaker; approved when {resumed.operator} resumed "
                f"dispatch{why}",
            )
    return None


# What an operator's order that caused the scheduler's kill did, in words.
ORDERS: dict[str, Callable[[Any], str]] = {
    "KillOrdered": lambda e: "ordered it killed",
    "JobScaled": lambda e: f"scaled {e.job} from {e.previous} to {e.instances} instance(s)",
}
NO_ORDER = dict.fromkeys(("order", "operator", "reason", "what"))


def ordered_by(lookup: Callable[[int], Any | None], event: Any) -> dict[str, Any]:
    """The operator's order behind a scheduler decision (its causation): who, what, why and
    its id; all None if the scheduler decided alone."""
    if event is None or event.causation is None:
        return dict(NO_ORDER)
    order = lookup(event.causation)
    describe = None if order is None else ORDERS.get(type(order).topic)
    if describe is None:
        return dict(NO_ORDER)
    return {
        "order": event.causation,
        "operator": order.operator,
        "reason": order.reason,
        "what": describe(order),
    }


def scheduler_decisions(index: LogIndex, task_id: str) -> list[tuple[int, float]]:
    """(id, time) of the scheduler's own kill decisions about the task (KillRequested)."""
    return [
        (row.nid, row.event.time)
        for row in index.task_events.get(task_id, ())
        if type(row.event) is KillRequested
    ]
