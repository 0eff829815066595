"""An index on when each machine's runs ended, so a new start never precedes an earlier run's end.

A cycle with new starts reads, per MM machine, the latest end of a run erpsync recorded there
(``BindingRepository.latest_ends``), also of runs whose ERP tickets are gone (a ticket deleted
while open: its run stopped at erpsync's now). Through (mm_machine_id, mm_end_at) that read touches
only the runs that ended after the new tickets clocked in, not the machine's whole history.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_erpsync_run_binding_mm_machine_id_mm_end_at"


def upgrade() -> None:
    # plain CREATE INDEX on every backend (SQLite too): a batch copy would break the views on SQLite
    op.create_index(INDEX, "erpsync_run_binding", ["mm_machine_id", "mm_end_at"], unique=False)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="erpsync_run_binding")
