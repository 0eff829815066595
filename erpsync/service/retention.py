"""Audit retention: remove audit rows older than the retention period, in small audited batches.

The audit table is append-only (migration 0001): PostgreSQL refuses DELETE unless the transaction set
``erpsync.audit_purge = 'on'`` (SET LOCAL, gone at commit); MySQL/MariaDB refuse it unless the session
set ``@erpsync_audit_purge = 1``, which is reset right after the DELETE because pooled connections are
reused; SQLite has no guard. Each batch is one transaction that deletes the rows and writes the
``audit_purge`` row explaining it, so the trail never disagrees with what is left.

Small batches keep locks short beside a running sync; the scheduled job passes its stop flag (checked
between batches) and its fencing check (run first inside every batch's transaction).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry

PURGE_ACTION = "audit_purge"


@dataclass(frozen=True)
class PurgeResult:
    """What a purge did (or, for a dry run, would do)."""

    cutoff: datetime
    deleted: int
    batches: int
    dry_run: bool
    complete: bool  # False when stopped before every row older than the cutoff was gone


def audit_cutoff(retention_days: int, now: datetime | None = None) -> datetime:
    """Rows that occurred before this instant are past retention."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    return (now or datetime.now(UTC)) - timedelta(days=retention_days)


def purge_audit(
    store: StateStore,
    *,
    retention_days: int,
    batch_size: int,
    now: datetime | None = None,
    dry_run: bool = False,
    stop: threading.Event | None = None,
    check: Callable[[Session], None] | None = None,
    fencing_token: int | None = None,
) -> PurgeResult:
    """Delete audit rows older than `retention_days`, `batch_size` rows per transaction."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = audit_cutoff(retention_days, now)
    old = AuditEntry.occurred_at < cutoff
    if dry_run:
        with store.session() as session:
            count = session.scalar(select(func.count()).select_from(AuditEntry).where(old)) or 0
        return PurgeResult(cutoff, count, 0, dry_run=True, complete=True)
    deleted = batches = 0
    while True:
        if stop is not None and stop.is_set():
            return PurgeResult(cutoff, deleted, batches, dry_run=False, complete=False)
        with store.session() as session:
            if check is not None:
                check(session)
            ids = list(
                session.scalars(select(AuditEntry.id).where(old).order_by(AuditEntry.id).limit(batch_size))
            )
            if not ids:
                break
            _delete_audit_rows(session, ids)
            record_audit(
                session,
                action=PURGE_ACTION,
                outcome="succeeded",
                fencing_token=fencing_token,
                detail=json.dumps(
                    {
                        "deleted": len(ids),
                        "cutoff": cutoff.isoformat(),
                        "retention_days": retention_days,
                        "first_id": ids[0],
                        "last_id": ids[-1],
                    }
                ),
            )
        deleted += len(ids)
        batches += 1
        if len(ids) < batch_size:
            break
    return PurgeResult(cutoff, deleted, batches, dry_run=False, complete=True)


def _delete_audit_rows(session: Session, ids: Sequence[int]) -> None:
    """DELETE past the append-only guard of this backend, then put the guard back."""
    dialect = session.get_bind().dialect.name
    statement = delete(AuditEntry).where(AuditEntry.id.in_(ids)).execution_options(synchronize_session=False)
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
