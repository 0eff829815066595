"""The read-only commands' Core view of the state tables (reads.py) names what tables.py defines.

`status` and `audit` read through reads.py to start without SQLAlchemy's ORM; a column renamed or
retyped in tables.py (and its migration) must not leave them reading a column that is not there.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Integer, String, Text
from sqlalchemy.sql.expression import TableClause

from erpsync.adapters.state import reads
from erpsync.adapters.state.tables import Base
from erpsync.adapters.state.types import UTCDateTime

CLAUSES = [
    reads.run_binding,
    reads.sync_action,
    reads.quarantine,
    reads.cycle,
    reads.leader_lease,
    reads.audit,
]


@pytest.mark.parametrize("clause", CLAUSES, ids=lambda clause: clause.name)
def test_every_column_read_is_a_column_of_the_table(clause: TableClause) -> None:
    table = Base.metadata.tables[clause.name]
    for column in clause.columns:
        assert column.name in table.columns, f"{clause.name}.{column.name} is not in tables.py"
        defined = table.columns[column.name].type
        if isinstance(defined, UTCDateTime):
            assert isinstance(column.type, UTCDateTime), f"{clause.name}.{column.name}: UTC timestamps"
        elif isinstance(defined, Text):
            assert isinstance(column.type, Text), f"{clause.name}.{column.name}"
        elif isinstance(defined, String):
            assert isinstance(column.type, String), f"{clause.name}.{column.name}"
        else:  # BIGINT / INTEGER ids, tokens, HTTP statuses: all integers to Python
            assert isinstance(column.type, Integer), f"{clause.name}.{column.name}: {defined!r}"


def test_audit_reads_what_the_audit_command_prints() -> None:
    printed = {
        "id", "occurred_at", "triggered_by", "action", "outcome", "erp_job", "erp_operation",
        "erp_machine", "mm_run_id", "http_status", "error_class", "error_message", "before_json",
        "after_json", "changed_fields", "detail", "source", "correlation_id",
    }  # fmt: skip
    assert printed <= set(reads.audit.c.keys())
