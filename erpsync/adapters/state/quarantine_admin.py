"""The quarantine and machine tables as `erpsync quarantine` and `erpsync machines` change them.

Implements `erpsync.service.ports.QuarantineAdmin` (structurally: adapters never import the
service layer). It only reads and writes rows; what a retry or a discard means is
erpsync/service/quarantine.py's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from erpsync.adapters.state.tables import MachineSeen, QuarantineEntry, RunBinding, SyncAction
from erpsync.domain.admin_rows import ActionRow, MachineRow, QuarantineRow
from erpsync.domain.lifecycle import MACHINE_MAX, REASON_MAX


def _entry_row(e: QuarantineEntry) -> QuarantineRow:
    return QuarantineRow(
        e.id,
        e.source,
        e.record_key,
        e.file_name,
        e.line_number,
        e.field,
        e.raw_payload,
        e.error_class,
        e.message,
        e.action_id,
        e.status,
        e.attempts,
        e.first_seen_at,
        e.last_seen_at,
    )


class SqlQuarantineAdmin:
    def __init__(self, session: Session) -> None:
        self.session = session

    def entries(self, status: str | None, limit: int) -> list[QuarantineRow]:
        query = select(QuarantineEntry).order_by(QuarantineEntry.id).limit(limit)
        if status:
            query = query.where(QuarantineEntry.status == status)
        return [_entry_row(e) for e in self.session.scalars(query)]

    def entry(self, entry_id: int) -> QuarantineRow | None:
        entry = self.session.get(QuarantineEntry, entry_id)
        return _entry_row(entry) if entry is not None else None

    def action(self, action_id: int) -> ActionRow | None:
        a = self.session.get(SyncAction, action_id)
        if a is None:
            return None
        payload = json.loads(a.payload) if a.payload else {}
        return ActionRow(
            a.id,
            a.kind,
            a.status,
            a.source,
            a.run_key,
            a.mm_run_id,
            a.erp_job,
            a.erp_operation,
            a.erp_machine,
            payload,
        )

    def set_status(self, entry_id: int, status: str, *, seen_at: datetime | None = None) -> None:
        entry = self.session.get(QuarantineEntry, entry_id)
        if entry is not None:
            entry.status = status
            if seen_at is not None:
                entry.last_seen_at = seen_at

    def rearm(
        self,
        action_id: int,
        *,
        idempotency_key: str | None = None,
        payload: Mapping[str, Any] | None = None,
        erp_machine: str | None = None,
        reason: str | None = None,
    ) -> None:
        action = self.session.get(SyncAction, action_id)
        if action is None:
            return
        if idempotency_key is not None:
            action.idempotency_key = idempotency_key
        if payload is not None:
            action.payload = json.dumps(dict(payload), sort_keys=True, default=str)
        if erp_machine is not None:
            action.erp_machine = erp_machine[:MACHINE_MAX]
        if reason is not None:
            action.reason = reason[:REASON_MAX]
        action.status = "pending"
        action.attempts = 0
        action.next_attempt_at = None
        action.settled_at = None

    def supersede(self, action_id: int, now: datetime) -> None:
        action = self.session.get(SyncAction, action_id)
        if action is not None:
            action.status = "superseded"
            action.settled_at = now

    def key_generation(self, mm_run_id: str) -> str | None:
        query = select(RunBinding.key_generation).where(RunBinding.mm_run_id == mm_run_id)
        return self.session.execute(query).scalars().first()

    def key_taken(self, idempotency_key: str) -> bool:
        query = select(SyncAction.id).where(SyncAction.idempotency_key == idempotency_key)
        return self.session.scalar(query) is not None

    def move_binding(
        self,
        mm_run_id: str,
        *,
        from_status: str,
        to_status: str,
        now: datetime,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        self.session.execute(
            update(RunBinding)
            .where(RunBinding.mm_run_id == mm_run_id, RunBinding.status == from_status)
            .values(status=to_status, updated_at=now, version=RunBinding.version + 1, **(values or {}))
            .execution_options(synchronize_session=False)
        )

    def clear_rejection(self, mm_machine: str | None, erp_machine: str | None = None) -> None:
        match = [MachineSeen.mm_machine_id == mm_machine] if mm_machine else []
        if erp_machine:
            match.append(MachineSeen.erp_machine == erp_machine[:MACHINE_MAX])
        if match:
            self.session.execute(
                update(MachineSeen)
                .where(or_(*match))
                .values(rejected_at=None, reject_reason=None)
                .execution_options(synchronize_session=False)
            )

    def remap_machine(self, erp_machine: str, mm_machine_id: str | None) -> None:
        self.session.execute(
            update(MachineSeen)
            .where(MachineSeen.erp_machine == erp_machine[:MACHINE_MAX])
            .values(mm_machine_id=mm_machine_id, rejected_at=None, reject_reason=None)
            .execution_options(synchronize_session=False)
        )

    def machines(self) -> list[MachineRow]:
        rows = self.session.scalars(select(MachineSeen).order_by(MachineSeen.erp_machine))
        return [
            MachineRow(
                r.erp_machine, r.mm_machine_id, r.runs_seen, r.last_seen_at, r.rejected_at, r.reject_reason
            )
            for r in rows
        ]
