"""`erpsync resync`: re-establish MachineMetrics state for a selection of runs, on request.

It asks MM (get job run) what it has for each selected run, lets the pure `resync_plan` decide
(re-start runs MM lost, stop runs MM has open that the ERP ended), and then goes through exactly
the journal, dispatch and audit path of a sync cycle, with `triggered_by = cli`. A resync
generation token in every idempotency key lets a repeated resync act again, deliberately.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from erpsync.adapters.mm.errors import MMError
from erpsync.domain.clock import utcnow
from erpsync.domain.errors import ConfigError
from erpsync.domain.identity import generation_token, mm_run_id_for
from erpsync.domain.lifecycle import BoundRun, MMRunState
from erpsync.domain.model import BadRecord, JobOperationRun
from erpsync.domain.resync import resync_plan
from erpsync.domain.shop_floor import anchor_of
from erpsync.service.cycles import cycle
from erpsync.service.dispatch import raise_for_result
from erpsync.service.stop_guard import guard_plan, held_keys, report
from erpsync.service.sync import PlanResult, SyncService, SyncSummary, sort_rows


@dataclass(frozen=True)
class Selection:
    """Which runs a resync covers; `everything` must be asked for explicitly (`--all`)."""

    job: str | None = None
    operation: str | None = None
    machine: str | None = None
    run: str | None = None
    everything: bool = False

    def is_empty(self) -> bool:
        return not (self.everything or self.job or self.operation or self.machine or self.run)

    def matches(self, run: JobOperationRun | None, binding: BoundRun | None) -> bool:
        if self.everything:
            return True
        job = binding.job if binding else run.operation.job_name if run else ""
        operation = binding.operation if binding else run.operation.operation_name if run else ""
        machine = binding.erp_machine if binding else run.machine if run else ""
        keys = (
            {binding.mm_run_id, binding.run_key, anchor_of(binding.run_key)[0]}
            if binding
            else {run.run_key}
            if run
            else set()
        )
        checks = [
            self.job is None or self.job in (job, run.operation.job_name if run else None),
            self.operation is None
            or self.operation in (operation, run.operation.operation_seq if run else None),
            self.machine is None or self.machine == machine,
            self.run is None or self.run in keys,
        ]
        return all(checks)


@dataclass
class ResyncResult:
    planned: PlanResult
    selected: int = 0
    mm_state: dict[str, MMRunState] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # MM run ids MM could not be read for
    read_error: str | None = None  # the last of those reads' errors (it names MM's URL)
    summary: SyncSummary | None = None


def run_resync(
    service: SyncService,
    selection: Selection,
    *,
    dry_run: bool,
    progress: Callable[[int, int], None] | None = None,
    confirm_stops: bool = False,
) -> ResyncResult:
    """Plan (and unless `dry_run`, carry out) the resync of the selected runs.

    A resync stops runs the ERP lost only on a snapshot that may stop them (service/stop_guard.py),
    unless `confirm_stops`: a person says the stops are right."""
    if service.mm is None:
        raise RuntimeError("resync needs MachineMetrics to read what MM has")
    now = utcnow()
    snapshot = service.source.read_runs()
    with service.uow() as uow:
        bindings = uow.bindings.all_runs(service.source.name)
        rejected = uow.machines.rejected()
    desired: dict[str, JobOperationRun] = {}
    bad: list[BadRecord] = []
    sort_rows(snapshot or (), desired, bad)
    missing = {anchor_of(k)[0] for k, b in bindings.items() if selection.matches(None, b)} - desired.keys()
    if missing:
        sort_rows(service.source.lookup_runs(sorted(missing)), desired, bad)
    selected = {
        key for key in set(desired) | set(bindings) if selection.matches(desired.get(key), bindings.get(key))
    }
    run_ids = {
        key: bindings[key].mm_run_id if key in bindings else mm_run_id_for(service.source.name, key)
        for key in selected
    }
    mm_state, mm_ends, unreadable, read_error = _read_mm(service, sorted(run_ids.values()), progress)
    plan = resync_plan(
        desired.values(),
        bindings,
        source=service.source.name,
        mapper=service.policy.mapper,
        mm_state=mm_state,
        generation=generation_token(now),
        now=now,
        selection=selected.__contains__,
        rejected_machines=rejected,
        held=held_keys(bad, bindings),
        mm_ends=mm_ends,
    )
    plan, hold = guard_plan(
        plan,
        source=service.source.name,
        suspect=snapshot.suspect if snapshot is not None else None,
        bindings=bindings,
        max_share=service.policy.max_vanished_share,
        confirmed=confirm_stops,
    )
    result = ResyncResult(
        planned=PlanResult(
            plan=plan, snapshot=snapshot, bad_rows=bad, runs_read=len(desired), bound_keys=frozenset(bindings)
        ),
        selected=len(selected),
        mm_state=mm_state,
        unreadable=unreadable,
        read_error=read_error,
    )
    result.planned.machines = service.machines_seen(desired.values())
    result.planned.hold = hold
    if dry_run:
        return result
    summary = SyncSummary(runs_read=len(desired), flagged=len(plan.flags))
    with cycle(service.uow, "resync") as record:
        groups = service.journal_plan(result.planned, summary)
        dispatched = service.dispatcher().run(groups)
        summary.add_dispatch(dispatched)
        raise_for_result(dispatched)
        summary.held_stops, summary.confirmed_stops = report(hold, service.source.name)
        record.summary = {
            "selected": result.selected,
            "unreadable": len(result.unreadable),
            **summary.__dict__,
        }
        if dispatched.retrying or dispatched.not_sent or result.unreadable:
            record.outcome = "partial"
    result.summary = summary
    return result


def _read_mm(
    service: SyncService, run_ids: list[str], progress: Callable[[int, int], None] | None
) -> tuple[dict[str, MMRunState], dict[str, datetime], list[str], str | None]:
    """get-job-run for every selected run, concurrently: each run's state, the end of those MM
    ended, and the runs MM could not answer (left alone, returned with the last error). A refused
    key (MMConfigError) ends the resync: no read can pass."""
    mm = service.mm
    assert mm is not None
    states: dict[str, MMRunState] = {}
    ends: dict[str, datetime] = {}
    unreadable: list[str] = []
    last_error: str | None = None

    def read(run_id: str) -> tuple[str, MMRunState | MMError, datetime | None]:
        try:
            run = mm.get_job_run(run_id)
        except ConfigError:
            raise
        except MMError as exc:
            return run_id, exc, None
        if run is None:
            return run_id, "missing", None
        return run_id, "ended" if run.end_at is not None else "open", run.end_at

    with ThreadPoolExecutor(max_workers=service.policy.max_concurrency) as pool:
        for done, (run_id, state, end_at) in enumerate(pool.map(read, run_ids), start=1):
            if isinstance(state, MMError):
                unreadable.append(run_id)
                last_error = str(state)
            else:
                states[run_id] = state
            if end_at is not None:
                ends[run_id] = end_at
            if progress:
                progress(done, len(run_ids))
    return states, ends, unreadable, last_error
