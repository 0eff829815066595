"""What MM shows on each machine when the ERP has several open tickets there: the multi-ticket rule.

ERP tickets are people's clock-ins; an MM job run is what a machine is doing. `shop_floor` turns
the first into the second, before `reconcile` (domain/reconcile.py) diffs them against what MM was
told. The rule (docs/architecture.md, "Several tickets on one machine"):

1. **One operation, several people** (crew, helper, setup tech then operator): overlapping open
   tickets on the same operation and machine are ONE MM run, from the first clock-in to the last
   clock-out. It is in production as soon as any of them is a run ticket.
2. **Different operations**: the operation of the most recent clock-in (ties: the ticket key in
   natural order, LT100000 after LT99999) is shown. The run of any other operation open on the
   machine is stopped at that clock-in, and every other ticket still open there is flagged once as
   a likely forgotten clock-out.
3. **Shown again**: when the shown operation's last ticket closes while another operation's ticket
   is still open, that operation is shown again as a **new run generation**: a new deterministic
   MM run id (`generation_key`), started when the machine was freed (the latest clock-out on the
   machine after that ticket's clock-in). A reopened ticket (CLOCK_OUT set back to NULL) and a run
   that comes back after erpsync stopped it (e.g. transient bad data) take the same path: a
   stopped binding is not a dead end. A failed one is (MM refused it; a person decides).

Every start (a first run or a new generation) is at its first clock-in, or later when the machine
was freed later: never before the end of a run erpsync recorded on that MM machine. Such a run's
ticket may be gone from the ERP (deleted while open, its run stopped at erpsync's now), so the
caller passes ``machine_ends``: per MM machine, the latest end it read from erpsync's state.

The MM run is keyed by its **anchor**, the earliest open ticket of the operation when the run
started: generation 1 is the anchor's own run key (so a shop with one ticket per machine is keyed
exactly as before), generation n > 1 is ``<anchor>#g<n>``. The binding follows its anchor ticket:
the run stays as long as any open ticket on the anchor's operation and machine.

Tickets this rule cannot place (blank, ignored, refused or excluded machines) pass through
unchanged, so `reconcile` quarantines or skips them with its own reasons.
"""

from __future__ import annotations

import re
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

_DIGITS = re.compile(r"(\d+)")
OpId = tuple[tuple[str, ...], str]  # (job key, operation sequence): one routing step


def generation_key(anchor: str, number: int) -> str:
    """The binding key of generation ``number`` of ``anchor``'s run (1: the anchor's own key)."""
    if number < 1:
        raise ValueError(f"run generations count from 1, got {number}")
    return anchor if number == 1 else f"{anchor}{GENERATION_MARK}{number}"


def anchor_of(key: str) -> tuple[str, int]:
    """(anchor ticket key, generation number) of a binding key; ``LT7#g3`` -> (``LT7``, 3)."""
    if GENERATION_MARK not in key:  # nearly every key: the no-change cycle asks for each binding
        return key, 1
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


def _clock_in_order(run: JobOperationRun) -> tuple[datetime, tuple[tuple[int, int | str], ...]]:
    """Clock-in time, then the ticket key in natural order (``LT100000`` after ``LT99999``): the
    later of two tickets clocked in at the same moment is the one the ERP numbered later."""
    parts = _DIGITS.split(run.run_key)
    return _start(run), tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts if p)


def _what(run: JobOperationRun) -> str:
    return f"{run.operation.job_name} op {run.operation.operation_seq}"


class _History:
    """Ended tickets and finished runs by MM machine, indexed on first use: only a machine with
    something to decide (a start, a crew member leaving, a takeover) needs them, and the no-change
    cycle has none."""

    def __init__(
        self,
        tickets: Mapping[str, JobOperationRun],
        bindings: Mapping[str, BoundRun],
        machine_of: Callable[[JobOperationRun], str | None],
        excluded: Callable[[JobOperationRun], bool],
        machine_ends: Mapping[str, datetime],
    ) -> None:
        self.tickets, self.bindings, self.machine_ends = tickets, bindings, machine_ends
        self.machine_of, self.excluded = machine_of, excluded
        self.sticky: dict[str, str] = {}  # anchor tickets of open runs stay on the run's machine
        self._ended: dict[str, list[JobOperationRun]] | None = None
        self._run_ends: dict[str, list[datetime]] | None = None
        self._generations: dict[str, list[BoundRun]] | None = None

    def ended(self, mm_machine: str) -> list[JobOperationRun]:
        if self._ended is None:
            self._ended = {}
            for key, ticket in self.tickets.items():
                if ticket.state is _ENDED:
                    machine = self.sticky.get(key) or self.machine_of(ticket)
                    if machine is not None:
                        self._ended.setdefault(machine, []).append(ticket)
        return self._ended.get(mm_machine, [])

    def run_ends(self, mm_machine: str) -> list[datetime]:
        if self._run_ends is None:
            self._run_ends = {}
            for bound in self.bindings.values():
                end = bound.mm_end_at or bound.erp_end_at
                if bound.status not in MM_OPEN_BINDING_STATUSES and end is not None:
                    self._run_ends.setdefault(bound.mm_machine_id, []).append(end)
            for machine, end in self.machine_ends.items():  # runs whose tickets the ERP lost
                self._run_ends.setdefault(machine, []).append(end)
        return self._run_ends.get(mm_machine, [])

    def generations(self, anchor: str) -> list[BoundRun]:
        """Every run erpsync recorded for this anchor ticket (its own key and ``#g<n>`` ones)."""
        if self._generations is None:
            self._generations = {}
            for key, bound in self.bindings.items():
                if GENERATION_MARK in key:
                    self._generations.setdefault(anchor_of(key)[0], []).append(bound)
        first = self.bindings.get(anchor)
        return ([first] if first is not None else []) + self._generations.get(anchor, [])


class _Machine:
    """One MM machine's open tickets and the runs erpsync has open on it (a plain class: one per
    machine is made every cycle)."""

    __slots__ = ("history", "live", "name", "open")

    def __init__(self, name: str, history: _History) -> None:
        self.name, self.history = name, history
        self.open: list[JobOperationRun] = []
        self.live: dict[OpId, tuple[BoundRun, JobOperationRun]] = {}  # op -> (its run, anchor ticket)

    @property
    def ended(self) -> list[JobOperationRun]:
        return self.history.ended(self.name)


def shop_floor(
    tickets: Mapping[str, JobOperationRun],
    bindings: Mapping[str, BoundRun],
    *,
    source: str,
    machine_of: Callable[[JobOperationRun], str | None],
    excluded: Callable[[JobOperationRun], bool],
    now: datetime,
    machine_ends: Mapping[str, datetime] | None = None,
) -> Floor:
    """Apply the multi-ticket rule. ``tickets``: the ERP's runs by run key (open and recently
    ended, plus lookups of bound anchors); ``bindings`` by key, with every generation of the
    anchors of open tickets; ``machine_of``: a ticket's MM machine, or None to pass it through;
    ``excluded``: a ticket whose operation must not be in MM (its run is passed through too);
    ``machine_ends``: per MM machine, the latest end of a run erpsync recorded there (also of
    bindings not in ``bindings``): no run starts there before it."""
    floor = Floor()
    history = _History(tickets, bindings, machine_of, excluded, machine_ends or {})
    machines: dict[str, _Machine] = {}
    for bound in bindings.values():
        if bound.status in MM_OPEN_BINDING_STATUSES:
            _place_binding(floor, machines, history, bound)
    sticky = history.sticky
    placed: set[str] = set()  # open tickets the rule decides (not passed through)
    for key, ticket in tickets.items():
        if ticket.state is _ENDED:
            continue
        mm_machine = sticky.get(key) or machine_of(ticket)
        if mm_machine is not None:
            _slot(machines, history, mm_machine).open.append(ticket)
            placed.add(key)
    for slot in machines.values():
        _decide(floor, slot, source=source, now=now)
    # tickets the rule does not place, and ended ones it did not need: `Planner` decides or
    # counts them (history is never started)
    for key, ticket in tickets.items():
        if key not in placed and key not in floor.runs:
            floor.runs[key] = ticket
    return floor


def _slot(machines: dict[str, _Machine], history: _History, mm_machine: str) -> _Machine:
    slot = machines.get(mm_machine)
    if slot is None:
        slot = machines[mm_machine] = _Machine(mm_machine, history)
    return slot


def _place_binding(floor: Floor, machines: dict[str, _Machine], history: _History, bound: BoundRun) -> None:
    """Put a run MM may have open on its machine, by its anchor ticket's operation."""
    key = bound.run_key
    anchor = anchor_of(key)[0]
    ticket = history.tickets.get(anchor)
    if ticket is None:  # the ERP lost it: `Planner`'s vanished rule
        return
    # excluded, or moved to a machine that is not placed now: `Planner` decides, by binding key
    moved = ticket.operation.machine != bound.erp_machine
    if history.excluded(ticket) or (moved and history.machine_of(ticket) is None):
        floor.runs[key] = ticket if key == anchor else replace(ticket, run_key=key)
        return
    # the run stays on the machine it was started on (a machine edit is flagged by reconcile)
    slot = _slot(machines, history, bound.mm_machine_id)
    op = _op_id(ticket)
    other = slot.live.get(op)
    why = f"{_what(ticket)} is already shown by another run"
    if other is not None and other[0].run_key < key:  # from before this rule: one run per operation
        _end(floor, bound, ticket, [], why)
        return
    if other is not None:
        _end(floor, other[0], other[1], [], why)
    slot.live[op] = (bound, ticket)
    history.sticky[anchor] = slot.name


def _decide(
    floor: Floor,
    slot: _Machine,
    *,
    source: str,
    now: datetime,
) -> None:
    if len(slot.open) == 1 and len(slot.live) == 1:
        ((bound, anchor),) = slot.live.values()
        if anchor is slot.open[0]:  # one ticket, its run open: the no-change cycle's usual machine
            _keep(floor, bound, slot.open, anchor.state)
            return
    shown_op: OpId | None = None
    switch_at: datetime | None = None  # when the shown operation took the machine
    if slot.open:
        shown = max(slot.open, key=_clock_in_order)
        shown_op = _op_id(shown)
        group = sorted((t for t in slot.open if _op_id(t) == shown_op), key=_clock_in_order)
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
            switch_at = _begin(floor, slot, group, state, taken, source=source, now=now)
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
    taken: datetime | None,
    *,
    source: str,
    now: datetime,
) -> datetime | None:
    """The shown operation has no run open: start one (generation 1, or the next one); returns
    when it starts (None: MM's own now, or nothing started)."""
    anchor = group[0]
    past = slot.history.generations(anchor.run_key)
    latest = max(past, key=lambda b: anchor_of(b.run_key)[1], default=None)
    if latest is not None and latest.status is not BindingStatus.STOPPED:
        # stopping: wait for MM's answer; failed: MM refused it, a person decides (resync);
        # unconfirmed: MM may have it open, never started again (stopped when its tickets close);
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
    an earlier MM run there (a reopened ticket's own, or one whose ticket the ERP lost: the
    ``machine_ends`` of `shop_floor`), so a new run never overlaps an earlier one."""
    ends = [t.end_at for t in slot.ended if t.end_at is not None] + slot.history.run_ends(slot.name)
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
