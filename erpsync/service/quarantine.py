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
from datetime import UTC, datetime
from typing import Any

from erpsync.adapters.mm.mapper import payload_of, start_request
from erpsync.domain.admin_rows import ActionRow, MachineRow, QuarantineRow
from erpsync.domain.errors import ErpsyncError
from erpsync.domain.identity import idempotency_key
from erpsync.domain.lifecycle import MACHINE_MAX, ActionKind, BindingStatus
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import BadRecord, JobOperationRun
from erpsync.domain.reconcile import reconcile
from erpsync.service.ports import AdminUnitOfWork, AuditRecord

# an action a retry puts back on the normal path: MM refused it, or erpsync gave up on it
_RETRIABLE_ACTIONS = ("quarantined", "failed_permanent")
# a re-armed action a discard stops: not settled yet
_UNSENT_ACTIONS = ("pending", "failed_retryable")


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


def list_entries(
    uow: AdminUnitOfWork, *, status: str | None = "open", limit: int = 200
) -> list[QuarantineView]:
    views = []
    for row in uow.quarantine_admin.entries(status, limit):
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


def _entry(uow: AdminUnitOfWork, entry_id: int) -> QuarantineRow:
    entry = uow.quarantine_admin.entry(entry_id)
    if entry is None:
        raise ErpsyncError(f"no quarantine entry {entry_id}; see `erpsync quarantine list`")
    return entry


RunLookup = Callable[[str], JobOperationRun | BadRecord | None]
"""The ERP's current row for a run key (None: the ERP no longer has it)."""


def retry(
    uow: AdminUnitOfWork,
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
    admin = uow.quarantine_admin
    entry = _entry(uow, entry_id)
    if entry.status in ("resolved", "discarded"):
        raise ErpsyncError(f"quarantine entry {entry_id} is {entry.status}; nothing to retry")
    now = datetime.now(UTC)
    what = "the next read of the source re-checks this record"
    action = admin.action(entry.action_id) if entry.action_id is not None else None
    keys = _audit_keys(entry, action)
    if entry.action_id is not None:
        if action is not None and action.status in _RETRIABLE_ACTIONS:
            if (
                action.kind == ActionKind.START
                and action.run_key
                and lookup is not None
                and mapper is not None
            ):
                what = _replan_start(uow, action, lookup(action.run_key), mapper, now)
            else:
                admin.rearm(action.id)
                if action.kind == ActionKind.START and action.mm_run_id:
                    _restart_binding(uow, action.mm_run_id, {}, now)
                    machine = _payload_machine(action.payload)
                    if machine:
                        admin.clear_rejection(machine)
                what = f"action {action.id} ({action.kind} {action.mm_run_id}) is re-armed for the next cycle"
        status = "resolved"
    else:
        status = "retry"
        machine = keys.get("erp_machine")
        if entry.error_class == "unknown_machine" and machine:
            # the person says MM knows the machine now (or the mapping changed): ask MM again
            mm_machine = mapper.map(machine) if mapper is not None else None
            admin.clear_rejection(mm_machine, erp_machine=machine)
            what += f" and MM is asked about machine {mm_machine or machine} again"
    admin.set_status(entry.id, status, seen_at=now)
    uow.audit.record(
        AuditRecord(
            action="quarantine_retry",
            outcome="succeeded",
            detail=f"entry {entry.id} ({entry.record_key}): {what}",
            **keys,
        )
    )
    return what


def _replan_start(
    uow: AdminUnitOfWork,
    action: ActionRow,
    current: JobOperationRun | BadRecord | None,
    mapper: MachineMapper,
    now: datetime,
) -> str:
    """Re-plan a refused start from the ERP's current row and mapping, and re-arm it."""
    admin = uow.quarantine_admin
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
    generation = admin.key_generation(planned.mm_run_id) or ""
    phase = "setup" if planned.in_setup else "production"
    key = idempotency_key(ActionKind.START, planned.mm_run_id, phase, generation=generation)
    admin.rearm(
        action.id,
        idempotency_key=None if admin.key_taken(key) else key,
        payload=payload_of(start_request(planned)),
        erp_machine=planned.erp_machine,
        reason=f"retry: {planned.reason}",
    )
    _restart_binding(
        uow,
        planned.mm_run_id,
        {
            "erp_machine": planned.erp_machine[:MACHINE_MAX],
            "mm_machine_id": planned.mm_machine_id,
            "payload_hash": planned.payload_hash,
            "in_setup": planned.in_setup,
            "erp_start_at": current.start_at,
            "erp_end_at": current.end_at,
        },
        now,
    )
    admin.clear_rejection(planned.mm_machine_id)
    admin.remap_machine(planned.erp_machine, planned.mm_machine_id)
    return (
        f"action {action.id} ({action.kind} {planned.mm_run_id}) is re-planned from the ERP's current "
        f"row and mapping (ERP machine {planned.erp_machine} -> MM machine {planned.mm_machine_id}, "
        f"{phase}) and re-armed for the next cycle"
    )


def _restart_binding(uow: AdminUnitOfWork, mm_run_id: str, values: dict[str, object], now: datetime) -> None:
    """A start MM refused made its run failed; re-armed, the run is starting again."""
    uow.quarantine_admin.move_binding(
        mm_run_id, from_status=BindingStatus.FAILED, to_status=BindingStatus.STARTING, now=now, values=values
    )


def _audit_keys(entry: QuarantineRow, action: ActionRow | None) -> dict[str, Any]:
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


def discard(uow: AdminUnitOfWork, entry_id: int, reason: str | None = None) -> None:
    """A person decided this record needs no action: erpsync stops trying it (the row stays).

    A refused action that a retry had re-armed is not sent any more, and its run stays failed.
    """
    admin = uow.quarantine_admin
    entry = _entry(uow, entry_id)
    admin.set_status(entry.id, "discarded")
    action = admin.action(entry.action_id) if entry.action_id is not None else None
    if action is not None and action.status in _UNSENT_ACTIONS:
        now = datetime.now(UTC)
        admin.supersede(action.id, now)
        if action.kind == ActionKind.START and action.mm_run_id:
            admin.move_binding(
                action.mm_run_id, from_status=BindingStatus.STARTING, to_status=BindingStatus.FAILED, now=now
            )
    uow.audit.record(
        AuditRecord(
            action="quarantine_discard",
            outcome="succeeded",
            before={"status": entry.status},
            after={"status": "discarded"},
            detail=f"entry {entry.id} ({entry.record_key}) discarded" + (f": {reason}" if reason else ""),
            **_audit_keys(entry, action),
        )
    )


def _payload_machine(payload: dict[str, Any]) -> str | None:
    value = payload.get("erpMachineId")
    return str(value) if value else None


def list_machines(uow: AdminUnitOfWork) -> list[MachineRow]:
    """ERP resources seen, their MM machine id, and which ones MM rejected."""
    return list(uow.quarantine_admin.machines())
