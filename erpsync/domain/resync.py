"""`resync_plan`: ``erpsync resync``, re-establishing MM for chosen runs from what MM reports now.

It rewrites the selected bindings from MM's answers, then plans with the `reconcile` rules
(domain/reconcile.py) under a resync generation, so every key it plans is new to the journal.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from erpsync.domain.drift import DRIFT_STATUSES
from erpsync.domain.flags import binding_flag, settle_flags
from erpsync.domain.identity import mm_run_id_for
from erpsync.domain.lifecycle import (
    LIVE_BINDING_STATUSES,
    MM_OPEN_BINDING_STATUSES,
    RECONCILE_BINDING_STATUSES,
    ActionKind,
    BindingStatus,
    BoundRun,
    MMRunState,
)
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import JobOperationRun, RunState, index_runs
from erpsync.domain.plan import Flag, FlagKind, Plan
from erpsync.domain.planner import Planner
from erpsync.domain.shop_floor import anchor_of


def resync_plan(
    desired: Iterable[JobOperationRun],
    bindings: Mapping[str, BoundRun],
    *,
    source: str,
    mapper: MachineMapper,
    mm_state: Mapping[str, MMRunState],
    generation: str,
    now: datetime,
    selection: Callable[[str], bool] | None = None,
    rejected_machines: Collection[str] = (),
    exclude: Callable[[JobOperationRun], bool] | None = None,
    held: Collection[str] = frozenset(),
    mm_ends: Mapping[str, datetime] | None = None,
) -> Plan:
    """``erpsync resync``: re-establish MM for the selected runs from what MM reports now.

    Inputs: ``desired`` holds the ERP's current view of the runs to check (active ones and lookups
    of the selected ones, a missing run meaning the ERP lost it); ``selection(run_key)`` picks runs
    among ``desired`` and ``bindings`` (None: all); ``mm_state[mm_run_id]`` is get-job-run's answer
    for each selected run (``missing``: 404; ``open``: no ``endAt``; ``ended``), keyed by the
    binding's ``mm_run_id`` or `mm_run_id_for` for unbound runs. A selected run absent from
    ``mm_state`` is left alone and counted ``unknown``. ``generation`` (see
    `identity.generation_token`) is appended to every key so the journal accepts repeats.
    ``held``: run keys whose ERP rows turned bad (never read as lost, as in `reconcile`).
    ``mm_ends[mm_run_id]``: when MM's ended runs ended (a next generation starts after that).

    What MM reports replaces the binding status for selected runs, then the `reconcile` rules apply
    with the vanished policy forced to ``"stop"`` (a resync is an explicit request):

    - ERP active, MM missing -> start again with its run id, when MM never had the run (a start
      it refused or that was given up, a binding without one); a run MM had (running, vanished, or
      one erpsync knows ended: ``mm_end_at`` set, as after drift found by write-back) may have
      counts in the ERP already, so it is not started again under its old id (MM would count from
      0): ``missing_in_mm`` flag, recorded stopped from ``now``, and the next sync cycle starts the
      ticket's next run generation (domain/drift.py, whatever ``sync.heal_drift`` says: a resync
      is a person's request);
    - ERP active, MM open -> nothing, or the pending setup -> production switch;
    - ERP active, MM ended -> ``ended_in_mm`` flag, recorded stopped: the next sync cycle starts
      the run's next generation (domain/shop_floor.py; an ended MM run id cannot be reopened);
    - ERP ended, MM open -> stop at the ERP end time; ERP lost it, MM open -> stop at ``now``;
    - ERP ended or lost, MM missing/ended -> nothing;
    - a binding erpsync holds open whose run MM lacks and that is not started again (ended, lost,
      ignored, quarantined, superseded) -> ``missing_in_mm`` flag: record it stopped.
    Flags carry the binding status to record (``rebind`` -> running). One-run-per-machine still
    holds: runs outside the selection compete for machines and are stopped when a selected start
    wins theirs.
    """
    index, bindings = _latest_generations(index_runs(desired), bindings)
    reported = _Reported(bindings, mapper, generation, now, mm_ends or {})
    for key in sorted(set(index).union(bindings)):
        # a ticket's later run generation is picked with its ticket (``--run LT7`` -> ``LT7#g2``)
        if selection is not None and not (selection(key) or selection(anchor_of(key)[0])):
            continue
        bound = bindings.get(key)
        mm_run_id = bound.mm_run_id if bound is not None else mm_run_id_for(source, key)
        state = mm_state.get(mm_run_id)
        if state is None:
            reported.unknown += 1
        else:
            reported.read(key, index.get(key), mm_run_id, state)
    flags, lost_open = reported.flags, reported.lost_open
    planner = Planner(
        desired=index,
        bindings=reported.effective,
        source=source,
        mapper=mapper,
        vanished_policy="stop",
        now=now,
        rejected=rejected_machines,
        exclude=exclude,
        selected=reported.selected,
        generation=generation,
        mm_ids=reported.mm_ids,
        held=frozenset(held),
    )
    plan = planner.plan(scan_vanished=True)
    restarted = {a.run_key for a in plan.actions if a.kind is ActionKind.START}
    flags.extend(
        _missing_flag(bound, now, again=False) for key, bound in lost_open.items() if key not in restarted
    )
    plan.flags = settle_flags([*flags, *plan.flags], plan.actions)
    plan.stats.flagged = len(plan.flags)
    plan.stats.unknown = reported.unknown
    return plan


@dataclass(eq=False)
class _Reported:
    """What MM reports replaces the selected runs' bindings (`resync_plan`'s first step): the
    bindings the planner then reads, the MM run ids of runs to start again, and the flags."""

    bindings: Mapping[str, BoundRun]
    mapper: MachineMapper
    generation: str
    now: datetime
    mm_ends: Mapping[str, datetime]
    effective: dict[str, BoundRun] = field(init=False)
    mm_ids: dict[str, str] = field(default_factory=dict)
    flags: list[Flag] = field(default_factory=list)
    lost_open: dict[str, BoundRun] = field(default_factory=dict)  # open to erpsync, gone from MM
    selected: set[str] = field(default_factory=set)
    unknown: int = 0

    def __post_init__(self) -> None:
        self.effective = dict(self.bindings)

    def read(self, key: str, run: JobOperationRun | None, mm_run_id: str, state: MMRunState) -> None:
        self.selected.add(key)
        bound = self.bindings.get(key)
        erp_active = run is not None and run.state is not RunState.ENDED
        if state == "missing":
            self._missing(key, bound, mm_run_id, erp_active=erp_active)
            return
        if bound is None:
            assert run is not None  # a selected key comes from desired or from bindings
            bound = BoundRun(
                run_key=key,
                mm_run_id=mm_run_id,
                erp_machine=run.machine,
                mm_machine_id=self.mapper.map(run.machine) or "",
                status=BindingStatus.STOPPED,
                in_setup=run.state is RunState.SETUP,
                payload_hash=None,
                erp_start_at=run.start_at,
                job=run.operation.job_name,
                operation=run.operation.operation_seq,
            )
        if state == "open":
            self._open(key, bound)
        else:
            self._ended(key, bound, erp_active=erp_active)

    def _missing(self, key: str, bound: BoundRun | None, mm_run_id: str, *, erp_active: bool) -> None:
        if bound is not None and erp_active and _mm_had_it(bound):
            # its counts may be in the ERP: the next sync starts its next generation instead
            self.effective[key] = replace(bound, status=BindingStatus.STOPPED)
            if bound.status is not BindingStatus.STOPPED:
                self.flags.append(_missing_flag(bound, self.now, again=True))
            return
        self.effective.pop(key, None)
        self.mm_ids[key] = mm_run_id
        if bound is not None and bound.status in RECONCILE_BINDING_STATUSES:
            self.lost_open[key] = bound

    def _open(self, key: str, bound: BoundRun) -> None:
        if bound.status not in LIVE_BINDING_STATUSES:
            recorded = bound.status if key in self.bindings else "no binding"
            flag = binding_flag(
                FlagKind.REBIND,
                bound,
                f"MM has run {bound.mm_run_id} open but erpsync recorded {recorded}; recording it as running",
                binding_status=BindingStatus.RUNNING,
            )
            self.flags.append(replace(flag, generation=self.generation))
        self.effective[key] = replace(bound, status=BindingStatus.RUNNING, generation=self.generation)

    def _ended(self, key: str, bound: BoundRun, *, erp_active: bool) -> None:
        ended_at = self.mm_ends.get(bound.mm_run_id)
        if erp_active:
            message = (
                f"MM ended run {bound.mm_run_id} but the ERP still has {bound.job} op {bound.operation} "
                "open; recorded as stopped, the next sync cycle starts a new MM run for it "
                "(an ended MM run id cannot be reopened)"
            )
            self.flags.append(_ended_flag(bound, message, ended_at))
        elif bound.status in MM_OPEN_BINDING_STATUSES and key in self.bindings:
            # erpsync holds it open (or left it open, vanished; or may have: unconfirmed)
            message = f"MM already ended run {bound.mm_run_id}; recording it as stopped"
            self.flags.append(_ended_flag(bound, message, ended_at))
        self.effective[key] = replace(bound, status=BindingStatus.STOPPED)


def _mm_had_it(bound: BoundRun) -> bool:
    """Whether MM had this binding's run: erpsync has it running (or left it open, vanished), or
    knows when MM's run ended (stopped, or failed after write-back found it lost or ended)."""
    return bound.status in DRIFT_STATUSES or bound.mm_end_at is not None


def _missing_flag(bound: BoundRun, now: datetime, *, again: bool) -> Flag:
    """A run erpsync had open that MM does not have: recorded stopped from `now` (unless erpsync
    knows its end already), with no final counts to read."""
    what = (
        "; recording it as stopped: the next sync cycle starts a new MM run for it (the next run "
        "generation; its counts so far stay with the ticket)"
        if again
        else " and it is not started again; recording it as stopped"
    )
    flag = binding_flag(
        FlagKind.MISSING_IN_MM,
        bound,
        f"MM has no run {bound.mm_run_id} that erpsync had open{what}",
        binding_status=BindingStatus.STOPPED,
    )
    return replace(flag, mm_end_at=None if bound.mm_end_at else now, final_counts=False)


def _ended_flag(bound: BoundRun, message: str, ended_at: datetime | None) -> Flag:
    """A run MM ended that erpsync had open: recorded stopped at MM's end."""
    flag = binding_flag(FlagKind.ENDED_IN_MM, bound, message, binding_status=BindingStatus.STOPPED)
    return replace(flag, mm_end_at=ended_at)


def _latest_generations(
    index: dict[str, JobOperationRun], bindings: Mapping[str, BoundRun]
) -> tuple[dict[str, JobOperationRun], dict[str, BoundRun]]:
    """Only each ticket's latest run generation is resynced; its ticket is keyed by that binding
    (earlier generations ended in MM when the next one started)."""
    latest: dict[str, str] = {}
    for key in bindings:
        anchor, number = anchor_of(key)
        if anchor not in latest or number > anchor_of(latest[anchor])[1]:
            latest[anchor] = key
    kept = {key: bindings[key] for key in latest.values()}
    for anchor, key in latest.items():
        if key != anchor and anchor in index:
            index[key] = replace(index.pop(anchor), run_key=key)
    return index, kept
