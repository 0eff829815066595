"""`erpsync quarantine list | retry | discard`: the dead-letter queue as a SQL table, operated.

Retry puts the record back on the normal path instead of inventing a side path:
- a refused MM action (it has an action id) is re-armed as `pending` in the journal, so the next
  cycle settles it exactly like a crash leftover: read MM first, then send if MM lacks it; a
  machine MM rejected is un-rejected so runs on it are planned again;
- an ERP row or CSV line is marked `retry`: if the next read still finds it bad it is re-opened,
  otherwise it is marked resolved.
Every change is audited with the person's actor and `triggered_by = cli`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.tables import MachineSeen, QuarantineEntry, RunBinding, SyncAction, utcnow
from erpsync.domain.errors import ErpsyncError


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


def retry(session: Session, entry_id: int) -> str:
    """Put one entry back on the normal path; returns what will happen, for the person."""
    entry = _entry(session, entry_id)
    if entry.status in ("resolved", "discarded"):
        raise ErpsyncError(f"quarantine entry {entry_id} is {entry.status}; nothing to retry")
    now = utcnow()
    what = "the next read of the source re-checks this record"
    if entry.action_id is not None:
        action = session.get(SyncAction, entry.action_id)
        if action is not None and action.status in ("quarantined", "failed_permanent"):
            action.status = "pending"
            action.attempts = 0
            action.next_attempt_at = None
            action.settled_at = None
            if action.kind == "start_run" and action.mm_run_id:
                session.execute(
                    update(RunBinding)
                    .where(RunBinding.mm_run_id == action.mm_run_id, RunBinding.status == "failed")
                    .values(status="starting", updated_at=now)
                    .execution_options(synchronize_session=False)
                )
                machine = _payload_machine(action.payload)
                if machine:
                    session.execute(
                        update(MachineSeen)
                        .where(MachineSeen.mm_machine_id == machine)
                        .values(rejected_at=None, reject_reason=None)
                        .execution_options(synchronize_session=False)
                    )
            what = f"action {action.id} ({action.kind} {action.mm_run_id}) is re-armed for the next cycle"
        entry.status = "resolved"
    else:
        entry.status = "retry"
    entry.last_seen_at = now
    record_audit(
        session,
        action="quarantine_retry",
        outcome="succeeded",
        source=entry.source,
        detail=f"entry {entry.id} ({entry.record_key}): {what}",
    )
    return what


def discard(session: Session, entry_id: int, reason: str | None = None) -> None:
    """A person decided this record needs no action; it stays in the table as discarded."""
    entry = _entry(session, entry_id)
    before = entry.status
    entry.status = "discarded"
    record_audit(
        session,
        action="quarantine_discard",
        outcome="succeeded",
        source=entry.source,
        before={"status": before},
        after={"status": "discarded"},
        detail=f"entry {entry.id} ({entry.record_key}) discarded" + (f": {reason}" if reason else ""),
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
