"""Run bindings keep their write-back intents until the state commit confirms them.

Write-back records the counts it is about to write before the ERP transaction, so a crash between
the ERP commit and erpsync's state commit cannot turn erpsync's own value into a false conflict.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ALTER TABLE on every backend (SQLite too): a batch copy would break the views on SQLite
    op.add_column("erpsync_run_binding", sa.Column("counts_in_doubt", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("erpsync_run_binding", "counts_in_doubt")
