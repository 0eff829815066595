"""One sync cycle, end to end: ERP rows -> plan -> journal -> MM calls -> outcomes + audit.

`run_cycle` reads top-down, and so does this module:

1. settle what an earlier cycle left in doubt (service/recovery.py: read MM first);
2. plan: read the ERP (source port) and erpsync's bindings, and diff them (domain/reconcile.py);
3. journal: in ONE unit of work, under the fence, journal every intent (domain/lifecycle.py
   `Intent`), create bindings, quarantine bad rows, audit flags;
4. dispatch (service/dispatch.py), settling outcomes as they come;
5. acknowledge the source snapshot (advance checkpoints, archive CSV files), unless it held
   stops back (service/stop_guard.py: it is read again until a good one or a person confirms).

`plan` runs step 2 only, with no side effect anywhere. State is reached only through the
`UnitOfWork` port and MM only through the `MachineMetrics` port (service/ports.py).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from erpsync.adapters.erp.port import JobSource, RunSnapshot
from erpsync.adapters.mm.mapper import payload_of, start_request, stop_request, switch_request
from erpsync.domain.clock import utcnow
from erpsync.domain.lifecycle import (
    OPEN_BINDING_STATUSES,
    ActionKind,
    BindingStatus,
    BoundRun,
    Intent,
    JournaledAction,
    JournalStamp,
)
from erpsync.domain.model import BadRecord, JobOperationRun, RunState
from erpsync.domain.oversized import oversized
from erpsync.domain.plan import Flag, Plan, RunAction, StartAction
from erpsync.domain.reconcile import reconcile
from erpsync.domain.shop_floor import anchor_of
from erpsync.domain.snapshot_trust import StopHold
from erpsync.observability.collector import collector_paused
from erpsync.observability.correlation import current_correlation_id, current_trigger
from erpsync.observability.metrics import QUARANTINE_OPEN
from erpsync.observability.scrub import scrub
from erpsync.service.cycles import cycle
from erpsync.service.dispatch import Dispatcher, DispatchResult, raise_for_result
from erpsync.service.policy import SyncPolicy
from erpsync.service.ports import AuditRecord, Fence, MachineMetrics, UnitOfWork, UnitOfWorkFactory
from erpsync.service.recovery import settle_in_doubt
from erpsync.service.stop_guard import guard_plan, held_keys, report

log = structlog.get_logger(__name__)


def sort_rows(
    rows: Iterable[JobOperationRun | BadRecord], desired: dict[str, JobOperationRun], bad: list[BadRecord]
) -> None:
    """Sort what a source read into the runs it wants (by run key) and the rows it could not read."""
    for row in rows:
        if isinstance(row, BadRecord):
            bad.append(row)
        else:
            desired[row.run_key] = row


@dataclass
class SyncSummary:
    """What one cycle did; printed by `erpsync sync` and stored on the cycle row."""

    runs_read: int = 0
    bad_rows: int = 0
    started: int = 0
    stopped: int = 0
    imported: int = 0
    quarantined: int = 0
    retried: int = 0
    recovered: int = 0
    flagged: int = 0
    not_sent: int = 0
    already_journaled: int = 0
    no_new_data: bool = False
    held_stops: int = 0  # stops of vanished runs the snapshot was not trusted to make
    confirmed_stops: int = 0  # held stops a person let go (`erpsync resync --confirm-stops`)
    given_up: int = 0  # actions that reached sync.max_action_attempts (counted in quarantined too)
    last_error: str | None = None  # of the last action left retrying, unsent or given up

    def not_done(self) -> int:
        """Actions this cycle could not complete: left retrying (in doubt), not sent, or given up."""
        return self.retried + self.not_sent + self.given_up

    def line(self) -> str:
        head = "no new ERP data" if self.no_new_data else f"{self.runs_read} ERP runs read"
        held = ""
        if self.held_stops:
            held = f"; {self.held_stops} stops held (see the audit; erpsync resync --confirm-stops)"
        return (
            f"{head}: started {self.started}, stopped {self.stopped}, imported {self.imported}, "
            f"quarantined {self.quarantined + self.bad_rows}, retried {self.retried}, "
            f"recovered {self.recovered}, flagged {self.flagged}{held}"
        )

    def add_dispatch(self, result: DispatchResult, *, recovery: bool = False) -> None:
        """Count a dispatch round; a recovery round's successes count as recovered, not as new."""
        if recovery:
            self.recovered += result.succeeded
        else:
            self.started += result.by_kind.get("start_run", 0)
            self.stopped += result.by_kind.get("stop_run", 0)
            self.imported += result.by_kind.get("import_jobs", 0)
        self.quarantined += result.quarantined + result.failed
        self.given_up += result.failed
        self.retried += result.retrying
        self.not_sent += result.not_sent
        self.last_error = result.last_error or self.last_error


@dataclass
class PlanResult:
    """A plan plus what it was computed from (kept for acknowledge and display)."""

    plan: Plan
    snapshot: RunSnapshot | None
    bad_rows: list[BadRecord] = field(default_factory=list)
    runs_read: int = 0
    machines: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    bound_keys: frozenset[str] = frozenset()
    hold: StopHold | None = None  # what this snapshot was not trusted to stop (service/stop_guard.py)


@dataclass(eq=False)
class SyncService:
    """Reconcile one ERP source with MachineMetrics.

    `mm` and `fence` are None for a read-only service (`erpsync plan`): it can plan, not act.
    """

    uow: UnitOfWorkFactory
    source: JobSource
    mm: MachineMetrics | None
    fence: Fence | None
    policy: SyncPolicy
    stop_event: threading.Event = field(default_factory=threading.Event, kw_only=True)
    # `erpsync resync --confirm-stops`: a person let this cycle make the stops a hold kept back
    confirm_stops: bool = field(default=False, kw_only=True)

    # -- one full cycle ------------------------------------------------------------------------
    def run_cycle(self) -> SyncSummary:
        """Recover, plan, journal, dispatch, acknowledge. Raises only for configuration errors."""
        summary = SyncSummary()
        dispatcher = self.dispatcher()
        with cycle(self.uow, "sync") as record:
            recovered = settle_in_doubt(dispatcher, self.policy.in_doubt_after_seconds)
            summary.add_dispatch(recovered, recovery=True)
            if not self.stop_event.is_set():
                planned = self.compute_plan()
                summary.no_new_data = planned.snapshot is None
                summary.runs_read = planned.runs_read
                summary.bad_rows = len(planned.bad_rows)
                summary.flagged = len(planned.plan.flags)
                groups = self.journal_plan(planned, summary)
                result = dispatcher.run(groups)
                summary.add_dispatch(result)
                raise_for_result(result)
                summary.held_stops, summary.confirmed_stops = report(planned.hold, self.source.name)
                held = planned.hold is not None and not planned.hold.confirmed  # read it again
                if planned.snapshot is not None and not result.not_sent and not held:
                    self.source.acknowledge(planned.snapshot)
            record.summary = asdict(summary)
            if summary.retried or summary.not_sent:
                record.outcome = "partial"
        self._refresh_quarantine_gauge()
        log.info("sync cycle", **asdict(summary))
        return summary

    # -- 2. plan: read and diff (no side effects) ----------------------------------------------
    def compute_plan(self, now: datetime | None = None) -> PlanResult:
        """Read the ERP and the bindings and diff them. Writes nothing anywhere."""
        with collector_paused():  # every row, run and binding lives until the diff is done
            return self._compute_plan(now or utcnow())

    def _compute_plan(self, now: datetime) -> PlanResult:
        snapshot = self.source.read_runs()
        # the bindings load while the ERP rows stream in: each waits on its own database
        with ThreadPoolExecutor(1, thread_name_prefix="load-bindings") as pool:
            state = pool.submit(self._load_state)
            desired: dict[str, JobOperationRun] = {}
            bad: list[BadRecord] = []
            sort_rows(snapshot or (), desired, bad)
            bindings, rejected = state.result()
        known, machine_ends = self._known_bindings(desired, bindings.keys(), now)
        bindings.update(known)
        if snapshot is None:
            return PlanResult(
                plan=reconcile([], bindings, **self._policy(now, False, rejected)), snapshot=None
            )
        runs_read = len(desired)
        held = held_keys(bad, bindings)
        # bound runs the read did not return: their anchor tickets are looked up (shop_floor.py);
        # a bad row's run is not looked up again
        gone = {anchor_of(k)[0] for k, b in bindings.items() if b.status in OPEN_BINDING_STATUSES}
        gone -= desired.keys() | held
        if gone:
            sort_rows(self.source.lookup_runs(sorted(gone)), desired, bad)
        plan = reconcile(
            desired.values(),
            bindings,
            **self._policy(now, snapshot.complete, rejected),
            held=held,
            machine_ends=machine_ends,
        )
        plan, hold = guard_plan(  # only a trusted snapshot stops runs that look vanished
            plan,
            source=self.source.name,
            suspect=snapshot.suspect,
            bindings=bindings,
            max_share=self.policy.max_vanished_share,
            confirmed=self.confirm_stops,
        )
        result = PlanResult(
            plan=plan, snapshot=snapshot, bad_rows=bad, runs_read=runs_read, bound_keys=frozenset(bindings)
        )
        result.hold = hold
        result.machines = self.machines_seen(desired.values())
        return result

    def _load_state(self) -> tuple[dict[str, BoundRun], set[str]]:
        """The bindings MM may still have open; finished ones are looked up by key afterwards."""
        with self.uow() as uow:
            return uow.bindings.open_runs(self.source.name), uow.machines.rejected()

    def _known_bindings(
        self, desired: Mapping[str, JobOperationRun], loaded: Collection[str], now: datetime
    ) -> tuple[dict[str, BoundRun], dict[str, datetime]]:
        """Bindings of the read's runs that are not open, so finished runs stay recognised; every
        run generation of open tickets without one (the next generation's number); and when
        erpsync last freed those tickets' MM machines (a start there is never before it, even
        when the ERP lost the ticket of the run that ended: domain/shop_floor.py)."""
        fresh = desired.keys() - loaded
        if not fresh:
            return {}, {}
        reopened = [desired[k] for k in fresh if desired[k].state is not RunState.ENDED]
        machine_ends: dict[str, datetime] = {}
        with self.uow() as uow:
            found = uow.bindings.by_keys(self.source.name, fresh)
            if reopened:
                found.update(uow.bindings.generations(self.source.name, [r.run_key for r in reopened]))
                machines, since = self._start_machines(reopened)
                if machines and since is not None and since < now:
                    machine_ends = uow.bindings.latest_ends(self.source.name, machines, since, now)
            return found, machine_ends

    def _start_machines(self, runs: Iterable[JobOperationRun]) -> tuple[set[str], datetime | None]:
        """The MM machines these open tickets may start a run on, and their earliest clock-in (a
        ticket without one starts at MM's now, after every recorded end)."""
        machines: set[str] = set()
        since: datetime | None = None
        for run in runs:
            mm_machine = self.policy.mapper.map(run.machine)
            if mm_machine is None or run.start_at is None:
                continue
            machines.add(mm_machine)
            since = run.start_at if since is None else min(since, run.start_at)
        return machines, since

    def _policy(self, now: datetime, complete: bool, rejected: set[str]) -> dict[str, Any]:
        return {
            "source": self.source.name,
            "mapper": self.policy.mapper,
            "snapshot_complete": complete,
            "vanished_policy": self.policy.vanished_runs,
            "now": now,
            "rejected_machines": rejected,
        }

    def machines_seen(self, runs: Iterable[JobOperationRun]) -> dict[str, tuple[str | None, int]]:
        counts: dict[str, int] = {}
        for run in runs:
            counts[run.machine] = counts.get(run.machine, 0) + 1
        return {machine: (self.policy.mapper.map(machine), n) for machine, n in counts.items() if machine}

    # -- 3. journal: one unit of work under the fence ------------------------------------------
    def journal_plan(self, planned: PlanResult, summary: SyncSummary) -> list[list[JournaledAction]]:
        """Write intents, bindings, quarantine and flags in one transaction; return dispatch groups."""
        assert self.fence is not None
        now = utcnow()
        plan = planned.plan
        intents = [self._intent(action, action.run_key not in planned.bound_keys) for action in plan.actions]
        with self.uow(self.fence) as uow:
            # the intents and the flags update bindings in separate statements: lock them first
            uow.bindings.lock(
                [i.mm_run_id for i in intents if i.mm_run_id and not i.new_binding]
                + [f.mm_run_id for f in plan.flags if _changes_binding(f)]
            )
            known = uow.actions.existing_keys([i.idempotency_key for i in intents])
            fresh = self._repeat_started(uow, [i for i in intents if i.idempotency_key not in known], plan)
            summary.already_journaled = len(intents) - len(fresh)
            too_large = {i.idempotency_key: r for i in fresh if (r := oversized(i)) is not None}
            entries = uow.actions.record(
                [i for i in fresh if i.idempotency_key not in too_large], self.journal_stamp(now)
            )
            bad = [*planned.bad_rows, *plan.quarantined, *too_large.values()]
            self.quarantine_records(uow, bad, now)
            if planned.snapshot is not None:  # a full read: retried rows not seen bad are resolved
                uow.quarantine.resolve_retried(
                    self.source.name, {(r.record_key[:255], r.error_class) for r in bad}
                )
            summary.flagged = self._flags(uow, plan.flags)
            uow.machines.note(planned.machines, now)
        by_key = {e.idempotency_key: e for e in entries}
        groups: list[list[JournaledAction]] = []
        for actions in plan.by_machine().values():
            group = [by_key[a.idempotency_key] for a in actions if a.idempotency_key in by_key]
            if group:
                groups.append(group)
        return groups

    def journal_stamp(self, now: datetime) -> JournalStamp:
        """What actions journaled now carry: this leader's fence, the cycle's cause, and a first
        claim that lasts until the action is in doubt."""
        assert self.fence is not None  # a read-only service journals nothing
        claim_until = now + timedelta(seconds=self.policy.in_doubt_after_seconds)
        return JournalStamp(self.fence.token, current_correlation_id(), current_trigger(), claim_until)

    def _repeat_started(self, uow: UnitOfWork, intents: list[Intent], plan: Plan) -> list[Intent]:
        """Switches send the body MM took for the run's start, with only ``startInSetup`` changed.

        A switch built from the ERP's row as it is now would carry any edit made since the start
        (another job or operation, a moved clock-in) and MM answers such a start with 409. Without
        the journaled start (purged by retention), the switch is sent as planned.
        """
        switches = {a.idempotency_key: a for a in plan.actions if isinstance(a, StartAction) and a.switch}
        wanted = [i for i in intents if i.idempotency_key in switches]
        if not wanted:
            return intents
        started = uow.actions.started_bodies({switches[i.idempotency_key].mm_run_id for i in wanted})
        repeated: list[Intent] = []
        for intent in intents:
            action = switches.get(intent.idempotency_key)
            body = started.get(action.mm_run_id) if action is not None else None
            if action is None or body is None:
                repeated.append(intent)
            else:
                repeated.append(replace(intent, payload=payload_of(switch_request(body, action))))
        return repeated

    def _intent(self, action: RunAction, new_run: bool) -> Intent:
        new_binding = None
        binding_status: BindingStatus | None = None
        binding_values = None
        if action.kind is ActionKind.START:
            payload = payload_of(start_request(action))
            if not new_run:
                # a re-start (resync) or a switch: the binding shows the machine MM is sent now
                binding_values = {
                    "erp_machine": action.ref.machine,
                    "mm_machine_id": action.mm_machine_id,
                    "payload_hash": action.payload_hash,
                    "erp_start_at": action.run.start_at if action.run is not None else None,
                }
            else:
                run = action.run
                assert run is not None
                new_binding = {
                    "source": action.ref.source,
                    "run_key": action.ref.run_key,
                    "mm_run_id": action.ref.mm_run_id,
                    "erp_job": action.ref.job,
                    "erp_operation": action.ref.operation,
                    "erp_machine": action.ref.machine,
                    "mm_machine_id": action.mm_machine_id,
                    "status": str(BindingStatus.STARTING),
                    "in_setup": action.in_setup,
                    "payload_hash": action.payload_hash,
                    "key_generation": action.generation,
                    "erp_start_at": run.start_at,
                    "erp_end_at": run.end_at,
                    "version": 1,
                }
        else:
            payload = payload_of(stop_request(action))
            binding_status = BindingStatus.STOPPING
        return Intent(
            action.idempotency_key,
            action.kind,
            action.source,
            action.ref,
            action.reason,
            payload,
            new_binding=new_binding,
            binding_status=binding_status,
            binding_values=binding_values,
            generation=action.generation or None,
        )

    def quarantine_records(self, uow: UnitOfWork, records: Sequence[BadRecord], now: datetime) -> None:
        """Quarantine bad rows; each is audited when it is new or re-opened, not every cycle."""
        for record in records:
            if uow.quarantine.upsert(record, now):
                uow.audit.record(AuditRecord(**record.audit_fields()))

    def _flags(self, uow: UnitOfWork, flags: Sequence[Flag]) -> int:
        """Audit each flag once (one that changes no binding is skipped when already audited).

        Returns how many were audited now.
        """
        audited = 0
        raised = uow.audit.flags_audited(
            [(f.kind, f.job[:255], f.mm_run_id) for f in flags if not _changes_binding(f)]
        )
        for flag in sorted(flags, key=lambda f: f.mm_run_id):  # binding lock order, see journal.settle
            if not _changes_binding(flag) and (flag.kind, flag.mm_run_id, scrub(flag.message)) in raised:
                continue
            audited += 1
            uow.audit.record(
                AuditRecord(
                    action=flag.kind,
                    outcome="flagged",
                    source=self.source.name,
                    erp_job=flag.job,
                    erp_operation=flag.operation,
                    erp_machine=flag.erp_machine,
                    mm_run_id=flag.mm_run_id,
                    before=flag.before,
                    after=flag.after,
                    detail=flag.message,
                )
            )
            if _changes_binding(flag) and flag.mm_run_id:  # the binding remembers it was flagged
                uow.bindings.remember_flag(flag)
        return audited

    # -- 4. dispatch ---------------------------------------------------------------------------
    def dispatcher(self) -> Dispatcher:
        if self.mm is None or self.fence is None:
            raise RuntimeError("dispatching needs MachineMetrics and a fence")
        return Dispatcher(
            self.uow,
            self.mm,
            self.fence,
            max_concurrency=self.policy.max_concurrency,
            max_attempts=self.policy.max_action_attempts,
            stop_event=self.stop_event,
        )

    def _refresh_quarantine_gauge(self) -> None:
        with self.uow() as uow:
            QUARANTINE_OPEN.set(uow.quarantine.open_count())


def _changes_binding(flag: Flag) -> bool:
    """Flags are raised once: a flag that changes the binding is not raised again."""
    return bool(flag.binding_status or flag.payload_hash or flag.generation)
