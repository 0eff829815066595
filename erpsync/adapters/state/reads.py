"""The state tables as the read-only commands (`status`, `audit`) see them, in SQLAlchemy Core.

`erpsync status` and `erpsync audit` should answer at once; the ORM classes in tables.py cost
SQLAlchemy's ORM on import (about a sixth of such a command's start-up). These lightweight
`table()` clauses name the same tables and columns, typed where the type changes what a row holds
(`UTCDateTime`: aware UTC datetimes); tests/unit/test_state_reads.py holds them to tables.py.
Writers use tables.py and the ORM.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict, Unpack

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


class AuditFilter(TypedDict, total=False):
    """The filters of `erpsync audit`, each optional; rows must match every one given."""

    job: str | None
    machine: str | None
    run: str | None  # MM run id
    outcome: str | None
    action: str | None
    since: datetime | None
    limit: int  # newest rows kept (default 100)


def audit_query(**where: Unpack[AuditFilter]) -> Select[tuple[object, ...]]:
    """Newest-first audit rows (every column of `audit`) matching every filter given."""
    c = audit.c
    query = select(audit)
    for filtered, name in (
        (c.erp_job, "job"),
        (c.erp_machine, "machine"),
        (c.mm_run_id, "run"),
        (c.outcome, "outcome"),
        (c.action, "action"),
    ):
        value = where.get(name)
        if value:
            query = query.where(filtered == value)
    since = where.get("since")
    if since:
        query = query.where(c.occurred_at >= since)
    return query.order_by(c.id.desc()).limit(where.get("limit", 100))
