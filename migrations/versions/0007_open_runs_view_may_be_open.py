"""The views follow give-up-after-read and plausibility checks (issue #15).

- `v_erpsync_open_runs` also lists `vanished` and `unconfirmed` bindings: MachineMetrics may have
  them open (a vanished run left open by policy "flag"; a start erpsync gave up on without being
  able to read MM). The documented "at most one open run per machine" query must see them.
- `v_erpsync_failures` also lists `implausible` write-back outcomes: counts MM answered that were
  never written to the ERP (docs/machinemetrics.md, "Part counts").

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT_COLUMNS = (
    "id, occurred_at, triggered_by, actor, action, outcome, source, erp_job, erp_operation, erp_machine, "
    "mm_run_id, http_status, error_class, error_message, before_json, after_json, correlation_id, "
    "changed_fields, detail"
)
OPEN_RUNS = (
    "SELECT source, run_key, mm_run_id, erp_job, erp_operation, erp_machine, mm_machine_id, status, "
    "in_setup, erp_start_at, mm_start_at, last_total_parts, last_good_parts, last_scrap_parts, "
    "counts_written_at FROM erpsync_run_binding WHERE status IN ({statuses})"
)
FAILURES = "SELECT {audit} FROM erpsync_audit WHERE outcome IN ({outcomes})"

OLD_OPEN_STATUSES = ("starting", "running", "stopping")
NEW_OPEN_STATUSES = (*OLD_OPEN_STATUSES, "vanished", "unconfirmed")
OLD_FAILURE_OUTCOMES = ("failed", "retrying", "quarantined", "conflict", "refused")
NEW_FAILURE_OUTCOMES = (*OLD_FAILURE_OUTCOMES, "implausible")


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _replace(open_statuses: Sequence[str], failure_outcomes: Sequence[str]) -> None:
    views = {
        "v_erpsync_open_runs": OPEN_RUNS.format(statuses=_quoted(open_statuses)),
        "v_erpsync_failures": FAILURES.format(audit=AUDIT_COLUMNS, outcomes=_quoted(failure_outcomes)),
    }
    for name, body in views.items():
        op.execute(f"DROP VIEW IF EXISTS {name}")
        op.execute(f"CREATE VIEW {name} AS {body}")


def upgrade() -> None:
    _replace(NEW_OPEN_STATUSES, NEW_FAILURE_OUTCOMES)


def downgrade() -> None:
    _replace(OLD_OPEN_STATUSES, OLD_FAILURE_OUTCOMES)
