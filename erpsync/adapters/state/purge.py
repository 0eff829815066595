"""Retention's deletes: the audit trail past its append-only guard, and the history tables by id.

Implements `erpsync.service.ports.HistoryStore` (structurally). Which rows are past retention is
erpsync/service/retention.py's rule (a `RetentionRule`); the queries that find them are here.

The audit table is append-only (migration 0001): PostgreSQL refuses DELETE unless the transaction set
``erpsync.audit_purge = 'on'`` (SET LOCAL, gone at commit); MySQL/MariaDB refuse it unless the session
set ``@erpsync_audit_purge = 1``, which is reset right after the DELETE because pooled connections are
reused; SQLite has no guard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, delete, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from erpsync.adapters.state.tables import (
    AuditEntry,
    Cycle,
    Heartbeat,
    QuarantineEntry,
    RunBinding,
    SyncAction,
)


class _Rule(Protocol):
    """`erpsync.service.ports.RetentionRule`."""

    @property
    def cutoff(self) -> datetime: ...
    @property
    def finished_bindings(self) -> frozenset[str]: ...
    @property
    def final_actions(self) -> frozenset[str]: ...
    @property
    def open_bindings(self) -> frozenset[str]: ...
    @property
    def live_quarantine(self) -> frozenset[str]: ...
    @property
    def closed_quarantine(self) -> frozenset[str]: ...


def _old_bindings(rule: _Rule) -> Select[Any]:
    """Finished runs untouched since the cutoff, nothing in doubt: (status, updated_at) index."""
    b = RunBinding
    return select(b.id).where(
        b.status.in_(sorted(rule.finished_bindings)), b.updated_at < rule.cutoff, b.counts_in_doubt.is_(None)
    )


def _old_actions(rule: _Rule) -> Select[Any]:
    """Settled actions of runs MM no longer has open, not behind a live quarantine entry."""
    a, b, q = SyncAction, RunBinding, QuarantineEntry
    open_run = select(b.id).where(b.mm_run_id == a.mm_run_id, b.status.in_(sorted(rule.open_bindings)))
    quarantined = select(q.id).where(q.action_id == a.id, q.status.in_(sorted(rule.live_quarantine)))
    return select(a.id).where(
        a.settled_at < rule.cutoff,
        a.status.in_(sorted(rule.final_actions)),
        ~open_run.exists(),
        ~quarantined.exists(),
    )


def _old_cycles(rule: _Rule) -> Select[Any]:
    """Cycle rows before the cutoff, except each kind's newest (`status` and /readyz read it)."""
    newest = select(func.max(Cycle.id)).group_by(Cycle.kind)
    return select(Cycle.id).where(Cycle.started_at < rule.cutoff, Cycle.id.not_in(newest))


def _old_quarantine(rule: _Rule) -> Select[Any]:
    """Resolved or discarded entries whose record has not been seen since the cutoff."""
    q = QuarantineEntry
    return select(q.id).where(q.status.in_(sorted(rule.closed_quarantine)), q.last_seen_at < rule.cutoff)


_TABLES: dict[str, tuple[Any, Callable[[_Rule], Select[Any]]]] = {
    "erpsync_action": (SyncAction, _old_actions),
    "erpsync_run_binding": (RunBinding, _old_bindings),
    "erpsync_cycle": (Cycle, _old_cycles),
    "erpsync_quarantine": (QuarantineEntry, _old_quarantine),
}


class SqlHistory:
    def __init__(self, session: Session) -> None:
        self.session = session

    def count_audit(self, before: datetime) -> int:
        query = select(func.count()).select_from(AuditEntry).where(AuditEntry.occurred_at < before)
        return int(self.session.scalar(query) or 0)

    def audit_ids(self, before: datetime, limit: int) -> list[int]:
        query = select(AuditEntry.id).where(AuditEntry.occurred_at < before).order_by(AuditEntry.id)
        return list(self.session.scalars(query.limit(limit)))

    def delete_audit(self, ids: Sequence[int]) -> None:
        """DELETE past the append-only guard of this backend, then put the guard back."""
        session = self.session
        dialect = session.get_bind().dialect.name
        statement = (
            delete(AuditEntry).where(AuditEntry.id.in_(ids)).execution_options(synchronize_session=False)
        )
        if dialect == "postgresql":
            session.execute(text("SET LOCAL erpsync.audit_purge = 'on'"))
            session.execute(statement)
        elif dialect in ("mysql", "mariadb"):
            session.execute(text("SET @erpsync_audit_purge = 1"))
            try:
                session.execute(statement)
            finally:
                try:
                    session.execute(text("SET @erpsync_audit_purge = NULL"))
                except DBAPIError:
                    # The connection is broken; SQLAlchemy discards it, and the variable with it.
                    session.connection().invalidate()
        else:
            session.execute(statement)

    def count_expired(self, table: str, rule: _Rule) -> int:
        query = _TABLES[table][1](rule)
        return int(self.session.scalar(select(func.count()).select_from(query.subquery())) or 0)

    def expired_ids(self, table: str, rule: _Rule, limit: int) -> list[int]:
        model, old = _TABLES[table]
        return list(self.session.scalars(old(rule).order_by(model.id).limit(limit)))

    def delete(self, table: str, ids: Sequence[int]) -> None:
        model = _TABLES[table][0]
        if ids:
            self.session.execute(
                delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False)
            )

    def count_heartbeats(self, before: datetime) -> int:
        query = select(func.count()).select_from(Heartbeat).where(Heartbeat.beat_at < before)
        return int(self.session.scalar(query) or 0)

    def delete_heartbeats(self, before: datetime) -> int:
        result = self.session.execute(
            delete(Heartbeat).where(Heartbeat.beat_at < before).execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
