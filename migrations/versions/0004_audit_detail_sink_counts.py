"""The audit views show the "why" (`detail`, `changed_fields`); last-written counts are kept per sink.

- `v_erpsync_recent_activity` and `v_erpsync_failures` gain `changed_fields` and `detail`: the
  reason of each row ("clocked in on 30002/1 op 10 (production)") is where IT looks first.
- `erpsync_sink_counts`: what erpsync last wrote (and set out to write: `counts_in_doubt`) per
  run AND per sink, so switching `writeback.sink` gives the new sink the current counts instead of
  comparing it with what another sink received. The binding's `last_*` columns stay as the counts
  last written by any sink (for the views); rows written before this revision have no per-sink row
  and are read from the binding by the first sink that writes the run again.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from erpsync.adapters.state.types import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECENT_DAYS = 7
OLD_AUDIT_COLUMNS = (
    "id, occurred_at, triggered_by, actor, action, outcome, source, erp_job, erp_operation, erp_machine, "
    "mm_run_id, http_status, error_class, error_message, before_json, after_json, correlation_id"
)
AUDIT_COLUMNS = OLD_AUDIT_COLUMNS + ", changed_fields, detail"
AUDIT_VIEWS = {
    "v_erpsync_recent_activity": "SELECT {audit} FROM erpsync_audit WHERE {recent}",
    "v_erpsync_failures": (
        "SELECT {audit} FROM erpsync_audit "
        "WHERE outcome IN ('failed', 'retrying', 'quarantined', 'conflict', 'refused')"
    ),
}


def _recent_condition(dialect: str) -> str:
    """`occurred_at` within the last RECENT_DAYS days, in the dialect's own date arithmetic."""
    return {
        "postgresql": f"occurred_at > (now() AT TIME ZONE 'UTC') - INTERVAL '{RECENT_DAYS} days'",
        "mysql": f"occurred_at > UTC_TIMESTAMP(6) - INTERVAL {RECENT_DAYS} DAY",
        "mariadb": f"occurred_at > UTC_TIMESTAMP(6) - INTERVAL {RECENT_DAYS} DAY",
        "mssql": f"occurred_at > DATEADD(day, -{RECENT_DAYS}, SYSUTCDATETIME())",
    }.get(dialect, f"occurred_at > datetime('now', '-{RECENT_DAYS} days')")


def _replace_views(columns: str) -> None:
    recent = _recent_condition(op.get_bind().dialect.name)
    for name, body in AUDIT_VIEWS.items():
        op.execute(f"DROP VIEW IF EXISTS {name}")
        op.execute(f"CREATE VIEW {name} AS " + body.format(audit=columns, recent=recent))


def upgrade() -> None:
    _replace_views(AUDIT_COLUMNS)
    op.create_table(
        "erpsync_sink_counts",
        sa.Column("binding_id", sa.BigInteger(), nullable=False),
        sa.Column("sink", sa.String(length=64), nullable=False),
        sa.Column("last_total_parts", sa.BigInteger(), nullable=True),
        sa.Column("last_good_parts", sa.BigInteger(), nullable=True),
        sa.Column("last_scrap_parts", sa.BigInteger(), nullable=True),
        sa.Column("last_nonconform_parts", sa.BigInteger(), nullable=True),
        sa.Column("counts_written_at", UTCDateTime(), nullable=True),
        sa.Column("counts_in_doubt", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("binding_id", "sink", name="pk_erpsync_sink_counts"),
    )


def downgrade() -> None:
    op.drop_table("erpsync_sink_counts")
    _replace_views(OLD_AUDIT_COLUMNS)
