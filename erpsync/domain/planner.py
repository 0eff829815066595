"""`Planner`: the reconcile rules (listed in domain/reconcile.py) as passes over the ERP's runs and
erpsync's bindings, building the `Plan`. `reconcile` and `resync_plan` (domain/resync.py) run it.
Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from erpsync.domain.flags import fields_changed_flag, quarantined_run, run_flag, settle_flags, vanished_flag
from erpsync.domain.identity import idempotency_key, mm_run_id_for, payload_fingerprint
from erpsync.domain.lifecycle import (
    LIVE_BINDING_STATUSES,
    MM_OPEN_BINDING_STATUSES,
    ActionKind,
    BindingStatus,
    BoundRun,
    RunRef,
)
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import JobOperationRun, RunState
from erpsync.domain.plan import Flag, FlagKind, Plan, RunAction, StartAction, StopAction, cut_reason
from erpsync.domain.shop_floor import anchor_of

VanishedPolicy = Literal["stop", "flag"]

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_ENDED = RunState.ENDED
_SETUP = RunState.SETUP
_PRODUCTION = RunState.PRODUCTION
_VANISHED = BindingStatus.VANISHED
_UNCONFIRMED = BindingStatus.UNCONFIRMED
# not managed any more, but MM may have the run open: stopped when the ERP run ends
_STOPPED_WHEN_ENDED = frozenset({_VANISHED, _UNCONFIRMED})


# An active ERP run that wants its machine: (start time or _EARLIEST, run_key, run, binding or
# None for a new start, MM machine, switch to production?). Sorts by (start, run_key), the
# superseding order. Built only for machines with something to decide, never on the no-change path.
_Contender = tuple[datetime, str, JobOperationRun, BoundRun | None, str, bool]


@dataclass(slots=True)
class _Stop:
    bound: BoundRun
    end_at: datetime
    reason: str
    erp_ended: bool
    vanished: bool = False


@dataclass(kw_only=True, eq=False)
class Planner:
    """One planning pass; `plan` runs the passes and builds the `Plan`."""

    desired: dict[str, JobOperationRun]
    bindings: Mapping[str, BoundRun]
    source: str
    mapper: MachineMapper
    vanished_policy: VanishedPolicy
    now: datetime
    rejected: Collection[str]
    exclude: Callable[[JobOperationRun], bool] | None
    selected: Collection[str] | None = None
    generation: str = ""
    # run keys whose ERP rows turned bad this read (quarantined): not vanished, bindings kept as is
    held: Collection[str] = frozenset()
    # why a run starts or stops, where the shop-floor rule knows better than the default wording
    reasons: Mapping[str, str] = field(default_factory=dict)
    mm_ids: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("reconcile needs a timezone-aware `now`")
        if self.vanished_policy not in ("stop", "flag"):
            raise ValueError(f"vanished_policy must be 'stop' or 'flag', got {self.vanished_policy!r}")
        if not isinstance(self.rejected, (set, frozenset)):
            self.rejected = frozenset(self.rejected)
        self.resync = bool(self.generation)
        self.plan_ = Plan()
        self.stats = self.plan_.stats
        # Who wants each MM machine, as run keys (no per-run objects: the no-change path must stay
        # cheap): the first contender, further ones, new starts (-> MM machine), pending switches.
        self.holders: dict[str, str] = {}
        self.crowded: dict[str, list[str]] = {}
        self.fresh: dict[str, str] = {}
        self.switching: set[str] = set()
        self.stops: dict[str, _Stop] = {}
        self.starts: list[StartAction] = []
        self.flags: list[Flag] = []
        self._machine_cache: dict[str, str | None] = {}
        self._occupants: dict[str, list[BoundRun]] | None = None

    # -- passes --

    def plan(self, *, scan_vanished: bool) -> Plan:
        self._pass_desired()
        if scan_vanished:
            self._pass_vanished()
        self._pass_machines()
        return self._finish()

    def _pass_desired(self) -> None:
        bindings = self.bindings
        selected = self.selected
        stats = self.stats
        for key, run in self.desired.items():
            bound = bindings.get(key)
            if selected is not None and key not in selected:
                if bound is not None and bound.status in LIVE_BINDING_STATUSES and run.state is not _ENDED:
                    self._contend(key, bound.mm_machine_id)
                continue
            if bound is None:
                self._unbound(key, run)
                continue
            status = bound.status
            if status in LIVE_BINDING_STATUSES:
                self._live(key, run, bound)
            elif status in _STOPPED_WHEN_ENDED and run.state is _ENDED:
                self._stop_ended(run, bound)
            else:  # stopping (stop in flight), stopped/failed/vanished/unconfirmed (terminal)
                stats.unchanged += 1

    def _pass_vanished(self) -> None:
        desired = self.desired
        selected = self.selected
        for key, bound in self.bindings.items():
            if (
                key in desired
                or anchor_of(key)[0] in self.held
                or (selected is not None and key not in selected)
            ):
                continue
            # a vanished binding is flagged once; it is stopped only if the policy is now "stop";
            # an unconfirmed one (MM may have it) is vanished like a live one
            if (
                bound.status in LIVE_BINDING_STATUSES
                or bound.status is _UNCONFIRMED
                or (bound.status is _VANISHED and self.vanished_policy == "stop")
            ):
                self._gone(bound, FlagKind.VANISHED)

    def _pass_machines(self) -> None:
        """Decide each machine that has a new start, a switch or several contenders."""
        touched = set(self.crowded)
        touched.update(self.fresh.values())
        touched.update(self.bindings[key].mm_machine_id for key in self.switching)
        self.stats.unchanged += len(self.holders) - len(touched)
        for mm_machine in sorted(touched):
            group = [self._contender(self.holders[mm_machine])]
            group.extend(self._contender(key) for key in self.crowded.get(mm_machine, ()))
            if len(group) == 1:
                winner = group[0]
            else:
                group.sort(key=lambda c: (c[0], c[1]))
                winner = group[-1]
                for loser in group[:-1]:
                    self._supersede(loser, winner)
            if winner[3] is None:
                self._clear_machine(mm_machine, winner, group)
                self._start(winner)
            elif winner[5]:
                self._switch(winner)
            else:
                self.stats.unchanged += 1

    def _contender(self, key: str) -> _Contender:
        run = self.desired[key]
        fresh_machine = self.fresh.get(key)
        bound = None if fresh_machine is not None else self.bindings[key]
        start_at = run.start_at
        if start_at is None:
            start_at = (bound.erp_start_at if bound is not None else None) or _EARLIEST
        if bound is None:
            assert fresh_machine is not None
            return (start_at, key, run, None, fresh_machine, False)
        return (start_at, key, run, bound, bound.mm_machine_id, key in self.switching)

    # -- per run --

    def _machine(self, erp_machine: str) -> str | None:
        cache = self._machine_cache
        if erp_machine in cache:
            return cache[erp_machine]
        mm = self.mapper.map(erp_machine)
        cache[erp_machine] = mm
        return mm

    def excluded(self, run: JobOperationRun) -> bool:
        return self.exclude is not None and self.exclude(run)

    def placed_on(self, run: JobOperationRun) -> str | None:
        """The MM machine the multi-ticket rule places a ticket on; None leaves it to these rules."""
        if self.excluded(run) or not run.operation.machine.strip():
            return None
        mm_machine = self._machine(run.operation.machine)
        return None if mm_machine is None or mm_machine in self.rejected else mm_machine

    def _contend(self, key: str, mm_machine: str) -> None:
        holder = self.holders.setdefault(mm_machine, key)
        if holder != key:
            self.crowded.setdefault(mm_machine, []).append(key)

    def _unbound(self, key: str, run: JobOperationRun) -> None:
        stats = self.stats
        if run.state is _ENDED:
            stats.skipped_ended += 1
            return
        if self.exclude is not None and self.exclude(run):
            stats.skipped_excluded += 1
            return
        erp_machine = run.operation.machine
        if not erp_machine.strip():
            self._quarantine(
                run,
                "has no machine (the ERP resource id is blank); set the resource on the operation "
                "in the ERP, or exclude the operation",
                error_class="blank_machine",
            )
            return
        mm_machine = self._machine(erp_machine)
        if mm_machine is None:
            stats.skipped_ignored += 1
            return
        if mm_machine in self.rejected:
            self._quarantine(
                run,
                f"is on ERP machine {erp_machine!r}, sent to MM as erpMachineId {mm_machine!r}, which MM "
                f"does not know; set the ERP Machine ID of that machine in MM to {mm_machine!r}, or map "
                f"{erp_machine!r} with machines.overrides (or list it in machines.ignore)",
                error_class="unknown_machine",
            )
            return
        self.fresh[key] = mm_machine
        self._contend(key, mm_machine)

    def _live(self, key: str, run: JobOperationRun, bound: BoundRun) -> None:
        state = run.state
        if state is _ENDED:
            self._stop_ended(run, bound)
            return
        if self.exclude is not None and self.exclude(run):
            self._gone(bound, FlagKind.EXCLUDED)
            return
        if bound.payload_hash is not None:
            # Same ERP machine: compare on the MM id the run was started with, so editing
            # machines.overrides never reads as an ERP edit of the job.
            erp_machine = run.operation.machine
            if erp_machine == bound.erp_machine:
                mm_now = bound.mm_machine_id
            else:
                mm_now = self._machine(erp_machine) or ""
            fingerprint = payload_fingerprint(run, mm_now)
            if fingerprint != bound.payload_hash:
                self.flags.append(fields_changed_flag(run, bound, mm_now, fingerprint))
        switch = False
        if bound.in_setup:
            switch = state is _PRODUCTION
        elif state is _SETUP:
            self._flag_run(
                FlagKind.PRODUCTION_TO_SETUP,
                run,
                bound,
                f"the ERP moved {bound.job} op {bound.operation} back to setup; MM stays in "
                "production (MM cannot switch a run back to setup)",
                dedupe=f"{FlagKind.PRODUCTION_TO_SETUP}:{bound.mm_run_id}",
            )
        if switch:
            self.switching.add(key)
        self._contend(key, bound.mm_machine_id)

    def _stop_ended(self, run: JobOperationRun, bound: BoundRun) -> None:
        end = run.end_at if run.end_at is not None else self.now
        reason = (
            self.reasons.get(bound.run_key) or f"clocked out of {bound.job} op {bound.operation} in the ERP"
        )
        self._stop(bound, end, reason, erp_ended=True)

    def _gone(self, bound: BoundRun, kind: FlagKind) -> None:
        """The ERP no longer wants this open run in MM (vanished, or its operation is excluded)."""
        self.stats.vanished += 1
        what = "vanished from the ERP" if kind is FlagKind.VANISHED else "is excluded from sync now"
        if self.resync:
            what = "is no longer in the ERP (resync)" if kind is FlagKind.VANISHED else what
        if self.vanished_policy == "stop":
            self._stop(
                bound,
                self.now,
                f"{bound.job} op {bound.operation} {what}; stopping (sync.vanished_runs = stop)",
                erp_ended=False,
            )
            self.stops[bound.run_key].vanished = True
            return
        self.flags.append(vanished_flag(bound, kind, what))

    def _flag_run(
        self, kind: FlagKind, run: JobOperationRun, bound: BoundRun | None, message: str, *, dedupe: str
    ) -> None:
        mm_run_id = bound.mm_run_id if bound is not None else self._new_id(run.run_key)
        self.flags.append(run_flag(kind, run, mm_run_id, message, dedupe=dedupe))

    def _quarantine(self, run: JobOperationRun, problem: str, *, error_class: str) -> None:
        self.stats.quarantined += 1
        mm_run_id = self._new_id(run.run_key)
        self.plan_.quarantined.append(
            quarantined_run(self.source, run, mm_run_id, problem, error_class=error_class)
        )

    # -- machines --

    def _at(self, start: datetime) -> datetime:
        """A contender's start as a stop time; ``now`` when the ERP gave none."""
        return self.now if start is _EARLIEST else start

    def _supersede(self, loser: _Contender, winner: _Contender) -> None:
        self.stats.superseded += 1
        w_start, w_key, w_run, _, w_machine, _ = winner
        _, l_key, l_run, l_bound, _, _ = loser
        by = f"{w_run.operation.job_name} op {w_run.operation.operation_seq}"
        lost = f"{l_run.operation.job_name} op {l_run.operation.operation_seq}"
        if l_bound is not None:
            self._stop(
                l_bound,
                self._at(w_start),
                f"superseded on machine {l_bound.erp_machine} by {by}, which started later",
                erp_ended=False,
            )
            what = "stopped in MM"
        else:
            what = "not started in MM"
        self._flag_run(
            FlagKind.SUPERSEDED,
            l_run,
            l_bound,
            f"the ERP has {lost} and {by} both active on MM machine {w_machine}; "
            f"the later one wins, {lost} {what}",
            dedupe=f"{FlagKind.SUPERSEDED}:{l_key}:{w_key}",
        )

    def _clear_machine(self, mm_machine: str, winner: _Contender, group: list[_Contender]) -> None:
        """A new run takes the machine: stop every other run MM has open there first."""
        if self._occupants is None:
            occupants: dict[str, list[BoundRun]] = {}
            for bound in self.bindings.values():
                if bound.status in MM_OPEN_BINDING_STATUSES:
                    occupants.setdefault(bound.mm_machine_id, []).append(bound)
            self._occupants = occupants
        handled = {c[1] for c in group}
        op = winner[2].operation
        for bound in self._occupants.get(mm_machine, ()):
            if bound.run_key in handled:
                continue
            previous = self.stops.get(bound.run_key)
            if previous is not None and previous.erp_ended:
                continue
            run = self.desired.get(bound.run_key)
            if run is not None and run.state is _ENDED:  # e.g. outside a resync's selection
                self._stop_ended(run, bound)
                continue
            gone = "" if bound.run_key in self.desired else ", no longer in the ERP"
            self._stop(
                bound,
                self._at(winner[0]),
                f"machine {bound.erp_machine} starts {op.job_name} op {op.operation_seq}; "
                f"stopping the run still open there ({bound.job} op {bound.operation}{gone})",
                erp_ended=False,
            )

    # -- actions --

    def _new_id(self, key: str) -> str:
        return self.mm_ids.get(key) or mm_run_id_for(self.source, key)

    def _generation(self, bound: BoundRun | None) -> str:
        """A resync's own generation, else that of the MM run the binding tracks."""
        if self.generation or bound is None:
            return self.generation
        return bound.generation

    def _stop(self, bound: BoundRun, end_at: datetime, reason: str, *, erp_ended: bool) -> None:
        """Plan a stop, clamped to [MM start, now]; a later call for the same run replaces it."""
        end_at = min(end_at, self.now)
        if bound.erp_start_at is not None and end_at < bound.erp_start_at:
            end_at = bound.erp_start_at
        self.stops[bound.run_key] = _Stop(bound, end_at, reason, erp_ended)

    def _start(self, winner: _Contender) -> None:
        _, key, run, _, mm_machine, _ = winner
        op = run.operation
        in_setup = run.state is _SETUP
        phase = "setup" if in_setup else "production"
        mm_run_id = self._new_id(key)
        reason = f"clocked in on {op.job_name} op {op.operation_seq} ({phase})"
        if key in self.reasons:
            reason = f"{self.reasons[key]} ({phase})"
        if self.resync:
            reason = f"resync: MM has no run for {op.job_name} op {op.operation_seq}; starting ({phase})"
        self.stats.started += 1
        self.starts.append(
            StartAction(
                ref=RunRef(self.source, key, mm_run_id, op.job_name, op.operation_seq, op.machine),
                mm_machine_id=mm_machine,
                reason=cut_reason(reason),
                idempotency_key=idempotency_key(
                    ActionKind.START, mm_run_id, phase, generation=self.generation
                ),
                in_setup=in_setup,
                run=run,
                payload_hash=payload_fingerprint(run, mm_machine),
                generation=self.generation,
            )
        )

    def _switch(self, winner: _Contender) -> None:
        _, _, run, bound, _, _ = winner
        assert bound is not None
        self.stats.switched += 1
        self.starts.append(
            StartAction(
                ref=bound.ref(self.source),
                mm_machine_id=bound.mm_machine_id,
                reason=cut_reason(f"setup done on {bound.job} op {bound.operation}: switching to production"),
                idempotency_key=idempotency_key(
                    ActionKind.START, bound.mm_run_id, "production", generation=self._generation(bound)
                ),
                in_setup=False,
                run=run,
                payload_hash=payload_fingerprint(run, bound.mm_machine_id),
                generation=self._generation(bound),
                switch=True,
            )
        )

    def _finish(self) -> Plan:
        plan = self.plan_
        stops = [
            StopAction(
                ref=stop.bound.ref(self.source),
                mm_machine_id=stop.bound.mm_machine_id,
                reason=cut_reason(stop.reason),
                idempotency_key=idempotency_key(
                    ActionKind.STOP, stop.bound.mm_run_id, generation=self._generation(stop.bound)
                ),
                in_setup=stop.bound.in_setup,
                end_at=stop.end_at,
                generation=self._generation(stop.bound),
                vanished=stop.vanished,
            )
            for stop in self.stops.values()
        ]
        self.stats.stopped = len(stops)
        actions: list[RunAction] = [*stops, *self.starts]
        actions.sort(key=lambda a: (a.mm_machine_id, 0 if a.kind is ActionKind.STOP else 1, a.run_key))
        plan.actions = actions
        plan.flags = settle_flags(self.flags, actions)
        plan.quarantined.sort(key=lambda b: b.record_key)
        self.stats.flagged = len(plan.flags)
        return plan
