"""Run bindings remember the resync generation of their idempotency keys.

After `erpsync resync` re-starts a run, its actions carry a new generation (`@r2026...`), so the
run's later stop gets a key the journal has not seen; the generation therefore lives on the binding.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ALTER TABLE on every backend (SQLite too): a batch copy would break the views on SQLite
    op.add_column(
        "erpsync_run_binding",
        sa.Column("key_generation", sa.String(length=64), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_column("erpsync_run_binding", "key_generation")
