"""Indexes that keep each cycle's state reads bounded by what can still change, not by history.

A sync cycle reads the bindings MM may still have open by (source, status) and finished ones only
by run key; write-back finds recently ended runs by (status, updated_at); retention finds settled
actions and old cycles by time. Without these, each of those reads scans every row ever written.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_erpsync_run_binding_source_status", "erpsync_run_binding", ["source", "status"]),
    ("ix_erpsync_run_binding_status_updated_at", "erpsync_run_binding", ["status", "updated_at"]),
    ("ix_erpsync_action_settled_at", "erpsync_action", ["settled_at"]),
    ("ix_erpsync_cycle_started_at", "erpsync_cycle", ["started_at"]),
    ("ix_erpsync_quarantine_status_last_seen_at", "erpsync_quarantine", ["status", "last_seen_at"]),
)


def upgrade() -> None:
    # plain CREATE INDEX on every backend (SQLite too): a batch copy would break the views on SQLite
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
