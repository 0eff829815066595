"""The state tables as the read-only commands (`status`, `audit`) see them, in SQLAlchemy Core.

`erpsync status` and `erpsync audit` should answer at once; the ORM classes in tables.py cost
SQLAlchemy's ORM on import (about a sixth of such a command's start-up). These lightweight
`table()` clauses name the same tables and columns, typed where the type changes what a row holds
(`UTCDateTime`: aware UTC datetimes); tests/unit/test_state_reads.py holds them to tables.py.
Writers use tables.py and the ORM.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, Select, String, Text, column, select, table

from erpsync.adapters.state.types import UTCDateTime

run_binding = table("erpsync_run_binding", column("status", String))
sync_action = table("erpsync_action", column("status", String))
quarantine = table("erpsync_quarantine", column("status", String))
cycle = table(
    "erpsync_cycle",
    column("id", Integer),
    column("kind", String),
    column("started_at", UTCDateTime),
    column("finished_at", UTCDateTime),
    column("outcome", String),
)
leader_lease = table(
    "erpsync_leader",
    column("holder", String),
    column("fencing_token", Integer),
    column("expires_at", UTCDateTime),
)
audit = table(
    "erpsync_audit",
    column("id", Integer),
    column("occurred_at", UTCDateTime),
    column("triggered_by", String),
    column("action", String),
    column("outcome", String),
    column("erp_job", String),
    column("erp_operation", String),
    column("erp_machine", String),
    column("mm_run_id", String),
    column("http_status", Integer),
    column("error_class", String),
    column("error_message", Text),
    column("before_json", Text),
    column("after_json", Text),
    column("changed_fields", String),
    column("detail", Text),
    column("source", String),
    column("correlation_id", String),
)


def audit_query(
    *,
    job: str | None = None,
    machine: str | None = None,
    run: str | None = None,
    outcome: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> Select[tuple[object, ...]]:
    """Newest-first audit rows (every column of `audit`) matching every filter given."""
    c = audit.c
    query = select(audit)
    if job:
        query = query.where(c.erp_job == job)
    if machine:
        query = query.where(c.erp_machine == machine)
    if run:
        query = query.where(c.mm_run_id == run)
    if outcome:
        query = query.where(c.outcome == outcome)
    if action:
        query = query.where(c.action == action)
    if since:
        query = query.where(c.occurred_at >= since)
    return query.order_by(c.id.desc()).limit(limit)
