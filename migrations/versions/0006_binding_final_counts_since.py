"""Stopped runs stay write-back candidates until their final counts reached the ERP.

`final_counts_since` is set when erpsync stops a run (or last saw its counts change after that)
and cleared once a read after the settle window has been written (or found unchanged, or MM
confirmed it has no data); write-back finds the due ones through its own index, however long ago
the run ended in MM (a clock-out entered hours late, an outage longer than the settle window).

Runs that ended within the last day before this revision get the marker from their `updated_at`
(when they were stopped), so an upgrade loses no final counts; older ones are left as done.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from erpsync.adapters.state.types import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_erpsync_run_binding_final_counts_since"
BACKFILL_AGE = timedelta(days=1)


def upgrade() -> None:
    # plain ALTER TABLE / CREATE INDEX on every backend (SQLite too): a batch copy would break the views
    op.add_column("erpsync_run_binding", sa.Column("final_counts_since", UTCDateTime(), nullable=True))
    op.create_index(INDEX, "erpsync_run_binding", ["final_counts_since"], unique=False)
    binding = sa.table(
        "erpsync_run_binding",
        sa.column("status", sa.String()),
        sa.column("updated_at", UTCDateTime()),
        sa.column("final_counts_since", UTCDateTime()),
    )
    cutoff = datetime.now(UTC) - BACKFILL_AGE
    op.execute(
        binding.update()
        .where(binding.c.status == "stopped", binding.c.updated_at >= cutoff)
        .values(final_counts_since=binding.c.updated_at)
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="erpsync_run_binding")
    op.drop_column("erpsync_run_binding", "final_counts_since")
