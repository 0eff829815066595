"""docs/staging.md stays true: its column list is the table's, its posting query runs as written."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from erpsync.adapters.erp.sinks.base import RUN_COUNT_COLUMNS, CountWrite
from erpsync.adapters.erp.sinks.staging import StagingSink, install_staging
from erpsync.adapters.state.db import create_db_engine
from erpsync.domain.model import PartCounts
from erpsync.domain.writeback_rules import CountTarget

DOC = (Path(__file__).resolve().parents[2] / "docs" / "staging.md").read_text(encoding="utf-8")
TABLE = "ERPSYNC_RUN_COUNTS"


def run_write(run_key: str, good: int, scrap: int, nonconform: int) -> CountWrite:
    counts = PartCounts(
        total=good + scrap + nonconform,
        good=good,
        scrap=scrap,
        nonconform=nonconform,
        start_at=datetime(2026, 11, 20, 14, 0, tzinfo=UTC),
    )
    target = CountTarget(
        binding_id=0,
        mm_run_id=f"erp:{run_key}",
        run_key=run_key,
        source="erp",
        erp_job="1808412/1",
        erp_operation="10",
        erp_machine="HAAS-VF2",
        last=None,
    )
    return CountWrite(target, counts)


def test_the_documented_columns_are_the_table_columns() -> None:
    documented = re.findall(r"^\| `([A-Z_]+)` \|", DOC, flags=re.MULTILINE)
    assert documented == list(RUN_COUNT_COLUMNS)


def test_the_posting_query_runs_as_written(database_url: str) -> None:
    """The plain query on SQLite and MariaDB (and SQL Server), the quoted one on PostgreSQL."""
    plain, quoted = [
        block for block in re.findall(r"```sql\n(.*?)```", DOC, flags=re.DOTALL) if TABLE in block
    ]
    query = quoted if database_url.startswith("postgresql") else plain
    engine = create_db_engine(database_url)
    try:
        install_staging(engine, TABLE)
        before = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(minutes=5)
        StagingSink(engine, TABLE).write([run_write("LT4711", 25, 1, 2), run_write("OP-7", 3, 0, 0)])
        with engine.connect() as conn:
            rows = conn.execute(text(query), {"since": before}).mappings().all()
    finally:
        engine.dispose()
    assert [(r["RUN_KEY"], r["GOOD_QTY"], r["BAD_QTY"]) for r in rows] == [("LT4711", 25, 3)]
    assert rows[0]["ERP_JOB"] == "1808412/1" and rows[0]["MM_END_AT"] is None
