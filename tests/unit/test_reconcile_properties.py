"""Property tests: random ERP histories driven through reconcile (and resync) against a model of MM.

The state machine below plays an ERP (clock in/out, setup -> production, edits, moves, runs that
vanish and come back) and an MM that loses runs or has them ended by hand (drift, which write-back's
reads record by either `sync.heal_drift`), runs reconcile cycles with random snapshot completeness
and vanished policy,
and applies each plan the way the service and dispatcher do: journal keys must be new, intents and
flags written to the bindings, then machines in `Plan.by_machine` order, each MM answer settled.
Every binding change is made by domain/lifecycle.py (`bound_after_intent`, `bound_after_flag`,
`outcome_of` + `bound_after`), never here. A toy MM checks every call. Invariants:

- no journal key is ever planned twice: no run id starts twice in the same phase;
- MM never gets a start for a run the ERP ended, nor a restart of a run it already has;
- at most one open MM run per machine, at every step;
- every run the ERP ended (and reported) is stopped in MM;
- nothing is dropped silently: an active ERP run is open in MM, or bound and closed, or flagged,
  quarantined or on an ignored machine;
- a second reconcile of the same ERP state plans nothing (one cycle converges).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from erpsync.domain.drift import HealDrift, bound_after_drift, drift_of
from erpsync.domain.identity import mm_run_id_for
from erpsync.domain.lifecycle import (
    LIVE_BINDING_STATUSES,
    ActionKind,
    Answer,
    BindingStatus,
    BoundRun,
    JournaledAction,
    MMAnswer,
    MMRunState,
    RequestFacts,
    bound_after,
    bound_after_flag,
    bound_after_intent,
    outcome_of,
)
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import JobOperationRun, RunState
from erpsync.domain.plan import FlagKind, Plan, RunAction, StartAction, StopAction
from erpsync.domain.reconcile import reconcile
from erpsync.domain.resync import resync_plan
from erpsync.domain.shop_floor import anchor_of
from tests.unit.reconcile_helpers import SOURCE, T0, operation

# "M1" and " m1" are one MM machine (trim-casefold), SAW is ignored, BAD is refused by MM, "" is
# blank. Few machines, so runs compete for them.
MACHINES = ["M1", " m1", "M2", "M1", "M2", "SAW", "", "BAD"]
MAPPER = MachineMapper(normalize="trim-casefold", ignore=["saw"])
REJECTED = frozenset({"bad"})


@dataclass
class MMRun:
    machine: str
    open: bool
    phases: list[str] = field(default_factory=list)


class ReconcileMachine(RuleBasedStateMachine):
    runs = Bundle("runs")  # run keys the ERP has created; every clock-in is a new key

    def __init__(self) -> None:
        super().__init__()
        self.clock = T0
        self.erp: dict[str, JobOperationRun] = {}
        self.hidden: set[str] = set()  # runs the ERP lost (absent from snapshots and lookups)
        self.bindings: dict[str, BoundRun] = {}
        self.mm: dict[str, MMRun] = {}
        self.lost_by_mm: set[str] = set()  # binding keys whose MM run MM lost or a person ended
        self.mm_ends: dict[str, datetime] = {}  # MM run id -> when a person ended it in MM
        self.journal: set[str] = set()
        self.generation = 0

    @initialize()
    def start(self) -> None:
        self.clock = T0

    # --- the ERP -------------------------------------------------------------------------------

    def _tick(self, minutes: int) -> datetime:
        self.clock += timedelta(minutes=minutes)
        return self.clock

    @rule(
        target=runs,
        machine=st.sampled_from(MACHINES),
        setup=st.booleans(),
        minutes=st.integers(0, 30),
        no_start=st.booleans(),
    )
    def clock_in(self, machine: str, setup: bool, minutes: int, no_start: bool) -> str:
        key = f"LT{len(self.erp)}"
        at = self._tick(minutes)
        self.erp[key] = JobOperationRun(
            run_key=key,
            operation=operation(f"J{key}", "20", machine),
            state=RunState.SETUP if setup else RunState.PRODUCTION,
            start_at=None if no_start and minutes % 7 == 0 else at,
        )
        return key

    @rule(key=runs, minutes=st.integers(0, 30))
    def setup_done(self, key: str, minutes: int) -> None:
        r = self.erp.get(key)
        if r is not None and r.state is RunState.SETUP:
            self._tick(minutes)
            self.erp[key] = replace(r, state=RunState.PRODUCTION)

    @rule(key=runs)
    def back_to_setup(self, key: str) -> None:
        r = self.erp.get(key)
        if r is not None and r.state is RunState.PRODUCTION:
            self.erp[key] = replace(r, state=RunState.SETUP)

    @rule(key=runs, minutes=st.integers(0, 90), with_end=st.booleans())
    def clock_out(self, key: str, minutes: int, with_end: bool) -> None:
        r = self.erp.get(key)
        if r is not None and r.state is not RunState.ENDED:
            at = self._tick(minutes)
            self.erp[key] = replace(r, state=RunState.ENDED, end_at=at if with_end else None)

    @rule(key=runs, quantity=st.integers(1, 500))
    def edit_job(self, key: str, quantity: int) -> None:
        r = self.erp.get(key)
        if r is not None:
            self.erp[key] = replace(r, operation=replace(r.operation, quantity_required=quantity))

    @rule(key=runs, machine=st.sampled_from(MACHINES))
    def move(self, key: str, machine: str) -> None:
        r = self.erp.get(key)
        if r is not None and r.state is not RunState.ENDED:
            self.erp[key] = replace(r, operation=replace(r.operation, machine=machine))

    @rule(key=runs)
    def vanish(self, key: str) -> None:
        if key in self.erp:
            self.hidden.add(key)

    @rule(key=runs)
    def reappear(self, key: str) -> None:
        self.hidden.discard(key)

    @rule(key=runs)
    def mm_loses_run(self, key: str) -> None:
        bound = self._latest(key)
        if bound is not None and bound.mm_run_id in self.mm:
            del self.mm[bound.mm_run_id]
            self.lost_by_mm.add(bound.run_key)

    @rule(key=runs)
    def mm_run_ended_by_hand(self, key: str) -> None:
        """A person ends the run in MM while erpsync (and maybe the ERP) has it open."""
        bound = self._latest(key)
        got = self.mm.get(bound.mm_run_id) if bound is not None else None
        if bound is not None and got is not None and got.open:
            got.open = False
            self.mm_ends[bound.mm_run_id] = self.clock
            self.lost_by_mm.add(bound.run_key)

    @rule(heal=st.sampled_from(["restart", "flag"]))
    def writeback_reads(self, heal: HealDrift) -> None:
        """Write-back reads every run it counts (get job run): drift is recorded as it decides
        (domain/drift.py), the binding moved by `bound_after_drift`, as the repository does."""
        for key, bound in list(self.bindings.items()):
            got = self.mm.get(bound.mm_run_id)
            state: MMRunState = "missing" if got is None else "open" if got.open else "ended"
            drift = drift_of(
                bound.status,
                state,
                mm_run_id=bound.mm_run_id,
                run_key=key,
                what=key,
                end_at=self.mm_ends.get(bound.mm_run_id),
                now=self.clock,
                heal=heal,
            )
            if drift is not None:
                self.bindings[key] = bound_after_drift(bound, drift)
                self.lost_by_mm.discard(key)

    def _latest(self, key: str) -> BoundRun | None:
        """The binding of ticket ``key``'s latest run generation."""
        return max(self._generations(key), key=lambda b: anchor_of(b.run_key)[1], default=None)

    # --- sync ------------------------------------------------------------------------------------

    def _generations(self, key: str) -> list[BoundRun]:
        """Every binding of ticket ``key``'s runs (its own and later generations)."""
        return [b for k, b in self.bindings.items() if anchor_of(k)[0] == key]

    def _desired(self, include_ended: bool) -> list[JobOperationRun]:
        out = []
        for key, r in self.erp.items():
            if key in self.hidden:
                continue
            looked_up = any(
                b.status in (*LIVE_BINDING_STATUSES, BindingStatus.VANISHED) for b in self._generations(key)
            )
            if r.state is not RunState.ENDED or include_ended or looked_up:
                out.append(r)
        return out

    @rule(
        complete=st.booleans(),
        policy=st.sampled_from(["stop", "flag"]),
        include_ended=st.booleans(),
        fail_a_start=st.booleans(),
        minutes=st.integers(0, 5),
    )
    def cycle(
        self, complete: bool, policy: str, include_ended: bool, fail_a_start: bool, minutes: int
    ) -> None:
        now = self._tick(minutes)
        desired = self._desired(include_ended)
        plan = self._reconcile(desired, complete=complete, policy=policy, now=now)
        failed = self._apply(plan, fail_a_start=fail_a_start)
        self._check_ended_are_stopped(desired)
        self._check_nothing_dropped(desired, plan)
        if not failed and not self.lost_by_mm:
            # converged, or within one more cycle: a run this cycle stopped (superseded while its
            # ticket moved machine) starts its next generation once the stop is settled ...
            for round_ in range(2):
                again = self._reconcile(desired, complete=complete, policy=policy, now=now)
                keys = [a.idempotency_key for a in again.actions]
                if not keys:
                    break
                assert round_ == 0, keys
                # ... which may take the machine the moved ticket now names
                assert any(a.kind is ActionKind.START and "#g" in a.run_key for a in again.actions), keys
                self._apply(again, fail_a_start=False)

    def _reconcile(
        self, desired: list[JobOperationRun], *, complete: bool, policy: str, now: datetime
    ) -> Plan:
        return reconcile(
            desired,
            self.bindings,
            source=SOURCE,
            mapper=MAPPER,
            snapshot_complete=complete,
            vanished_policy="stop" if policy == "stop" else "flag",
            now=now,
            rejected_machines=REJECTED,
        )

    @rule(complete=st.booleans(), policy=st.sampled_from(["stop", "flag"]), include_ended=st.booleans())
    def quiet_cycle(self, complete: bool, policy: str, include_ended: bool) -> None:
        """A cycle with no failures and no time passing: cycles should be frequent."""
        self.cycle(complete, policy, include_ended, fail_a_start=False, minutes=0)

    @rule(key=runs, everything=st.booleans(), minutes=st.integers(0, 5))
    def resync(self, key: str, everything: bool, minutes: int) -> None:
        pick = set(self.erp) if everything else {key}
        now = self._tick(minutes)
        self.generation += 1
        desired = [r for k, r in self.erp.items() if k not in self.hidden]
        mm_state: dict[str, MMRunState] = {}
        # what the service reads: every binding's MM run (each generation) and unbound runs' ids
        mm_ids = {b.mm_run_id for b in self.bindings.values()}
        mm_ids |= {mm_run_id_for(SOURCE, k) for k in self.erp if k not in self.bindings}
        for mm_id in mm_ids:
            got = self.mm.get(mm_id)
            mm_state[mm_id] = "missing" if got is None else ("open" if got.open else "ended")
        plan = resync_plan(
            desired,
            self.bindings,
            source=SOURCE,
            mapper=MAPPER,
            mm_state=mm_state,
            generation=f"g{self.generation}",
            now=now,
            selection=pick.__contains__,
            rejected_machines=REJECTED,
        )
        for action in plan.actions:
            assert action.idempotency_key.endswith(f"@g{self.generation}")
        self._apply(plan, fail_a_start=False)
        self.lost_by_mm = {k for k in self.lost_by_mm if anchor_of(k)[0] not in pick}
        self._check_ended_are_stopped([r for r in desired if r.run_key in pick])

    # --- applying a plan like the service + dispatcher ---------------------------------------------
    # The bindings move only through domain/lifecycle.py, as the service and the dispatcher move
    # them: intents and flags in one transaction, then each MM answer -> outcome_of -> bound_after.

    def _apply(self, plan: Plan, *, fail_a_start: bool) -> bool:
        failed = False
        for action in plan.actions:
            assert action.idempotency_key not in self.journal, f"planned twice: {action.idempotency_key}"
            self.journal.add(action.idempotency_key)
        new_runs = {a.run_key for a in plan.actions if a.run_key not in self.bindings}
        for action in plan.actions:
            self.bindings[action.run_key] = bound_after_intent(self.bindings.get(action.run_key), action)
        for flag in plan.flags:
            bound = self.bindings.get(flag.run_key)
            if bound is not None:
                self.bindings[flag.run_key] = bound_after_flag(bound, flag)
        rebound = {f.run_key for f in plan.flags if f.kind == FlagKind.REBIND}
        for machine_actions in plan.by_machine().values():
            for action in machine_actions:
                if action.kind is ActionKind.STOP:
                    self._stop(action)
                elif fail_a_start and not failed and action.run_key in new_runs:
                    failed = True  # MM refuses the record: nothing is opened
                    self._settle(action, MMAnswer(Answer.REJECTED, http_status=422))
                else:
                    self._start(action, rebound=rebound)
        return failed

    def _settle(self, action: RunAction, answer: MMAnswer) -> None:
        """The dispatcher's part: MM's answer -> the action's outcome -> the binding as settled."""
        journaled = JournaledAction(
            id=len(self.journal),
            idempotency_key=action.idempotency_key,
            kind=action.kind,
            source=action.ref.source,
            ref=action.ref,
            reason=action.reason,
            payload={},
            attempts=1,
        )
        if action.kind is ActionKind.START:
            facts = RequestFacts(
                in_setup=action.in_setup, start_at=action.run.start_at, mm_machine_id=action.mm_machine_id
            )
        else:
            facts = RequestFacts(end_at=action.end_at, mm_machine_id=action.mm_machine_id)
        outcome = outcome_of(journaled, answer, facts, max_attempts=5, now=self.clock)
        self.bindings[action.run_key] = bound_after(self.bindings[action.run_key], outcome)

    def _start(self, action: StartAction, *, rebound: Collection[str]) -> None:
        assert action.run.state is not RunState.ENDED, "start planned for an ended run"
        assert self.erp[anchor_of(action.run_key)[0]].state is not RunState.ENDED, "start of an ended run"
        phase = "setup" if action.in_setup else "production"
        existing = self.mm.get(action.mm_run_id)
        bound = self.bindings[action.run_key]  # as journaled: the intent is recorded first
        # MM decides from what it holds (the simulator's rule): a production start of a run it has
        # open in setup is the switch; any other start of a run id it has is a restart.
        if existing is not None and existing.open and existing.phases == ["setup"] and not action.in_setup:
            # erpsync sends it only for a run it recorded in setup: live, or re-bound by this resync
            # (MM reported it open while the binding said vanished/stopped: the rebind flag)
            assert bound.in_setup, f"{action.mm_run_id}: switch, not in setup"
            assert bound.status in LIVE_BINDING_STATUSES or action.run_key in rebound, (
                action.run_key,
                bound.status,
            )
            existing.phases.append("production")
            self._settle(action, MMAnswer(Answer.APPLIED, http_status=200))
            return
        if existing is not None and not existing.open and action.run_key in self.lost_by_mm:
            # the switch of a run a person ended in MM before write-back saw it: MM refuses it (409),
            # a read shows it ended, so it is settled as ended (service/dispatch.py
            # `_recognise_conflict`), and the next cycle starts the next generation
            assert bound.in_setup and not action.in_setup, f"{action.mm_run_id}: not a switch"
            ended = self.mm_ends[action.mm_run_id]
            self._settle(action, MMAnswer(Answer.HELD, http_status=409, run_end_at=ended))
            self.lost_by_mm.discard(action.run_key)
            return
        assert existing is None, f"MM already has {action.mm_run_id}: restart of a known run"
        others = [rid for rid, r in self.mm.items() if r.open and r.machine == action.mm_machine_id]
        assert not others, f"{action.mm_run_id} starts on {action.mm_machine_id} while {others} open"
        self.mm[action.mm_run_id] = MMRun(action.mm_machine_id, open=True, phases=[phase])
        self._settle(action, MMAnswer(Answer.APPLIED, http_status=200))

    def _stop(self, action: StopAction) -> None:
        got = self.mm.get(action.mm_run_id)
        bound = self.bindings[action.run_key]
        assert action.end_at <= self.clock
        if bound.erp_start_at is not None:
            assert action.end_at >= bound.erp_start_at
        if got is None:  # MM lost it: a 404, nothing to stop
            self._settle(action, MMAnswer(Answer.NOT_FOUND, http_status=404))
            return
        got.open = False
        self._settle(action, MMAnswer(Answer.APPLIED, http_status=200))

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def one_open_run_per_machine(self) -> None:
        open_on: dict[str, str] = {}
        for run_id, r in self.mm.items():
            if r.open:
                assert r.machine not in open_on, f"{run_id} and {open_on[r.machine]} open on {r.machine}"
                open_on[r.machine] = run_id

    @invariant()
    def bindings_match_mm(self) -> None:
        for key, bound in self.bindings.items():
            if key in self.lost_by_mm:
                continue
            got = self.mm.get(bound.mm_run_id)
            if bound.status in (*LIVE_BINDING_STATUSES, BindingStatus.VANISHED):
                assert got is not None and got.open, (key, bound.status, got)
            elif bound.status is BindingStatus.STOPPED:
                assert got is None or not got.open, (key, got)
            elif bound.status is BindingStatus.FAILED:  # refused, or lost/ended in MM and flagged
                assert got is None or not got.open

    def _check_ended_are_stopped(self, desired: list[JobOperationRun]) -> None:
        for r in desired:
            if r.state is RunState.ENDED:
                for bound in self._generations(r.run_key):
                    got = self.mm.get(bound.mm_run_id)
                    assert got is None or not got.open, f"{r.run_key} ended in the ERP, open in MM"

    def _check_nothing_dropped(self, desired: list[JobOperationRun], plan: Plan) -> None:
        flagged = {f.run_key for f in plan.flags}
        quarantined = {b.record_key for b in plan.quarantined}
        for r in desired:
            if r.state is RunState.ENDED:
                continue
            if self._generations(r.run_key):
                continue  # bound: bindings_match_mm says it is open, or closed on purpose
            ignored = MAPPER.map(r.machine) is None and r.machine.strip() != ""
            assert r.run_key in flagged or r.run_key in quarantined or ignored, f"{r.run_key} dropped"


ReconcileMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestReconcileProperties = ReconcileMachine.TestCase


def test_resync_switches_a_vanished_run_mm_still_has_in_setup() -> None:
    """A run started in setup, flagged vanished, back in production when the ERP shows it again:
    a resync finds it open in MM and sends the pending switch (not a restart) under a rebind flag.
    The first failure the state machine found, replayed step by step with its invariants."""
    machine = ReconcileMachine()
    machine.start()

    def step(rule: Callable[..., object], *args: object, **kwargs: object) -> None:
        rule(*args, **kwargs)
        machine.bindings_match_mm()
        machine.one_open_run_per_machine()

    key = machine.clock_in(machine="M1", setup=False, minutes=0, no_start=False)
    assert isinstance(key, str)
    step(machine.back_to_setup, key)
    step(machine.quiet_cycle, complete=False, include_ended=False, policy="stop")
    step(machine.vanish, key)
    step(machine.setup_done, key, minutes=0)
    step(machine.quiet_cycle, complete=True, include_ended=False, policy="flag")
    assert machine.bindings[key].status == "vanished"
    step(machine.reappear, key)
    step(machine.resync, key, everything=False, minutes=0)
    assert machine.mm["erp:LT0"] == MMRun("m1", open=True, phases=["setup", "production"])
    bound = machine.bindings[key]
    assert (bound.status, bound.in_setup, bound.generation) == ("running", False, "g1")
    assert "start_run:erp:LT0:production@g1" in machine.journal
    step(machine.quiet_cycle, complete=True, include_ended=False, policy="flag")
    machine.teardown()


def test_a_run_mm_lost_found_by_write_back_comes_back_as_the_next_generation() -> None:
    """The drift rules step by step: MM loses LT0's run, write-back's read records it stopped, the
    next cycle starts generation 2, the clock-out stops it; invariants after every step."""
    machine = ReconcileMachine()
    machine.start()

    def step(rule: Callable[..., object], *args: object, **kwargs: object) -> None:
        rule(*args, **kwargs)
        machine.bindings_match_mm()
        machine.one_open_run_per_machine()

    key = machine.clock_in(machine="M1", setup=False, minutes=0, no_start=False)
    assert isinstance(key, str)
    step(machine.quiet_cycle, complete=True, include_ended=False, policy="flag")
    step(machine.mm_loses_run, key)
    step(machine.writeback_reads, heal="restart")
    assert machine.bindings[key].status == "stopped" and not machine.lost_by_mm
    step(machine.cycle, complete=True, policy="flag", include_ended=False, fail_a_start=False, minutes=1)
    assert machine.mm["erp:LT0.g2"].open
    step(machine.mm_run_ended_by_hand, key)
    step(machine.writeback_reads, heal="flag")
    assert machine.bindings["LT0#g2"].status == "failed"
    step(machine.quiet_cycle, complete=True, include_ended=False, policy="flag")
    assert not any(r.open for r in machine.mm.values())  # flagged: nothing restarted
    step(machine.resync, key, everything=False, minutes=1)
    step(machine.quiet_cycle, complete=True, include_ended=False, policy="flag")
    assert machine.mm["erp:LT0.g3"].open  # a person's resync: the next generation
    step(machine.clock_out, key, minutes=5, with_end=True)
    step(machine.quiet_cycle, complete=True, include_ended=True, policy="flag")
    assert not any(r.open for r in machine.mm.values())
    machine.teardown()
