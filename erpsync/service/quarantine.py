"""`erpsync quarantine list | retry | discard`: the dead-letter queue as a SQL table, operated.

Retry puts the record back on the normal path instead of inventing a side path:
- a refused MM action (it has an action id) is re-armed as `pending` in the journal, so the next
  cycle settles it exactly like a crash leftover: read MM first, then send if MM lacks it. A
  refused start is first re-planned from the ERP's current row and the current machine mapping
  (the fix a person made is what gets sent), and MM's refusal of its machine is lifted;
- an ERP row or CSV line is marked `retry`: if the next read still finds it bad it is re-opened,
  otherwise it is marked resolved (a machine MM refused is asked about again).
Discard means "stop trying this record": the entry stays, as discarded, and nothing is re-sent.
Every change is audited with the person's actor and `triggered_by = cli`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from erpsync.adapters.mm.mapper import payload_of, start_request
from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.tables import MachineSeen, QuarantineEntry, RunBinding, SyncAction, utcnow
from erpsync.domain.errors import ErpsyncError
from erpsync.domain.identity import idempotency_key
from erpsync.domain.lifecycle import ActionKind
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import BadRecord, JobOperationRun
from erpsync.domain.reconcile import reconcile


@dataclass(frozen=True)
class QuarantineView:
    id: int
    source: str
    record_key: str
    location: str
    error_class: str
    message: str
    status: str
    attempts: int
    first_seen_at: datetime
    last_seen_at: datetime


def list_entries(session: Session, *, status: str | None = "open", limit: int = 200) -> list[QuarantineView]:
    query = select(QuarantineEntry).order_by(QuarantineEntry.id).limit(limit)
    if status:
        query = query.where(QuarantineEntry.status == status)
    views = []
    for row in session.scalars(query):
        location = row.file_name or row.source
        if row.line_number is not None:
            location = f"{location}:{row.line_number}"
        if row.field:
            location = f"{location} ({row.field})"
        views.append(
            QuarantineView(
                row.id,
                row.source,
                row.record_key,
                location,
                row.error_class,
                row.message,
                row.status,
                row.attempts,
                row.first_seen_at,
                row.last_seen_at,
            )
        )
    return views


def _entry(session: Session, entry_id: int) -> QuarantineEntry:
    entry = session.get(QuarantineEntry, entry_id)
    if entry is None:
        raise ErpsyncError(f"no quarantine entry {entry_id}; see `erpsync quarantine list`")
    return entry


RunLookup = Callable[[str], JobOperationRun | BadRecord | None]
"""The ERP's current row for a run key (None: the ERP no longer has it)."""


def retry(
    session: Session,
    entry_id: int,
    *,
    lookup: RunLookup | None = None,
    mapper: MachineMapper | None = None,
) -> str:
    """Put one entry back on the normal path; returns what will happen, for the person.

    With `lookup` and `mapper`, a refused start is re-planned from the ERP's current row and the
    current machine mapping (a fix made in the ERP or in `machines.overrides` takes effect), not
    re-sent with the payload MM refused.
    """
    entry = _entry(session, entry_id)
    if entry.status in ("resolved", "discarded"):
        raise ErpsyncError(f"quarantine entry {entry_id} is {entry.status}; nothing to retry")
    now = utcnow()
    what = "the next read of the source re-checks this record"
    action = session.get(SyncAction, entry.action_id) if entry.action_id is not None else None
    keys = _audit_keys(entry, action)
    if entry.action_id is not None:
        if action is not None and action.status in ("quarantined", "failed_permanent"):
            if action.kind == "start_run" and action.run_key and lookup is not None and mapper is not None:
                what = _replan_start(session, action, lookup(action.run_key), mapper, now)
            else:
                _rearm(action)
                if action.kind == "start_run" and action.mm_run_id:
                    _restart_binding(session, action.mm_run_id, {}, now)
                    machine = _payload_machine(action.payload)
                    if machine:
                        _clear_rejection(session, machine)
                what = f"action {action.id} ({action.kind} {action.mm_run_id}) is re-armed for the next cycle"
        entry.status = "resolved"
    else:
        entry.status = "retry"
        machine = keys.get("erp_machine")
        if entry.error_class == "unknown_machine" and machine:
            # the person says MM knows the machine now (or the mapping changed): ask MM again
            mm_machine = mapper.map(machine) if mapper is not None else None
            _clear_rejection(session, mm_machine, erp_machine=machine)
            what += f" and MM is asked about machine {mm_machine or machine} again"
    entry.last_seen_at = now
    record_audit(
        session,
        action="quarantine_retry",
        outcome="succeeded",
        detail=f"entry {entry.id} ({entry.record_key}): {what}",
        **keys,
    )
    return what


def _replan_start(
    session: Session,
    action: SyncAction,
    current: JobOperationRun | BadRecord | None,
    mapper: MachineMapper,
    now: datetime,
) -> str:
    """Re-plan a refused start from the ERP's current row and mapping, and re-arm it."""
    label = f"{action.erp_job} op {action.erp_operation}"
    if isinstance(current, BadRecord):
        raise ErpsyncError(f"the ERP row of {label} is not valid now: {current.reason}; fix it, then retry")
    if current is None:
        return f"the ERP no longer has {label} ({action.run_key}); nothing to start"
    # the pure planner decides, as for a new run: the person's retry lifts MM's earlier refusal
    plan = reconcile(
        [current],
        {},
        source=action.source or "",
        mapper=mapper,
        snapshot_complete=False,
        vanished_policy="flag",
        now=now,
    )
    starts = [a for a in plan.actions if a.kind is ActionKind.START and a.run_key == action.run_key]
    if not starts:
        if plan.quarantined:
            raise ErpsyncError(f"{plan.quarantined[0].reason}; fix it, then retry")
        if plan.stats.skipped_ended:
            return f"the ERP ended {label}; nothing to start"
        return f"ERP machine {current.machine!r} of {label} is in machines.ignore; nothing to start"
    planned = replace(
        starts[0], ref=replace(starts[0].ref, mm_run_id=action.mm_run_id or starts[0].mm_run_id)
    )
    binding = session.scalars(select(RunBinding).where(RunBinding.mm_run_id == planned.mm_run_id)).first()
    generation = binding.key_generation if binding is not None else ""
    phase = "setup" if planned.in_setup else "production"
    key = idempotency_key(ActionKind.START, planned.mm_run_id, phase, generation=generation)
    taken = session.scalar(select(SyncAction.id).where(SyncAction.idempotency_key == key))
    if taken is None:
        action.idempotency_key = key
    action.payload = json.dumps(payload_of(start_request(planned)), sort_keys=True, default=str)
    action.erp_machine = planned.erp_machine[:64]
    action.reason = f"retry: {planned.reason}"[:255]
    _rearm(action)
    _restart_binding(
        session,
        planned.mm_run_id,
        {
            "erp_machine": planned.erp_machine[:64],
            "mm_machine_id": planned.mm_machine_id,
            "payload_hash": planned.payload_hash,
            "in_setup": planned.in_setup,
            "erp_start_at": current.start_at,
            "erp_end_at": current.end_at,
        },
        now,
    )
    _clear_rejection(session, planned.mm_machine_id)
    session.execute(
        update(MachineSeen)
        .where(MachineSeen.erp_machine == planned.erp_machine[:64])
        .values(mm_machine_id=planned.mm_machine_id, rejected_at=None, reject_reason=None)
        .execution_options(synchronize_session=False)
    )
    return (
        f"action {action.id} ({action.kind} {planned.mm_run_id}) is re-planned from the ERP's current "
        f"row and mapping (ERP machine {planned.erp_machine} -> MM machine {planned.mm_machine_id}, "
        f"{phase}) and re-armed for the next cycle"
    )


def _rearm(action: SyncAction) -> None:
    action.status = "pending"
    action.attempts = 0
    action.next_attempt_at = None
    action.settled_at = None


def _restart_binding(session: Session, mm_run_id: str, values: dict[str, object], now: datetime) -> None:
    session.execute(
        update(RunBinding)
        .where(RunBinding.mm_run_id == mm_run_id, RunBinding.status == "failed")
        .values(status="starting", updated_at=now, version=RunBinding.version + 1, **values)
        .execution_options(synchronize_session=False)
    )


def _clear_rejection(session: Session, mm_machine: str | None, *, erp_machine: str | None = None) -> None:
    """MM is asked about this machine again (a person fixed it in MM or in the mapping)."""
    match = [MachineSeen.mm_machine_id == mm_machine] if mm_machine else []
    if erp_machine:
        match.append(MachineSeen.erp_machine == erp_machine[:64])
    if match:
        session.execute(
            update(MachineSeen)
            .where(or_(*match))
            .values(rejected_at=None, reject_reason=None)
            .execution_options(synchronize_session=False)
        )


def _audit_keys(entry: QuarantineEntry, action: SyncAction | None) -> dict[str, Any]:
    """The job, operation, machine and MM run an entry is about, for its audit rows.

    Not `action_id`: that column names the action an audit row settles (one final row each).
    """
    if action is not None:
        return {
            "source": entry.source,
            "erp_job": action.erp_job,
            "erp_operation": action.erp_operation,
            "erp_machine": action.erp_machine,
            "mm_run_id": action.mm_run_id,
        }
    raw: dict[str, Any] = {}
    if entry.raw_payload and entry.raw_payload.startswith("{"):
        try:
            raw = json.loads(entry.raw_payload)
        except ValueError:
            raw = {}

    def text(key: str) -> str | None:
        value = raw.get(key)
        return str(value) if value not in (None, "") else None

    return {
        "source": entry.source,
        "erp_job": text("job"),
        "erp_operation": text("operation"),
        "erp_machine": text("machine"),
        "mm_run_id": text("mm_run_id"),
    }


def discard(session: Session, entry_id: int, reason: str | None = None) -> None:
    """A person decided this record needs no action: erpsync stops trying it (the row stays).

    A refused action that a retry had re-armed is not sent any more, and its run stays failed.
    """
    entry = _entry(session, entry_id)
    before = entry.status
    entry.status = "discarded"
    action = session.get(SyncAction, entry.action_id) if entry.action_id is not None else None
    if action is not None and action.status in ("pending", "failed_retryable"):
        action.status = "superseded"
        action.settled_at = utcnow()
        if action.kind == "start_run" and action.mm_run_id:
            session.execute(
                update(RunBinding)
                .where(RunBinding.mm_run_id == action.mm_run_id, RunBinding.status == "starting")
                .values(status="failed", updated_at=utcnow(), version=RunBinding.version + 1)
                .execution_options(synchronize_session=False)
            )
    record_audit(
        session,
        action="quarantine_discard",
        outcome="succeeded",
        before={"status": before},
        after={"status": "discarded"},
        detail=f"entry {entry.id} ({entry.record_key}) discarded" + (f": {reason}" if reason else ""),
        **_audit_keys(entry, action),
    )


def _payload_machine(payload: str | None) -> str | None:
    if not payload:
        return None
    value = json.loads(payload).get("erpMachineId")
    return str(value) if value else None


@dataclass(frozen=True)
class MachineView:
    erp_machine: str
    mm_machine_id: str | None
    runs_seen: int
    last_seen_at: datetime
    rejected_at: datetime | None
    reject_reason: str | None


def list_machines(session: Session) -> list[MachineView]:
    """ERP resources seen, their MM machine id, and which ones MM rejected."""
    return [
        MachineView(
            r.erp_machine, r.mm_machine_id, r.runs_seen, r.last_seen_at, r.rejected_at, r.reject_reason
        )
        for r in session.scalars(select(MachineSeen).order_by(MachineSeen.erp_machine))
    ]
