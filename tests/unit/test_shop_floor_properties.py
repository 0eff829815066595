"""Property tests of the multi-ticket rule (domain/shop_floor.py) through `reconcile`.

Random interleavings of clock-ins (crews on one operation, different operations on one machine),
clock-outs, reopened tickets and setup -> production on two machines. After every ERP event a sync
cycle runs at that minute and its plan is applied the way the service and dispatcher apply it
(journal keys, then the lifecycle functions). A toy MM keeps every run's machine, operation and
start/end as sent. Checked against MM's own timeline:

- MM never has two runs open on one machine, and the runs it had on a machine never overlap;
- every minute a machine had an open ticket is covered by exactly one MM run, of the operation of
  the most recent clock-in open then (crews: any of the operation's tickets). A reopened ticket was
  open all along (its clock-out undone), except that the minutes between the mistaken clock-out
  and the reopen are not judged: MM's history there cannot be rewritten;
- no MM run id is started twice (a setup -> production switch is the only repeat, in order);
- a second cycle on the same ERP state plans nothing.

With ``sync.vanished_runs = "stop"``, tickets deleted while open and tickets entered late (a
clock-in before the moment they are entered), each cycle is given the bindings the sync service
loads (open ones, and finished ones by the snapshot's run keys) and the latest run ends of the
machines of its possible starts (`BindingRepository.latest_ends`): MM's runs on a machine still
never overlap (campaign finding F2: a deleted ticket's run, stopped at erpsync's now, is known only
by its machine's latest end).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from erpsync.domain.lifecycle import (
    MM_OPEN_BINDING_STATUSES,
    RECONCILE_BINDING_STATUSES,
    ActionKind,
    Answer,
    BoundRun,
    JournaledAction,
    MMAnswer,
    RequestFacts,
    bound_after,
    bound_after_flag,
    bound_after_intent,
    outcome_of,
)
from erpsync.domain.model import JobOperationRun, RunState
from erpsync.domain.plan import Plan, RunAction
from erpsync.domain.reconcile import reconcile
from erpsync.domain.shop_floor import anchor_of
from tests.unit.reconcile_helpers import MAPPER, SOURCE, T0, operation

MACHINES = ("M1", "M2")
OPERATIONS = (("1001", "10"), ("1001", "20"), ("2002", "10"))  # two of one job, one of another

Event = tuple[str, int, int, bool]  # (kind, machine or ticket index, operation index, setup)
events = st.lists(
    st.tuples(
        st.sampled_from(["in", "in", "in", "out", "out", "reopen", "run"]),
        st.integers(0, 30),
        st.integers(0, len(OPERATIONS) - 1),
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)
# after which events a sync cycle runs (several ERP changes may fall between two cycles)
cycles = st.lists(st.booleans(), min_size=30, max_size=30)


@dataclass
class MMRun:
    machine: str
    op: tuple[str, str]
    start: datetime
    end: datetime | None = None
    phases: list[str] = field(default_factory=list)


@dataclass
class Floor:
    """The ERP (tickets and their open spans), erpsync's bindings and journal, and a toy MM."""

    tickets: dict[str, JobOperationRun] = field(default_factory=dict)
    spans: dict[str, list[tuple[datetime, datetime | None]]] = field(default_factory=dict)
    bindings: dict[str, BoundRun] = field(default_factory=dict)
    journal: set[str] = field(default_factory=set)
    mm: dict[str, MMRun] = field(default_factory=dict)
    clock: datetime = T0
    # sync.vanished_runs = "stop", and the bindings the sync service loads (service/sync.py), not all
    stop_vanished: bool = False
    # a reopen undoes a clock-out: the ticket was open all along, but what MM showed on the machine
    # in between is history; those minutes are not judged
    gaps: dict[str, list[tuple[datetime, datetime]]] = field(default_factory=dict)

    # -- the ERP --
    def apply_event(self, event: Event) -> None:
        kind, index, op_index, setup = event
        self.clock += timedelta(minutes=1)
        keys = sorted(self.tickets, key=lambda k: int(k[2:]))
        if kind in ("in", "late"):
            key = f"LT{len(self.spans)}"  # never reused, a deleted ticket's key included
            job, seq = OPERATIONS[op_index]
            state = RunState.SETUP if setup else RunState.PRODUCTION
            op = operation(job, seq, MACHINES[index % len(MACHINES)])
            # entered now, clocked in up to 30 minutes before
            clock_in = self.clock - timedelta(minutes=index + 1) if kind == "late" else self.clock
            self.tickets[key] = JobOperationRun(key, op, state, start_at=clock_in)
            self.spans[key] = [(clock_in, None)]
            return
        if not keys:
            return
        key = keys[index % len(keys)]
        ticket = self.tickets[key]
        if kind == "delete":  # gone from the ERP, open or closed
            del self.tickets[key]
        elif kind == "out" and ticket.state is not RunState.ENDED:
            self.tickets[key] = replace(ticket, state=RunState.ENDED, end_at=self.clock)
            self.spans[key][-1] = (self.spans[key][-1][0], self.clock)
        elif kind == "reopen" and ticket.state is RunState.ENDED:  # CLOCK_OUT set back to NULL
            self.tickets[key] = replace(ticket, state=RunState.PRODUCTION, end_at=None)
            start, end = self.spans[key].pop()
            assert end is not None
            self.spans[key].append((start, None))
            self.gaps.setdefault(ticket.machine, []).append((end, self.clock))
        elif kind == "run" and ticket.state is RunState.SETUP:
            self.tickets[key] = replace(ticket, state=RunState.PRODUCTION)

    # -- a sync cycle, applied like the service and the dispatcher --
    def cycle(self) -> Plan:
        bindings, machine_ends = self.loaded() if self.stop_vanished else (self.bindings, None)
        plan = reconcile(
            self.tickets.values(),
            bindings,
            source=SOURCE,
            mapper=MAPPER,
            snapshot_complete=True,
            vanished_policy="stop" if self.stop_vanished else "flag",
            now=self.clock,
            machine_ends=machine_ends,
        )
        for action in plan.actions:
            assert action.idempotency_key not in self.journal, f"planned twice: {action.idempotency_key}"
            self.journal.add(action.idempotency_key)
            self.bindings[action.run_key] = bound_after_intent(self.bindings.get(action.run_key), action)
        for flag in plan.flags:
            if flag.run_key in self.bindings:
                self.bindings[flag.run_key] = bound_after_flag(self.bindings[flag.run_key], flag)
        for machine_actions in plan.by_machine().values():
            for action in machine_actions:
                self._send(action)
        return plan

    def loaded(self) -> tuple[dict[str, BoundRun], dict[str, datetime]]:
        """What the sync service reads from its state (`SyncService._known_bindings`): the open
        bindings, finished ones of the snapshot's run keys, every generation of open tickets
        without an open binding, and the latest run end of those tickets' machines."""
        loaded = {k: b for k, b in self.bindings.items() if b.status in RECONCILE_BINDING_STATUSES}
        fresh = self.tickets.keys() - loaded.keys()
        starts = {k for k in fresh if self.tickets[k].state is not RunState.ENDED}
        loaded.update((k, b) for k, b in self.bindings.items() if k in fresh or anchor_of(k)[0] in starts)
        clock_ins = [self.tickets[k].start_at for k in starts]
        since = min((t for t in clock_ins if t is not None), default=self.clock)
        machines = {MAPPER.map(self.tickets[k].machine) for k in starts}
        ends: dict[str, datetime] = {}
        for bound in self.bindings.values():
            end = bound.mm_end_at or bound.erp_end_at
            machine = bound.mm_machine_id
            finished = bound.status not in MM_OPEN_BINDING_STATUSES
            if machine in machines and finished and end is not None and since < end <= self.clock:
                ends[machine] = max(end, ends.get(machine, end))
        return loaded, ends

    def _send(self, action: RunAction) -> None:
        if action.kind is ActionKind.STOP:
            mm_run = self.mm[action.mm_run_id]
            assert mm_run.end is None, f"{action.mm_run_id} stopped twice"
            assert mm_run.start <= action.end_at <= self.clock
            mm_run.end = action.end_at
            facts = RequestFacts(end_at=action.end_at, mm_machine_id=action.mm_machine_id)
        else:
            assert action.kind is ActionKind.START and action.run is not None
            phase = "setup" if action.in_setup else "production"
            existing = self.mm.get(action.mm_run_id)
            if existing is not None:  # only the setup -> production switch repeats a run id
                assert existing.end is None and existing.phases == ["setup"] and phase == "production"
                existing.phases.append(phase)
            else:
                op = action.run.operation
                start = action.run.start_at or self.clock
                self.mm[action.mm_run_id] = MMRun(
                    action.mm_machine_id, (op.job_key[1], op.operation_seq), start, phases=[phase]
                )
            facts = RequestFacts(
                in_setup=action.in_setup, start_at=action.run.start_at, mm_machine_id=action.mm_machine_id
            )
        journaled = JournaledAction(
            id=len(self.journal),
            idempotency_key=action.idempotency_key,
            kind=action.kind,
            source=SOURCE,
            ref=action.ref,
            reason=action.reason,
            payload={},
            attempts=1,
        )
        outcome = outcome_of(journaled, MMAnswer(Answer.APPLIED, 200), facts, max_attempts=5, now=self.clock)
        bound = bound_after(self.bindings[action.run_key], outcome)
        if outcome.mm_end_at is not None:
            bound = replace(bound, mm_end_at=outcome.mm_end_at)  # the adapters store MM's end too
        self.bindings[action.run_key] = bound

    # -- what the ERP had open at an instant, and what MM showed --
    def open_at(self, machine: str, instant: datetime) -> list[JobOperationRun]:
        return [
            self.tickets[key]
            for key, spans in self.spans.items()
            if self.tickets[key].machine == machine
            and any(start <= instant and (end is None or instant < end) for start, end in spans)
        ]

    def shown_at(self, machine: str, instant: datetime) -> list[MMRun]:
        return [
            r
            for r in self.mm.values()
            if r.machine == MAPPER.map(machine) and r.start <= instant and (r.end is None or instant < r.end)
        ]


def _latest_in(tickets: list[JobOperationRun]) -> tuple[str, str]:
    """The operation of the most recent clock-in among ``tickets`` (a reopened ticket keeps its
    CLOCK_IN: the ERP does not record when it was reopened)."""
    latest = max(tickets, key=lambda t: (t.start_at, int(t.run_key[2:])))
    return (latest.operation.job_key[1], latest.operation.operation_seq)


# histories the search found while the rule was written, kept as regressions
CREW_THEN_REOPEN: list[Event] = [("in", 1, 0, False), ("in", 1, 0, False), ("out", 0, 0, False)]
CREW_THEN_REOPEN += [("out", 1, 0, False), ("reopen", 1, 0, False)]
BACK_AND_FORTH: list[Event] = [("in", 0, 0, False), ("in", 0, 1, False), ("in", 0, 0, False)]
CREW_SUPERSEDED_REOPEN: list[Event] = [("in", 0, 0, False)] * 5 + [("in", 0, 1, False)]
CREW_SUPERSEDED_REOPEN += [("out", 5, 0, False), ("reopen", 5, 0, False)]
SHOWN_AGAIN: list[Event] = [("in", 1, 0, False), ("in", 1, 1, False), ("in", 1, 0, False)]
SHOWN_AGAIN += [("out", 2, 0, False)]


@settings(max_examples=500, deadline=None)
@example(CREW_THEN_REOPEN)
@example(BACK_AND_FORTH)
@example(CREW_SUPERSEDED_REOPEN)
@example(SHOWN_AGAIN)
@given(events)
def test_every_open_ticket_minute_is_shown_by_exactly_one_run(history: list[Event]) -> None:
    """A cycle after every ERP change: MM's history matches the ERP's minute by minute."""
    floor = Floor()
    for event in history:
        floor.apply_event(event)
        _cycle_and_check(floor)
    _check_history(floor)


@settings(max_examples=300, deadline=None)
@example([("in", 0, 0, False), ("out", 0, 0, False), ("in", 0, 0, False)], [True, False, True])
@given(events, cycles)
def test_changes_between_cycles_still_converge_to_the_rule(history: list[Event], synced: list[bool]) -> None:
    """Several ERP changes between two cycles (a clock-out and the next clock-in, a crew change):
    after each cycle MM shows each machine's latest clock-in, its runs never overlap, and no MM
    run covers a minute the machine had no ticket open (a crew run ends when its last ticket did)."""
    floor = Floor()
    for step, event in enumerate(history):
        floor.apply_event(event)
        if synced[step] or step == len(history) - 1:
            _cycle_and_check(floor)
    for machine in MACHINES:
        _check_no_overlap(floor, machine)
        minute = T0
        while minute + timedelta(seconds=30) <= floor.clock:
            instant = minute + timedelta(seconds=30)
            rewritten = any(a <= instant < b for a, b in floor.gaps.get(machine, ()))
            if floor.shown_at(machine, instant) and not rewritten:
                assert floor.open_at(machine, instant), f"an MM run on idle {machine} at {instant}"
            minute += timedelta(minutes=1)


deleted_and_late = st.lists(
    st.tuples(
        st.sampled_from(["in", "in", "late", "late", "out", "delete", "delete", "reopen", "run"]),
        st.integers(0, 30),
        st.integers(0, len(OPERATIONS) - 1),
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)
# campaign finding F2: a ticket deleted while open, then one entered late on its machine
F2_LATE_AFTER_DELETE: list[Event] = [("in", 0, 0, False), ("delete", 0, 0, False), ("late", 10, 1, False)]
# the same for a new generation: a reopened ticket whose first run ended before the deleted one's
F2_REOPEN_AFTER_DELETE: list[Event] = [("in", 0, 0, False), ("out", 0, 0, False), ("in", 0, 1, False)]
F2_REOPEN_AFTER_DELETE += [("delete", 1, 0, False), ("reopen", 0, 0, False)]


@settings(max_examples=500, deadline=None)
@example(F2_LATE_AFTER_DELETE, [True] * 30)
@example(F2_REOPEN_AFTER_DELETE, [True] * 30)
@given(deleted_and_late, cycles)
def test_deleted_tickets_and_late_clock_ins_never_overlap_runs(
    history: list[Event], synced: list[bool]
) -> None:
    """``vanished_runs = "stop"``, and each cycle reads only what the sync service reads: a run
    never starts before a run erpsync ended on its machine, also one whose ticket is gone."""
    floor = Floor(stop_vanished=True)
    for step, event in enumerate(history):
        floor.apply_event(event)
        if synced[step] or step == len(history) - 1:
            _cycle_and_check(floor)
    for machine in MACHINES:
        mine = [r for r in floor.mm.values() if r.machine == MAPPER.map(machine) and r.start != r.end]
        for before, after in itertools.pairwise(sorted(mine, key=lambda r: r.start)):
            assert before.end is not None and before.end <= after.start, f"MM runs overlap on {machine}"


def _cycle_and_check(floor: Floor) -> None:
    floor.cycle()
    assert floor.cycle().actions == [], "a second cycle on the same ERP state acts again"
    for machine in MACHINES:
        open_runs = [r for r in floor.mm.values() if r.machine == MAPPER.map(machine) and r.end is None]
        assert len(open_runs) <= 1, f"two MM runs open on {machine}"
        tickets = [
            t for t in floor.tickets.values() if t.machine == machine and t.state is not RunState.ENDED
        ]
        if tickets:
            assert [r.op for r in open_runs] == [_latest_in(tickets)], f"{machine} at {floor.clock}"


def _check_no_overlap(floor: Floor, machine: str) -> None:
    mine = [r for r in floor.mm.values() if r.machine == MAPPER.map(machine)]
    for before, after in itertools.pairwise(sorted(mine, key=lambda r: r.start)):
        assert before.end is not None and before.end <= after.start, f"MM runs overlap on {machine}"


def _check_history(floor: Floor) -> None:
    for machine in MACHINES:
        _check_no_overlap(floor, machine)
        minute = T0
        while minute <= floor.clock:
            instant = minute + timedelta(seconds=30)  # inside the minute: events happen on it
            tickets = floor.open_at(machine, instant) if instant <= floor.clock else []
            rewritten = any(a <= instant < b for a, b in floor.gaps.get(machine, ()))
            if tickets and not rewritten:
                shown = floor.shown_at(machine, instant)
                assert len(shown) == 1, f"{machine} at {instant}: {len(shown)} runs, {len(tickets)} tickets"
                assert shown[0].op == _latest_in(tickets), f"{machine} at {instant}"
            minute += timedelta(minutes=1)
