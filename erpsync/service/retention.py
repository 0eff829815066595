"""Retention: audit rows and every other table that grows with time, removed in small batches.

`purge_audit` handles the append-only audit trail (below); `purge_history` the rest: finished run
bindings, settled actions, cycles, closed quarantine entries, heartbeats of instances long gone.

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
from typing import Any

from sqlalchemy import Select, delete, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import (
    AuditEntry,
    Cycle,
    Heartbeat,
    QuarantineEntry,
    RunBinding,
    SyncAction,
)

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


# --- history retention: everything else that grows with time ------------------------------------

HISTORY_PURGE_ACTION = "history_purge"
FINISHED_BINDING_STATUSES = ("stopped", "failed")
FINAL_ACTION_STATUSES = ("succeeded", "failed_permanent", "quarantined", "superseded")
CLOSED_QUARANTINE_STATUSES = ("resolved", "discarded")
# bindings MM may still have open: their actions stay (journal keys, recovery), see journal.py
_OPEN_BINDING_STATUSES = ("starting", "running", "stopping", "vanished")
_LIVE_QUARANTINE_STATUSES = ("open", "retry")


@dataclass(frozen=True)
class HistoryPurgeResult:
    """Rows removed (or, for a dry run, that would be) per table, and whether the purge finished."""

    cutoff: datetime
    deleted: dict[str, int]
    dry_run: bool
    complete: bool

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def _old_bindings(cutoff: datetime) -> Select[Any]:
    """Finished runs untouched since the cutoff, nothing in doubt: (status, updated_at) index."""
    b = RunBinding
    return select(b.id).where(
        b.status.in_(FINISHED_BINDING_STATUSES), b.updated_at < cutoff, b.counts_in_doubt.is_(None)
    )


def _old_actions(cutoff: datetime) -> Select[Any]:
    """Settled actions of runs MM no longer has open, not behind a live quarantine entry."""
    a, b, q = SyncAction, RunBinding, QuarantineEntry
    open_run = select(b.id).where(b.mm_run_id == a.mm_run_id, b.status.in_(_OPEN_BINDING_STATUSES))
    quarantined = select(q.id).where(q.action_id == a.id, q.status.in_(_LIVE_QUARANTINE_STATUSES))
    return select(a.id).where(
        a.settled_at < cutoff,
        a.status.in_(FINAL_ACTION_STATUSES),
        ~open_run.exists(),
        ~quarantined.exists(),
    )


def _old_cycles(cutoff: datetime) -> Select[Any]:
    """Cycle rows before the cutoff, except each kind's newest (`status` and /readyz read it)."""
    newest = select(func.max(Cycle.id)).group_by(Cycle.kind)
    return select(Cycle.id).where(Cycle.started_at < cutoff, Cycle.id.not_in(newest))


def _old_quarantine(cutoff: datetime) -> Select[Any]:
    """Resolved or discarded entries whose record has not been seen since the cutoff."""
    q = QuarantineEntry
    return select(q.id).where(q.status.in_(CLOSED_QUARANTINE_STATUSES), q.last_seen_at < cutoff)


_HISTORY: tuple[tuple[str, Any, Callable[[datetime], Select[Any]]], ...] = (
    ("erpsync_action", SyncAction, _old_actions),
    ("erpsync_run_binding", RunBinding, _old_bindings),
    ("erpsync_cycle", Cycle, _old_cycles),
    ("erpsync_quarantine", QuarantineEntry, _old_quarantine),
)


def purge_history(
    store: StateStore,
    *,
    retention_days: int,
    batch_size: int,
    now: datetime | None = None,
    dry_run: bool = False,
    stop: threading.Event | None = None,
    check: Callable[[Session], None] | None = None,
    fencing_token: int | None = None,
) -> HistoryPurgeResult:
    """Delete finished history older than `retention_days`, `batch_size` rows per transaction.

    Finished run bindings (stopped/failed, nothing in doubt), settled actions of runs MM no longer
    has open, cycle rows (each kind's newest kept), resolved/discarded quarantine entries not seen
    since, and heartbeat rows of instances silent since the cutoff. The audit trail has its own
    retention (`purge_audit`). Each table's deletions end with one `history_purge` audit row; a purge
    that finds nothing writes nothing.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = audit_cutoff(retention_days, now)
    tables = [*_HISTORY, ("erpsync_heartbeat", Heartbeat, None)]
    deleted: dict[str, int] = {}
    for name, table, old in tables:
        count = _purge_table(store, name, table, old, cutoff, batch_size, dry_run, stop, check)
        if count is None:
            return HistoryPurgeResult(cutoff, deleted, dry_run, complete=False)
        deleted[name] = count
    if not dry_run and any(deleted.values()):
        with store.session() as session:
            if check is not None:
                check(session)
            record_audit(
                session,
                action=HISTORY_PURGE_ACTION,
                outcome="succeeded",
                fencing_token=fencing_token,
                detail=json.dumps(
                    {"deleted": deleted, "cutoff": cutoff.isoformat(), "retention_days": retention_days}
                ),
            )
    return HistoryPurgeResult(cutoff, deleted, dry_run, complete=True)


def _purge_table(
    store: StateStore,
    name: str,
    table: Any,
    old: Callable[[datetime], Select[Any]] | None,
    cutoff: datetime,
    batch_size: int,
    dry_run: bool,
    stop: threading.Event | None,
    check: Callable[[Session], None] | None,
) -> int | None:
    """Rows of one table past the cutoff, deleted batch by batch; None when stopped part way."""
    if old is None:  # heartbeats: one row per instance name, keyed by name
        where = Heartbeat.beat_at < cutoff
        with store.session() as session:
            if dry_run:
                return session.scalar(select(func.count()).select_from(Heartbeat).where(where)) or 0
            if check is not None:
                check(session)
            result = session.execute(
                delete(Heartbeat).where(where).execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)
    query = old(cutoff)
    if dry_run:
        with store.session() as session:
            return session.scalar(select(func.count()).select_from(query.subquery())) or 0
    deleted = 0
    while True:
        if stop is not None and stop.is_set():
            return None
        with store.session() as session:
            if check is not None:
                check(session)
            ids = list(session.scalars(query.order_by(table.id).limit(batch_size)))
            if ids:
                session.execute(
                    delete(table).where(table.id.in_(ids)).execution_options(synchronize_session=False)
                )
        deleted += len(ids)
        if len(ids) < batch_size:
            return deleted
