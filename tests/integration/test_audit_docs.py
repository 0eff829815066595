"""docs/audit.md's SQL examples run as written, on every state backend, against real rows."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import (
    Cycle,
    QuarantineEntry,
    RunBinding,
    SinkCounts,
    SyncAction,
    utcnow,
)
from erpsync.observability.correlation import correlation

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)


def example_queries() -> list[str]:
    """The ```sql blocks of the "Example queries" section (the GRANT example is for a DBA)."""
    section = DOC.read_text(encoding="utf-8").split("## Example queries", 1)[1].split("\n## ", 1)[0]
    return [block.strip().rstrip(";") for block in SQL_BLOCK.findall(section)]


def _seed(store: StateStore) -> str:
    """A shop's worth of state: a run on DEBURR started, counted, one refused, one quarantined."""
    now = utcnow()
    with correlation("schedule") as cid, store.session() as session:
        binding = RunBinding(
            source="erp",
            run_key="LT4711",
            mm_run_id="erp:LT4711",
            erp_job="1808412/1",
            erp_operation="10",
            erp_machine="DEBURR",
            mm_machine_id="DEBURR-BENCH",
            status="running",
            in_setup=False,
            erp_start_at=now - timedelta(hours=1),
            mm_start_at=now - timedelta(hours=1),
            last_total_parts=12,
            last_good_parts=11,
            last_scrap_parts=1,
            last_nonconform_parts=0,
            counts_written_at=now,
        )
        session.add(binding)
        session.flush()
        session.add(
            SinkCounts(
                binding_id=binding.id,
                sink="staging",
                last_total_parts=12,
                last_good_parts=11,
                last_scrap_parts=1,
                last_nonconform_parts=0,
                counts_written_at=now,
            )
        )
        session.add(
            SyncAction(
                idempotency_key="start_run:erp:LT4712:production",
                kind="start_run",
                status="failed_retryable",
                source="erp",
                run_key="LT4712",
                mm_run_id="erp:LT4712",
                erp_job="1808412/1",
                erp_machine="DEBURR",
                attempts=2,
                next_attempt_at=now + timedelta(seconds=20),
                http_status=503,
                error_message="MM answered 503",
            )
        )
        session.add(
            QuarantineEntry(
                source="erp",
                record_key="LT4713",
                field="machine",
                error_class="unknown_machine",
                message="run LT4713 is on ERP machine 'DEBURR', which MM does not know",
            )
        )
        session.add(Cycle(correlation_id=cid, kind="sync", finished_at=now, outcome="ok"))
        common = {"source": "erp", "erp_job": "1808412/1", "erp_operation": "10", "erp_machine": "DEBURR"}
        record_audit(
            session,
            action="start_run",
            outcome="succeeded",
            mm_run_id="erp:LT4711",
            detail="clocked in on 1808412/1 op 10 (production)",
            **common,
        )
        record_audit(
            session,
            action="write_counts",
            outcome="written",
            mm_run_id="erp:LT4711",
            before={"GOOD_QTY": 5},
            after={"GOOD_QTY": 11},
            detail="sink staging",
            **common,
        )
        record_audit(
            session,
            action="start_run",
            outcome="retrying",
            mm_run_id="erp:LT4712",
            http_status=503,
            error="MM answered 503",
            detail="clocked in on 1808412/1 op 10 (production)",
            **common,
        )
    return cid


def test_every_example_query_of_the_audit_doc_runs_as_written(state_store: StateStore) -> None:
    cid = _seed(state_store)
    queries = example_queries()
    assert len(queries) >= 10
    results: dict[str, list[tuple[object, ...]]] = {}
    with state_store.engine.connect() as conn:
        for query in queries:
            # the doc's correlation id is an example: this shop's cycle has its own
            sql = query.replace("'3f2a9c1b7d6e4a10'", f"'{cid}'")
            results[query] = [tuple(row) for row in conn.execute(text(sql))]
    by_start = {q.split("\n", 1)[0] + q: rows for q, rows in results.items()}
    written = next(rows for q, rows in by_start.items() if "action = 'write_counts'" in q)
    assert len(written) == 1 and written[0][-1] == "sink staging"
    why = next(rows for q, rows in by_start.items() if "v_erpsync_recent_activity" in q)
    assert "clocked in on 1808412/1 op 10 (production)" in {row[5] for row in why}
    per_sink = next(rows for q, rows in by_start.items() if "erpsync_sink_counts" in q)
    assert per_sink[0][:3] == ("staging", 12, 11)
    job = next(rows for q, rows in by_start.items() if "erp_job = '1808412/1'" in q)
    assert len(job) == 3
    waiting = next(rows for q, rows in by_start.items() if "FROM erpsync_action" in q)
    assert [row[2] for row in waiting] == ["erp:LT4712"]
    assert any(rows for q, rows in by_start.items() if "correlation_id" in q and "erpsync_audit" in q)
