"""Retention: audit rows and every other table that grows with time, removed in small batches.

`purge_audit` handles the append-only audit trail; `purge_history` the rest: finished run bindings,
settled actions, cycles, closed quarantine entries, heartbeats of instances long gone. The rules of
what is past retention are here (a `RetentionRule`); the deletes, and the audit table's append-only
guard they get past, are the `HistoryStore`'s (adapters/state/purge.py).

Each audit batch is one transaction that deletes the rows and writes the ``audit_purge`` row
explaining it, so the trail never disagrees with what is left. Small batches keep locks short beside
a running sync; the scheduled job passes its stop flag (checked between batches) and its fence
(checked first inside every batch's transaction).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from erpsync.domain.lifecycle import FINAL_ACTION_STATUSES as _FINAL
from erpsync.domain.lifecycle import RECONCILE_BINDING_STATUSES, BindingStatus
from erpsync.service.ports import (
    HISTORY_TABLES,
    AdminUnitOfWorkFactory,
    AuditRecord,
    Fence,
    RetentionRule,
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


@dataclass(frozen=True)
class PurgeRequest:
    """How one purge runs: the audit and the history purge take the same knobs (their own days)."""

    retention_days: int
    batch_size: int
    now: datetime | None = None
    dry_run: bool = False
    stop: threading.Event | None = None  # checked between batches
    fence: Fence | None = None  # checked first inside every batch's transaction

    def cutoff(self) -> datetime:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        return audit_cutoff(self.retention_days, self.now)

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def audit(self, action: str, detail: dict[str, Any]) -> AuditRecord:
        """The audit row that explains a purge's deletions."""
        return AuditRecord(
            action=action,
            outcome="succeeded",
            fencing_token=self.fence.token if self.fence is not None else None,
            detail=json.dumps(detail),
        )


def purge_audit(uow: AdminUnitOfWorkFactory, request: PurgeRequest) -> PurgeResult:
    """Delete audit rows older than `retention_days`, `batch_size` rows per transaction."""
    cutoff = request.cutoff()
    if request.dry_run:
        with uow() as work:
            count = work.history.count_audit(cutoff)
        return PurgeResult(cutoff, count, 0, dry_run=True, complete=True)
    deleted = batches = 0
    while True:
        if request.stopped():
            return PurgeResult(cutoff, deleted, batches, dry_run=False, complete=False)
        with uow(request.fence) as work:
            ids = work.history.audit_ids(cutoff, request.batch_size)
            if not ids:
                break
            work.history.delete_audit(ids)
            detail = {
                "deleted": len(ids),
                "cutoff": cutoff.isoformat(),
                "retention_days": request.retention_days,
                "first_id": ids[0],
                "last_id": ids[-1],
            }
            work.audit.record(request.audit(PURGE_ACTION, detail))
        deleted += len(ids)
        batches += 1
        if len(ids) < request.batch_size:
            break
    return PurgeResult(cutoff, deleted, batches, dry_run=False, complete=True)


# --- history retention: everything else that grows with time ------------------------------------

HISTORY_PURGE_ACTION = "history_purge"
FINISHED_BINDING_STATUSES = frozenset({BindingStatus.STOPPED, BindingStatus.FAILED})
# a superseded action (a discarded retry) is settled too
FINAL_ACTION_STATUSES = frozenset({*_FINAL, "superseded"})
CLOSED_QUARANTINE_STATUSES = frozenset({"resolved", "discarded"})
# the actions of runs MM may still have open stay (journal keys, recovery), see journal.py
_LIVE_QUARANTINE_STATUSES = frozenset({"open", "retry"})


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


def retention_rule(cutoff: datetime) -> RetentionRule:
    """Finished history before `cutoff`; what is open, in doubt or quarantined stays."""
    return RetentionRule(
        cutoff=cutoff,
        finished_bindings=frozenset(map(str, FINISHED_BINDING_STATUSES)),
        final_actions=frozenset(map(str, FINAL_ACTION_STATUSES)),
        open_bindings=frozenset(map(str, RECONCILE_BINDING_STATUSES)),
        live_quarantine=_LIVE_QUARANTINE_STATUSES,
        closed_quarantine=CLOSED_QUARANTINE_STATUSES,
    )


def purge_history(uow: AdminUnitOfWorkFactory, request: PurgeRequest) -> HistoryPurgeResult:
    """Delete finished history older than `retention_days`, `batch_size` rows per transaction.

    Finished run bindings (stopped/failed, nothing in doubt), settled actions of runs MM no longer
    has open, cycle rows (each kind's newest kept), resolved/discarded quarantine entries not seen
    since, and heartbeat rows of instances silent since the cutoff. The audit trail has its own
    retention (`purge_audit`). Each table's deletions end with one `history_purge` audit row; a purge
    that finds nothing writes nothing.
    """
    cutoff = request.cutoff()
    rule = retention_rule(cutoff)
    dry_run, fence = request.dry_run, request.fence
    deleted: dict[str, int] = {}
    for table in HISTORY_TABLES:
        count = _purge_table(uow, table, rule, request)
        if count is None:
            return HistoryPurgeResult(cutoff, deleted, dry_run, complete=False)
        deleted[table] = count
    with uow(None if dry_run else fence) as work:
        if dry_run:
            deleted["erpsync_heartbeat"] = work.history.count_heartbeats(cutoff)
        else:  # one row per instance name: deleted at once
            deleted["erpsync_heartbeat"] = work.history.delete_heartbeats(cutoff)
    if not dry_run and any(deleted.values()):
        with uow(fence) as work:
            detail = {
                "deleted": deleted,
                "cutoff": cutoff.isoformat(),
                "retention_days": request.retention_days,
            }
            work.audit.record(request.audit(HISTORY_PURGE_ACTION, detail))
    return HistoryPurgeResult(cutoff, deleted, dry_run, complete=True)


def _purge_table(
    uow: AdminUnitOfWorkFactory, table: str, rule: RetentionRule, request: PurgeRequest
) -> int | None:
    """Rows of one table past the cutoff, deleted batch by batch; None when stopped part way."""
    if request.dry_run:
        with uow() as work:
            return work.history.count_expired(table, rule)
    deleted = 0
    while True:
        if request.stopped():
            return None
        with uow(request.fence) as work:
            ids = work.history.expired_ids(table, rule, request.batch_size)
            work.history.delete(table, ids)
        deleted += len(ids)
        if len(ids) < request.batch_size:
            return deleted
