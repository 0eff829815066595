"""`resync_plan`: ``erpsync resync``, re-establishing MM for chosen runs from what MM reports now.

It rewrites the selected bindings from MM's answers, then plans with the `reconcile` rules
(domain/reconcile.py) under a resync generation, so every key it plans is new to the journal.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from datetime import datetime

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

    What MM reports replaces the binding status for selected runs, then the `reconcile` rules apply
    with the vanished policy forced to ``"stop"`` (a resync is an explicit request):

    - ERP active, MM missing -> start again (also for stopped/failed/vanished bindings);
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
    effective: dict[str, BoundRun] = dict(bindings)
    mm_ids: dict[str, str] = {}
    flags: list[Flag] = []
    lost_open: dict[str, BoundRun] = {}  # bindings we think open that MM does not have
    unknown = 0
    selected: set[str] = set()
    candidates = set(index).union(bindings)
    for key in sorted(candidates):
        # a ticket's later run generation is picked with its ticket (``--run LT7`` -> ``LT7#g2``)
        if selection is not None and not (selection(key) or selection(anchor_of(key)[0])):
            continue
        bound = bindings.get(key)
        run = index.get(key)
        mm_run_id = bound.mm_run_id if bound is not None else mm_run_id_for(source, key)
        state = mm_state.get(mm_run_id)
        if state is None:
            unknown += 1
            continue
        selected.add(key)
        erp_active = run is not None and run.state is not RunState.ENDED
        if state == "missing":
            effective.pop(key, None)
            mm_ids[key] = mm_run_id
            if bound is not None and bound.status in RECONCILE_BINDING_STATUSES:
                lost_open[key] = bound
            continue
        if bound is None:
            assert run is not None  # a selected key comes from desired or from bindings
            mm_machine = mapper.map(run.machine) or ""
            bound = BoundRun(
                run_key=key,
                mm_run_id=mm_run_id,
                erp_machine=run.machine,
                mm_machine_id=mm_machine,
                status=BindingStatus.STOPPED,
                in_setup=run.state is RunState.SETUP,
                payload_hash=None,
                erp_start_at=run.start_at,
                job=run.operation.job_name,
                operation=run.operation.operation_seq,
            )
        if state == "open":
            if bound.status not in LIVE_BINDING_STATUSES:
                flags.append(
                    replace(
                        binding_flag(
                            FlagKind.REBIND,
                            bound,
                            f"MM has run {mm_run_id} open but erpsync recorded "
                            f"{bound.status if key in bindings else 'no binding'}; recording it as running",
                            binding_status=BindingStatus.RUNNING,
                        ),
                        generation=generation,
                    )
                )
            effective[key] = replace(bound, status=BindingStatus.RUNNING, generation=generation)
        else:  # ended in MM
            if erp_active:
                flags.append(
                    binding_flag(
                        FlagKind.ENDED_IN_MM,
                        bound,
                        f"MM ended run {mm_run_id} but the ERP still has {bound.job} op {bound.operation} "
                        "open; recorded as stopped, the next sync cycle starts a new MM run for it "
                        "(an ended MM run id cannot be reopened)",
                        binding_status=BindingStatus.STOPPED,
                    )
                )
            elif bound.status in MM_OPEN_BINDING_STATUSES and key in bindings:
                # also a vanished or unconfirmed run: MM's read settles what erpsync could not
                flags.append(
                    binding_flag(
                        FlagKind.ENDED_IN_MM,
                        bound,
                        f"MM already ended run {mm_run_id}; recording it as stopped",
                        binding_status=BindingStatus.STOPPED,
                    )
                )
            effective[key] = replace(bound, status=BindingStatus.STOPPED)
    planner = Planner(
        desired=index,
        bindings=effective,
        source=source,
        mapper=mapper,
        vanished_policy="stop",
        now=now,
        rejected=rejected_machines,
        exclude=exclude,
        selected=selected,
        generation=generation,
        mm_ids=mm_ids,
        held=frozenset(held),
    )
    plan = planner.plan(scan_vanished=True)
    restarted = {a.run_key for a in plan.actions if a.kind is ActionKind.START}
    flags.extend(
        binding_flag(
            FlagKind.MISSING_IN_MM,
            bound,
            f"MM has no run {bound.mm_run_id} that erpsync had open and it is not started again; "
            "recording it as stopped",
            binding_status=BindingStatus.STOPPED,
        )
        for key, bound in lost_open.items()
        if key not in restarted
    )
    plan.flags = settle_flags([*flags, *plan.flags], plan.actions)
    plan.stats.flagged = len(plan.flags)
    plan.stats.unknown = unknown
    return plan


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
