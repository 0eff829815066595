"""What MM shows on each machine when the ERP has several open tickets there: the multi-ticket rule.

ERP tickets are people's clock-ins; an MM job run is what a machine is doing. `shop_floor` turns
the first into the second, before `reconcile` (domain/reconcile.py) diffs them against what MM was
told. The rule (docs/architecture.md, "Several tickets on one machine"):

1. **One operation, several people** (crew, helper, setup tech then operator): overlapping open
   tickets on the same operation and machine are ONE MM run, from the first clock-in to the last
   clock-out. It is in production as soon as any of them is a run ticket.
2. **Different operations**: the operation of the most recent clock-in (ties: the greater ticket
   key) is shown. The run of any other operation open on the machine is stopped at that clock-in,
   and every other ticket still open there is flagged once as a likely forgotten clock-out.
3. **Shown again**: when the shown operation's last ticket closes while another operation's ticket
   is still open, that operation is shown again as a **new run generation**: a new deterministic
   MM run id (`generation_key`), started when the machine was freed (the latest clock-out on the
   machine after that ticket's clock-in). A reopened ticket (CLOCK_OUT set back to NULL) and a run
   that comes back after erpsync stopped it (e.g. transient bad data) take the same path: a
   stopped binding is not a dead end. A failed one is (MM refused it; a person decides).

The MM run is keyed by its **anchor**, the earliest open ticket of the operation when the run
started: generation 1 is the anchor's own run key (so a shop with one ticket per machine is keyed
exactly as before), generation n > 1 is ``<anchor>#g<n>``. The binding follows its anchor ticket:
the run stays as long as any open ticket on the anchor's operation and machine.

Tickets this rule cannot place (blank, ignored, refused or excluded machines) pass through
unchanged, so `reconcile` quarantines or skips them with its own reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from erpsync.domain.flags import binding_flag, run_flag
from erpsync.domain.identity import generation_run_id, mm_run_id_for
from erpsync.domain.lifecycle import MM_OPEN_BINDING_STATUSES, BindingStatus, BoundRun
from erpsync.domain.model import JobOperationRun, RunState
from erpsync.domain.plan import Flag, FlagKind

GENERATION_MARK = "#g"
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_ENDED = RunState.ENDED

OpId = tuple[tuple[str, ...], str]  # (job key, operation sequence): one routing step


def generation_key(anchor: str, number: int) -> str:
    """The binding key of generation ``number`` of ``anchor``'s run (1: the anchor's own key)."""
    if number < 1:
        raise ValueError(f"run generations count from 1, got {number}")
    return anchor if number == 1 else f"{anchor}{GENERATION_MARK}{number}"


def anchor_of(key: str) -> tuple[str, int]:
    """(anchor ticket key, generation number) of a binding key; ``LT7#g3`` -> (``LT7``, 3)."""
    anchor, mark, number = key.rpartition(GENERATION_MARK)
    if mark and anchor and number.isdigit() and int(number) > 1 and not number.startswith("0"):
        return anchor, int(number)
    return key, 1


def anchors(keys: Iterable[str]) -> set[str]:
    """The anchor tickets of these binding keys (what a source must look up to judge them)."""
    return {anchor_of(key)[0] for key in keys}


@dataclass(slots=True)
class Floor:
    """What MM should show, as runs `reconcile` diffs against the bindings (by binding key)."""

    runs: dict[str, JobOperationRun] = field(default_factory=dict)
    mm_ids: dict[str, str] = field(default_factory=dict)  # new generations' MM run ids
    reasons: dict[str, str] = field(default_factory=dict)  # why a run starts or stops now
    flags: list[Flag] = field(default_factory=list)
    superseded: int = 0  # open tickets not shown because a later clock-in took their machine


def _op_id(run: JobOperationRun) -> OpId:
    return (run.operation.job_key, run.operation.operation_seq)


def _start(run: JobOperationRun) -> datetime:
    return run.start_at or _EARLIEST


def _what(run: JobOperationRun) -> str:
    return f"{run.operation.job_name} op {run.operation.operation_seq}"


@dataclass(eq=False)
class _Machine:
    """One MM machine's open tickets and the runs erpsync has open on it."""

    open: list[JobOperationRun] = field(default_factory=list)
    ended: list[JobOperationRun] = field(default_factory=list)
    live: dict[OpId, tuple[BoundRun, JobOperationRun]] = field(default_factory=dict)  # run, anchor
    run_ends: list[datetime] = field(default_factory=list)  # when erpsync's earlier runs there ended


def shop_floor(
    tickets: Mapping[str, JobOperationRun],
    bindings: Mapping[str, BoundRun],
    *,
    source: str,
    machine_of: Callable[[JobOperationRun], str | None],
    now: datetime,
) -> Floor:
    """Apply the multi-ticket rule. ``tickets``: the ERP's runs by run key (open and recently
    ended, plus lookups of bound anchors); ``bindings`` by key, with every generation of the
    anchors of open tickets; ``machine_of``: a ticket's MM machine, or None to pass it through."""
    floor = Floor()
    machines: dict[str, _Machine] = {}
    placed: set[str] = set()  # ticket keys the rule decides (not passed through)
    generations: dict[str, list[BoundRun]] = {}
    for key in sorted(bindings):
        generations.setdefault(anchor_of(key)[0], []).append(bindings[key])
        _place_binding(floor, machines, bindings[key], tickets, machine_of)
    sticky = {t.run_key: b.mm_machine_id for s in machines.values() for b, t in s.live.values()}
    for key, ticket in tickets.items():
        mm_machine = sticky.get(key) or machine_of(ticket)
        if mm_machine is None:
            continue
        slot = machines.setdefault(mm_machine, _Machine())
        (slot.ended if ticket.state is _ENDED else slot.open).append(ticket)
        placed.add(key)
    for mm_machine in sorted(machines):
        _decide(floor, mm_machine, machines[mm_machine], generations, source=source, now=now)
    for key, ticket in tickets.items():
        if key not in placed and key not in floor.runs:
            floor.runs[key] = ticket
    # ended tickets the rule did not need: `Planner` counts them (history is never started)
    for key in placed:
        if key not in floor.runs and tickets[key].state is _ENDED:
            floor.runs[key] = tickets[key]
    return floor


def _place_binding(
    floor: Floor,
    machines: dict[str, _Machine],
    bound: BoundRun,
    tickets: Mapping[str, JobOperationRun],
    machine_of: Callable[[JobOperationRun], str | None],
) -> None:
    """Put a run MM may have open on its machine (by its anchor ticket's operation); a finished
    one only tells when the machine was freed."""
    key = bound.run_key
    anchor = anchor_of(key)[0]
    ticket = tickets.get(anchor)
    if bound.status not in MM_OPEN_BINDING_STATUSES:
        end = bound.mm_end_at or bound.erp_end_at
        if end is not None:
            machines.setdefault(bound.mm_machine_id, _Machine()).run_ends.append(end)
        return
    if ticket is None:  # the ERP lost it: `Planner`'s vanished rule
        return
    if machine_of(ticket) is None:  # excluded or unmapped now: `Planner` decides, by binding key
        floor.runs[key] = ticket if key == anchor else replace(ticket, run_key=key)
        return
    # the run stays on the machine it was started on (a machine edit is flagged by reconcile)
    slot = machines.setdefault(bound.mm_machine_id, _Machine())
    op = _op_id(ticket)
    if op in slot.live:  # state from before this rule: two runs of one operation -> end one
        _end(floor, bound, ticket, [], f"{_what(ticket)} is already shown by another run")
        return
    slot.live[op] = (bound, ticket)


def _decide(
    floor: Floor,
    mm_machine: str,
    slot: _Machine,
    generations: Mapping[str, list[BoundRun]],
    *,
    source: str,
    now: datetime,
) -> None:
    shown_op: OpId | None = None
    switch_at: datetime | None = None  # when the shown operation took the machine
    if slot.open:
        shown = max(slot.open, key=lambda t: (_start(t), t.run_key))
        shown_op = _op_id(shown)
        group = sorted((t for t in slot.open if _op_id(t) == shown_op), key=lambda t: (_start(t), t.run_key))
        state = RunState.PRODUCTION if any(t.state is RunState.PRODUCTION for t in group) else RunState.SETUP
        live = slot.live.get(shown_op)
        switch_at = shown.start_at
        ended_at = None if live is None else _run_ends_at(live[1], slot, shown_op)
        if live is not None and ended_at is not None:
            # every ticket of its run closed before these clocked in: it ends, a new run begins
            _end(floor, live[0], live[1], [ended_at], "")
            live = None
        if live is not None:
            _keep(floor, live[0], group, state)
        else:
            # another operation's run is open there: it ends when this one starts
            others = [b.erp_start_at or shown.start_at for op, (b, _) in slot.live.items() if op != shown_op]
            taken = (
                max((t for t in (shown.start_at, *others) if t is not None), default=None) if others else None
            )
            switch_at = _begin(floor, slot, group, state, generations, taken, source=source, now=now)
        for ticket in slot.open:
            if _op_id(ticket) != shown_op:
                floor.superseded += 1
                floor.flags.append(_overlap_flag(ticket, shown, source))
    for op, (bound, anchor) in slot.live.items():
        if op == shown_op:
            continue
        ended_at = _run_ends_at(anchor, slot, op)  # its own tickets' last clock-out, if all closed
        if ended_at is None and any(_op_id(t) == op for t in slot.open):
            why = f"superseded by {_what(shown)}, clocked in later"
            _end(floor, bound, anchor, [switch_at] if switch_at else [], why)
        else:
            _end(floor, bound, anchor, [ended_at] if ended_at else [], "")


def _run_ends_at(anchor: JobOperationRun, slot: _Machine, op: OpId) -> datetime | None:
    """When the run anchored on ``anchor`` ended: its tickets are the operation's tickets that
    overlap it, one after another; None while one of them is open (or its clock-out is unknown)."""
    if anchor.state is not _ENDED or anchor.end_at is None:
        return None
    until = anchor.end_at
    for ticket in sorted((t for t in (*slot.open, *slot.ended) if _op_id(t) == op), key=_start):
        if ticket is anchor or _start(ticket) > until:
            continue
        if ticket.state is not _ENDED or ticket.end_at is None:
            return None
        until = max(until, ticket.end_at)
    return until


def _keep(floor: Floor, bound: BoundRun, group: list[JobOperationRun], state: RunState) -> None:
    """The shown operation's run goes on: one run for every open ticket on it."""
    anchor_key = anchor_of(bound.run_key)[0]
    anchor = next((t for t in group if t.run_key == anchor_key), group[0])
    start = bound.erp_start_at or group[0].start_at
    floor.runs[bound.run_key] = _as(anchor, bound.run_key, state, start)
    if bound.status is BindingStatus.VANISHED:  # its ticket is back: manage the MM run again
        floor.flags.append(
            binding_flag(
                FlagKind.RETURNED,
                bound,
                f"{_what(anchor)} is back in the ERP; erpsync manages MM run {bound.mm_run_id} again",
                binding_status=BindingStatus.RUNNING,
            )
        )


def _begin(
    floor: Floor,
    slot: _Machine,
    group: list[JobOperationRun],
    state: RunState,
    generations: Mapping[str, list[BoundRun]],
    taken: datetime | None,
    *,
    source: str,
    now: datetime,
) -> datetime | None:
    """The shown operation has no run open: start one (generation 1, or the next one); returns
    when it starts (None: MM's own now, or nothing started)."""
    anchor = group[0]
    past = generations.get(anchor.run_key, [])
    latest = max(past, key=lambda b: anchor_of(b.run_key)[1], default=None)
    if latest is not None and latest.status is not BindingStatus.STOPPED:
        # stopping: wait for MM's answer; failed: MM refused it, a person decides (resync);
        # live elsewhere (another machine or operation): reconcile flags and ends it first
        floor.runs[latest.run_key] = replace(anchor, run_key=latest.run_key, state=state)
        return taken
    number = 1 if latest is None else anchor_of(latest.run_key)[1] + 1
    key = generation_key(anchor.run_key, number)
    first_in = min((t.start_at for t in group if t.start_at is not None), default=None)
    bounds = (first_in, _freed_at(slot, first_in, now), taken)
    start = max((t for t in bounds if t is not None), default=None)
    floor.runs[key] = _as(anchor, key, state, start)
    if number > 1:
        floor.mm_ids[key] = generation_run_id(source, anchor.run_key, number)
        floor.reasons[key] = (
            f"{_what(anchor)} is open on machine {anchor.machine} again: new MM run (generation {number})"
        )
    elif len(group) > 1:
        floor.reasons[key] = f"clocked in on {_what(anchor)}: {len(group)} tickets open on it, one MM run"
    return start


def _as(ticket: JobOperationRun, key: str, state: RunState, start: datetime | None) -> JobOperationRun:
    """``ticket`` as the open run ``key``; the ticket itself when that is what it already says (the
    no-change cycle: one ticket per machine, nothing copied)."""
    if ticket.run_key == key and ticket.state is state and ticket.start_at == start and ticket.end_at is None:
        return ticket
    return replace(ticket, run_key=key, state=state, start_at=start, end_at=None)


def _freed_at(slot: _Machine, first_in: datetime | None, now: datetime) -> datetime | None:
    """When the machine was last freed: the latest clock-out on it after ``first_in``, or end of
    an earlier MM run there (a reopened ticket's own), so a new run never overlaps an earlier one."""
    ends = [t.end_at for t in slot.ended if t.end_at is not None] + slot.run_ends
    ends = [e for e in ends if e <= now and (first_in is None or e > first_in)]
    return max(ends, default=None)


def _end(floor: Floor, bound: BoundRun, ticket: JobOperationRun, ends: list[datetime], why: str) -> None:
    """A run whose operation is no longer shown: it ends at its last clock-out, or when the shown
    operation took the machine (None: now)."""
    end = max(ends, default=None)
    floor.runs[bound.run_key] = replace(ticket, run_key=bound.run_key, state=_ENDED, end_at=end)
    if why:
        floor.reasons[bound.run_key] = (
            f"{bound.job} op {bound.operation} on machine {bound.erp_machine}: {why}"
        )


def _overlap_flag(ticket: JobOperationRun, shown: JobOperationRun, source: str) -> Flag:
    """Raised once per pair: an older ticket on another operation is probably a missed clock-out."""
    return run_flag(
        FlagKind.SUPERSEDED,
        ticket,
        mm_run_id_for(source, ticket.run_key),
        f"ticket {ticket.run_key} ({_what(ticket)}) is still open on machine {ticket.machine} while "
        f"ticket {shown.run_key} ({_what(shown)}) clocked in later; MM shows the later one. A likely "
        "forgotten clock-out: close the older ticket in the ERP",
        dedupe=f"{FlagKind.SUPERSEDED}:{ticket.run_key}:{shown.run_key}",
    )
