"""Long ERP values and oversized rows never block a cycle, on SQLite, PostgreSQL and MariaDB (#19).

An infor-visual-csv export with a 300-character job, a 70-character operation, machine ids of
100 characters (one mapped, one not) and two 300-character run keys that share their first 255
characters, synced through the MM simulator over loopback HTTP into a state database on every
backend. PostgreSQL and MariaDB refuse a value longer than its column, SQLite does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, MachineSeen, QuarantineEntry, RunBinding, SyncAction
from erpsync.bootstrap import open_sync
from erpsync.config import CsvSettings, MachineSettings, Settings, SourceSettings, StateSettings
from erpsync.domain.columns import RAW_MAX_BYTES, fit_id, utf8_size
from erpsync.domain.identity import mm_run_id_for
from erpsync.domain.lifecycle import MACHINE_MAX, RUN_KEY_MAX
from erpsync.observability.correlation import correlation
from erpsync.runtime.cli_lease import held_lease
from erpsync.service.sync import SyncSummary
from tests.fixtures_mm import fast_mm_settings

HEADER = (
    "WORKORDER_TYPE,WORKORDER_BASE_ID,WORKORDER_LOT_ID,WORKORDER_SPLIT_ID,WORKORDER_SUB_ID,"
    "SEQUENCE_NO,RESOURCE_ID,DESCRIPTION,CALC_END_QTY,QTY_GOOD,SETUP_HRS,RUN,RUN_TYPE,STATUS,"
    "SETUP_COMPLETED,Run_Complete"
)
LONG_JOB = "J" * 300
TWIN = "T" * 299  # two work orders whose run keys share far more than 255 characters
OP70 = "7" * 70
UNMAPPED = "U" * 99 + "1"  # 100 characters, sent to MM as it is
MAPPED = "U" * 99 + "2"  # 100 characters, shares 99 with UNMAPPED; mapped to a short MM id


def row(job: str, seq: str, machine: str, description: str = "Bracket") -> str:
    return f"W,{job},1,0,0,{seq},{machine},{description},10,0,1.5,0.5,HRS/PC,R,Y,No"


def run_key(job: str, seq: str) -> str:
    return fit_id(f"W/{job}/1/0/0|{seq}", RUN_KEY_MAX)


def run_id(job: str, seq: str) -> str:
    return mm_run_id_for("erp", run_key(job, seq))


@pytest.fixture
def state(database_url: str) -> Iterator[StateStore]:
    store = StateStore(create_db_engine(database_url))
    migrate.upgrade(store.engine)
    yield store
    store.dispose()


def settings(csv_path: Path, state_url: str, sim: MMSimulator) -> Settings:
    return Settings(
        state=StateSettings(url=state_url),
        mm=fast_mm_settings(sim.base_url, sim.api_key),
        source=SourceSettings(
            kind="infor-visual-csv", csv=CsvSettings(path=csv_path, settle_seconds=0), timezone="UTC"
        ),
        machines=MachineSettings(overrides={MAPPED: "MAPPED-1"}),
    )


def sync(config: Settings, store: StateStore) -> SyncSummary:
    with MMClient(config.mm) as client, correlation("cli"), held_lease(config, store) as fence:
        service = open_sync(config, store, fence, client)
        try:
            return service.run_cycle()
        finally:
            service.source.close()


def test_long_ids_and_names_sync_on_every_backend(
    tmp_path: Path, state: StateStore, database_url: str
) -> None:
    csv_path = tmp_path / "ops.csv"
    rows = [
        row(LONG_JOB, "10", "HAAS-1"),
        row(TWIN + "A", "10", "HAAS-2"),
        row(TWIN + "B", "10", "HAAS-3"),
        row("1808412", OP70, "HAAS-4"),
        row("1808413", "10", UNMAPPED),
        row("1808414", "10", MAPPED),
        row("1808415", "10", "HAAS-5"),
    ]
    csv_path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    machines = {"HAAS-1", "HAAS-2", "HAAS-3", "HAAS-4", "HAAS-5", UNMAPPED, "MAPPED-1"}
    with MMSimulator(machines=machines, seed=7) as sim:
        config = settings(csv_path, database_url, sim)
        first = sync(config, state)
        expected = {
            run_id(LONG_JOB, "10"): ("HAAS-1", f"{LONG_JOB}/1"),
            run_id(TWIN + "A", "10"): ("HAAS-2", f"{TWIN}A/1"),
            run_id(TWIN + "B", "10"): ("HAAS-3", f"{TWIN}B/1"),
            run_id("1808412", OP70): ("HAAS-4", "1808412/1"),
            run_id("1808413", "10"): (UNMAPPED, "1808413/1"),
            run_id("1808414", "10"): ("MAPPED-1", "1808414/1"),
            run_id("1808415", "10"): ("HAAS-5", "1808415/1"),
        }
        assert len(set(expected)) == 7  # the two twins got distinct ids
        runs = sim.runs()
        assert set(runs) == set(expected), first
        for mm_run_id, (machine, job) in expected.items():
            assert runs[mm_run_id]["machine_id"] == machine and runs[mm_run_id]["job_name"] == job
            assert runs[mm_run_id]["end_at"] is None
        # MM holds the full names: only the state columns are fitted
        assert runs[run_id(LONG_JOB, "10")]["job_name"] == f"{LONG_JOB}/1"
        assert runs[run_id("1808412", OP70)]["operation_name"].endswith(OP70)

        # a second cycle with nothing changed recognises every run: no new start, no stop
        calls = len(sim.calls())
        sync(config, state)
        assert [c["path"] for c in sim.calls()[calls:] if c["method"] == "POST"] == []
        assert set(sim.runs()) == set(expected)

        # clocking out of the long-keyed runs stops exactly those
        ended = [r.replace(",R,Y,No", ",C,Y,Yes") if r.startswith(f"W,{TWIN}") else r for r in rows]
        csv_path.write_text("\n".join([HEADER, *ended]) + "\n", encoding="utf-8")
        sync(config, state)
        runs = sim.runs()
        assert runs[run_id(TWIN + "A", "10")]["end_at"] is not None
        assert runs[run_id(TWIN + "B", "10")]["end_at"] is not None
        assert runs[run_id(LONG_JOB, "10")]["end_at"] is None

    with state.session() as session:
        bindings = {b.mm_run_id: b for b in session.scalars(select(RunBinding))}
        assert set(bindings) == set(expected)
        long = bindings[run_id(LONG_JOB, "10")]
        assert len(long.run_key) == RUN_KEY_MAX and long.erp_job.endswith("…")
        assert bindings[run_id("1808412", OP70)].erp_operation.endswith("…")
        assert bindings[run_id("1808413", "10")].erp_machine == fit_id(UNMAPPED, MACHINE_MAX)
        assert bindings[run_id("1808413", "10")].mm_machine_id == UNMAPPED
        assert bindings[run_id("1808414", "10")].mm_machine_id == "MAPPED-1"
        seen = {m.erp_machine: m.mm_machine_id for m in session.scalars(select(MachineSeen))}
        assert seen[fit_id(UNMAPPED, MACHINE_MAX)] == UNMAPPED
        assert seen[fit_id(MAPPED, MACHINE_MAX)] == "MAPPED-1"
        assert set(session.scalars(select(SyncAction.status))) == {"succeeded"}
        audit = session.execute(select(AuditEntry.action, AuditEntry.outcome, AuditEntry.erp_job)).all()
        assert ("start_run", "succeeded", long.erp_job) in audit
        assert sum(1 for a in audit if a.action == "stop_run" and a.outcome == "succeeded") == 2
        assert session.scalars(select(QuarantineEntry)).all() == []


def test_an_oversized_row_is_quarantined_with_its_line(
    tmp_path: Path, state: StateStore, database_url: str
) -> None:
    """A 10 MB description cell: that row is quarantined with file:line and a cut payload; the
    others sync. A row just small enough to journal but too large for MM (413) likewise."""
    csv_path = tmp_path / "ops.csv"
    rows = [
        row("2001", "10", "HAAS-1"),
        row("2002", "10", "HAAS-2", description="D" * 10_000_000),
        row("2003", "10", "HAAS-3", description="E" * 40_000),
    ]
    csv_path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    with MMSimulator(machines={"HAAS-1", "HAAS-2", "HAAS-3"}, seed=7, max_body_bytes=32_000) as sim:
        config = settings(csv_path, database_url, sim)
        summary = sync(config, state)
        runs = sim.runs()
        assert set(runs) == {run_id("2001", "10")}, summary
        sync(config, state)  # the next cycle completes too
        assert set(sim.runs()) == {run_id("2001", "10")}

    with state.session() as session:
        entries = {e.error_class: e for e in session.scalars(select(QuarantineEntry))}
        assert set(entries) == {"request_too_large", "mm_start_run"}
        huge = entries["request_too_large"]
        assert (Path(huge.file_name).name, huge.line_number) == ("ops.csv", 3)
        assert "over the limit of 60,000 bytes" in huge.message and "2002/1" in huge.message
        assert utf8_size(huge.raw_payload) <= RAW_MAX_BYTES and "bytes]" in huge.raw_payload
        statuses = dict(session.execute(select(SyncAction.mm_run_id, SyncAction.http_status)).all())
        assert statuses == {run_id("2001", "10"): None, run_id("2003", "10"): 413}  # 2002 never sent
        refused = entries["mm_start_run"]
        assert (Path(refused.file_name).name, refused.line_number) == ("ops.csv", 4)
        assert refused.record_key == run_id("2003", "10") and "2003/1" in refused.message
        assert utf8_size(refused.raw_payload) <= RAW_MAX_BYTES and "bytes]" in refused.raw_payload
        assert "PayloadTooLarge" in refused.message or "larger than 32000 bytes" in refused.message
        audit = session.execute(select(AuditEntry.action, AuditEntry.outcome, AuditEntry.detail)).all()
        quarantined = [a for a in audit if a.outcome == "quarantined"]
        assert len(quarantined) == 2, audit
        assert any("ops.csv:3" in (a.detail or "") for a in quarantined)
        assert ("start_run", "succeeded") in {(a.action, a.outcome) for a in audit}
