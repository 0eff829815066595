"""What the read-only commands (`status`, `audit`) read, over one Core connection.

Implements `erpsync.service.ports.StatusReader` (structurally) with the lightweight tables of
reads.py: no ORM import, so these commands answer at once. What the report says is
erpsync/service/status.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Unpack

from sqlalchemy import Connection, TableClause, func, select

from erpsync.adapters.state.reads import (
    AuditFilter,
    audit_query,
    cycle,
    leader_lease,
    quarantine,
    run_binding,
    sync_action,
)


@dataclass(slots=True)
class CycleRow:
    kind: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None


@dataclass(slots=True)
class LeaseRow:
    holder: str | None
    expires_at: datetime | None
    fencing_token: int | None


class CoreStateReader:
    """The state database, read with SQLAlchemy Core on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _by_status(self, table: TableClause) -> dict[str, int]:
        status = table.c.status
        return {s: n for s, n in self.conn.execute(select(status, func.count()).group_by(status))}

    def binding_counts(self) -> dict[str, int]:
        return self._by_status(run_binding)

    def action_counts(self) -> dict[str, int]:
        return self._by_status(sync_action)

    def quarantine_count(self, status: str) -> int:
        query = select(func.count()).select_from(quarantine).where(quarantine.c.status == status)
        return int(self.conn.scalar(query) or 0)

    def cycle_kinds(self) -> list[str]:
        return list(self.conn.scalars(select(cycle.c.kind).distinct()).all())

    def last_cycle(self, kind: str) -> CycleRow:
        last = self.conn.execute(
            select(cycle.c.started_at, cycle.c.finished_at, cycle.c.outcome)
            .where(cycle.c.kind == kind)
            .order_by(cycle.c.id.desc())
            .limit(1)
        ).one()
        return CycleRow(kind, last.started_at, last.finished_at, last.outcome)

    def last_finished(self, kind: str, outcome: str) -> datetime | None:
        query = select(func.max(cycle.c.finished_at)).where(cycle.c.kind == kind, cycle.c.outcome == outcome)
        value: datetime | None = self.conn.scalar(query)
        return value

    def lease(self) -> LeaseRow | None:
        lease = self.conn.execute(
            select(leader_lease.c.holder, leader_lease.c.expires_at, leader_lease.c.fencing_token).limit(1)
        ).first()
        return LeaseRow(lease.holder, lease.expires_at, lease.fencing_token) if lease is not None else None

    def audit(self, **where: Unpack[AuditFilter]) -> list[dict[str, Any]]:
        """Newest-first audit rows matching every filter given (`reads.audit_query`), by column."""
        query = audit_query(**where)
        return [dict(row._mapping) for row in self.conn.execute(query)]
