"""The write-back cycle end to end: MM simulator over loopback HTTP -> ERP database -> state.

The ERP runs on SQLite, PostgreSQL and MariaDB (`database_url`); erpsync's state is SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update
from typer.testing import CliRunner

from erpsync.adapters.erp.sinks.none import NoneSink
from erpsync.adapters.erp.sinks.sql import SqlSink
from erpsync.adapters.erp.sinks.staging import StagingSink, install_staging, staging_table
from erpsync.adapters.erp.sinks.visual_labor_ticket import VisualLaborTicketSink
from erpsync.adapters.erp.visual_schema import create_visual_schema
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import Fault, MMSimulator
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import Cycle, QuarantineEntry, RunBinding
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.cli.app import app
from erpsync.config import MMSettings
from erpsync.demo.visual_fixture import OperationKey, VisualFixture, WorkOrderKey
from erpsync.domain.errors import ConfigError, RecordError
from erpsync.domain.model import PartCounts
from erpsync.service.writeback import WritebackPolicy, run_writeback
from tests.fixtures_mm import fast_mm_settings
from tests.integration.writeback_support import (
    TABLE,
    audits,
    bind_run,
    last_written,
    quarantine,
    settings_for,
    staging_counts,
    start_run,
)


@pytest.fixture
def erp(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    install_staging(engine, TABLE)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_erp(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'erp.db'}")
    install_staging(engine, TABLE)
    yield engine
    engine.dispose()


def cycles(store: StateStore) -> list[Cycle]:
    with store.session() as session:
        return list(session.scalars(select(Cycle).where(Cycle.kind == "writeback").order_by(Cycle.id)).all())


def test_counts_land_replays_change_nothing_and_growth_is_written(
    erp: Engine,
    sqlite_state_store: StateStore,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    mm_settings: MMSettings,
) -> None:
    store = sqlite_state_store
    for run_id, total in (("r1", 10), ("r2", 0), ("r3", 7)):
        start_run(mm_client, run_id)
        mm_simulator.set_counts(run_id, total=total, scrap=1 if total else 0)
        bind_run(store, run_id)
    settings = settings_for(str(erp.url), mm_settings)
    sink = StagingSink(erp, TABLE)

    first = run_writeback(
        SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings)
    )
    assert (first.read, first.calls, first.written, first.outcome) == (3, 3, 3, "ok")
    assert staging_counts(erp) == {"r1": (10, 9, 1, 0), "r2": (0, 0, 0, 0), "r3": (7, 6, 1, 0)}
    assert last_written(store) == {"r1": (10, 9, 1, 0), "r2": (0, 0, 0, 0), "r3": (7, 6, 1, 0)}
    written = audits(store, outcome="written")
    assert len(written) == 3
    assert written[0].correlation_id == first.correlation_id and written[0].erp_job == "W100/1"
    assert cycles(store)[-1].outcome == "ok"

    table = staging_table(TABLE)
    with erp.connect() as conn:
        stamps = {run: at for run, at in conn.execute(select(table.c.RUN_ID, table.c.UPDATED_AT))}
    replay = run_writeback(
        SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings)
    )
    assert (replay.unchanged, replay.written) == (3, 0)
    assert len(audits(store)) == 3  # unchanged is not audited
    with erp.connect() as conn:
        assert {run: at for run, at in conn.execute(select(table.c.RUN_ID, table.c.UPDATED_AT))} == stamps

    mm_simulator.set_counts("r1", total=15, scrap=1)
    grown = run_writeback(
        SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings)
    )
    assert (grown.written, grown.unchanged) == (1, 2)
    assert staging_counts(erp)["r1"] == (15, 14, 1, 0)
    audit = audits(store, outcome="written")[-1]
    assert audit.mm_run_id == "r1" and '"TOTAL_QTY": 10' in (audit.before_json or "")
    assert '"TOTAL_QTY": 15' in (audit.after_json or "")


def test_a_human_edit_is_quarantined_never_overwritten_and_retry_resumes(
    erp: Engine,
    sqlite_state_store: StateStore,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    mm_settings: MMSettings,
) -> None:
    store = sqlite_state_store
    start_run(mm_client, "r1")
    mm_simulator.set_counts("r1", total=10)
    bind_run(store, "r1")
    settings = settings_for(str(erp.url), mm_settings)
    sink = StagingSink(erp, TABLE)
    run_writeback(SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings))
    table = staging_table(TABLE)
    with erp.begin() as conn:  # a supervisor corrects the count in the ERP
        conn.execute(update(table).where(table.c.RUN_ID == "r1").values(GOOD_QTY=8, SCRAP_QTY=2))
    mm_simulator.set_counts("r1", total=12)

    summary = run_writeback(
        SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings)
    )
    assert summary.conflicts == 1 and summary.written == 0
    assert staging_counts(erp)["r1"] == (10, 8, 2, 0)
    assert last_written(store)["r1"] == (10, 10, 0, 0)
    [entry] = quarantine(store)
    assert (entry.error_class, entry.status, entry.record_key) == ("writeback_conflict", "open", "r1")
    [conflict] = audits(store, outcome="conflict")
    assert conflict.error_class == "writeback_conflict" and '"GOOD_QTY": 8' in (conflict.before_json or "")

    calls_before = len(mm_simulator.calls())
    held = run_writeback(
        SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings)
    )
    assert (held.skipped, held.calls, held.conflicts) == (1, 0, 0)
    assert len(mm_simulator.calls()) == calls_before
    assert len(audits(store, outcome="conflict")) == 1

    # IT puts erpsync's value back and sends the entry for retry: erpsync resumes
    with erp.begin() as conn:
        conn.execute(update(table).where(table.c.RUN_ID == "r1").values(GOOD_QTY=10, SCRAP_QTY=0))
    with store.session() as session:
        session.execute(update(QuarantineEntry).values(status="retry"))
    resumed = run_writeback(
        SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings)
    )
    assert resumed.written == 1
    assert staging_counts(erp)["r1"] == (12, 12, 0, 0)
    assert quarantine(store)[0].status == "resolved"


def test_not_found_and_missing_metrics_never_write_zero_and_are_audited_once(
    erp: Engine, sqlite_state_store: StateStore, mm_client: MMClient, mm_settings: MMSettings
) -> None:
    store = sqlite_state_store
    # a stop in flight (a running run MM has no such run for is drift: test_drift_healing.py)
    bind_run(store, "never-started", status="stopping", last=PartCounts(5, 5, 0, 0))
    settings = settings_for(str(erp.url), mm_settings)
    sink = StagingSink(erp, TABLE)
    for _ in range(2):
        summary = run_writeback(
            SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings)
        )
        assert (summary.no_data, summary.written, summary.outcome) == (1, 0, "ok")
    assert staging_counts(erp) == {}
    assert last_written(store)["never-started"] == (5, 5, 0, 0)
    [audit] = audits(store)
    assert (audit.outcome, audit.error_class) == ("no_data", "mm_not_found")


def test_timeouts_and_outages_never_write_zero(
    sqlite_erp: Engine, sqlite_state_store: StateStore, mm_simulator: MMSimulator
) -> None:
    store = sqlite_state_store
    mm_settings = fast_mm_settings(
        mm_simulator.base_url,
        mm_simulator.api_key,
        read_timeout_seconds=0.2,
        max_attempts=2,
        retry_deadline_seconds=1,
    )
    with MMClient(mm_settings) as client:
        start_run(client, "r1")
        start_run(client, "r2")
        mm_simulator.set_counts("r1", total=10)
        mm_simulator.set_counts("r2", total=4)
        bind_run(store, "r1")
        bind_run(store, "r2")
        settings = settings_for(str(sqlite_erp.url), mm_settings)
        sink = StagingSink(sqlite_erp, TABLE)
        run_writeback(SqlUnitOfWorkFactory(store), client, sink, WritebackPolicy.from_settings(settings))
        mm_simulator.set_counts("r1", total=0)  # what MM would show if it lost data: never trusted blindly
        mm_simulator.set_faults(Fault("latency", operations=frozenset({"get"}), latency_ms=600))
        slow = run_writeback(
            SqlUnitOfWorkFactory(store), client, sink, WritebackPolicy.from_settings(settings)
        )
        mm_simulator.set_faults(Fault("error", operations=frozenset({"get"}), status=503))
        down = run_writeback(
            SqlUnitOfWorkFactory(store), client, sink, WritebackPolicy.from_settings(settings)
        )
    for summary in (slow, down):
        assert (summary.no_data, summary.unreachable, summary.written, summary.outcome) == (2, 2, 0, "failed")
    assert staging_counts(sqlite_erp) == {"r1": (10, 10, 0, 0), "r2": (4, 4, 0, 0)}
    assert [c.outcome for c in cycles(store)] == ["ok", "failed", "failed"]
    no_data = audits(store, outcome="no_data")
    assert {a.error_class for a in no_data} == {"mm_unreachable"}
    assert len(no_data) == 2  # once per run while the outage lasts, not once per cycle


def test_decrease_is_refused_unless_allowed(
    sqlite_erp: Engine,
    sqlite_state_store: StateStore,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    mm_settings: MMSettings,
) -> None:
    store = sqlite_state_store
    start_run(mm_client, "r1")
    mm_simulator.set_counts("r1", total=10)
    bind_run(store, "r1")
    settings = settings_for(str(sqlite_erp.url), mm_settings)
    sink = StagingSink(sqlite_erp, TABLE)
    run_writeback(SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings))
    mm_simulator.set_counts("r1", total=10, scrap=3)  # good 10 -> 7
    for _ in range(2):
        assert (
            run_writeback(
                SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(settings)
            ).refused
            == 1
        )
    assert staging_counts(sqlite_erp)["r1"] == (10, 10, 0, 0)
    [refusal] = audits(store, outcome="decrease_refused")
    assert "good 10 -> 7" in (refusal.error_message or "")
    allowing = settings_for(str(sqlite_erp.url), mm_settings, allow_decrease=True)
    assert (
        run_writeback(
            SqlUnitOfWorkFactory(store), mm_client, sink, WritebackPolicy.from_settings(allowing)
        ).written
        == 1
    )
    assert staging_counts(sqlite_erp)["r1"] == (10, 7, 3, 0)


def test_settle_window_single_run_dry_run_and_read_only(
    sqlite_erp: Engine,
    sqlite_state_store: StateStore,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    mm_settings: MMSettings,
) -> None:
    store = sqlite_state_store
    now = datetime.now(UTC)
    for run_id in ("active", "ended-recently", "ended-long-ago", "starting"):
        start_run(mm_client, run_id)
        mm_simulator.set_counts(run_id, total=3)
    bind_run(store, "active")
    # the window counts from when erpsync stopped the run, not from MM's end (a late clock-out)
    stopped = now - timedelta(minutes=10)
    late = now - timedelta(hours=3)
    bind_run(store, "ended-recently", status="stopped", mm_end_at=late, final_since=stopped)
    # stopped long ago, its final counts done: not read again
    bind_run(store, "ended-long-ago", status="stopped", mm_end_at=now - timedelta(hours=3))
    bind_run(store, "starting", status="starting")
    settings = settings_for(str(sqlite_erp.url), mm_settings, settle_window_minutes=30)
    sink = StagingSink(sqlite_erp, TABLE)

    dry = run_writeback(
        SqlUnitOfWorkFactory(store),
        mm_client,
        sink,
        WritebackPolicy.from_settings(settings),
        dry_run=True,
        now=now,
    )
    assert {r.mm_run_id: r.outcome for r in dry.rows} == {
        "active": "would_write",
        "ended-recently": "would_write",
    }
    assert dry.rows[0].mm_counts == {"total": 3, "good": 3, "scrap": 0, "nonconform": 0}
    assert staging_counts(sqlite_erp) == {} and audits(store) == [] and cycles(store) == []

    read_only = run_writeback(
        SqlUnitOfWorkFactory(store), mm_client, NoneSink(), WritebackPolicy.from_settings(settings), now=now
    )
    assert read_only.read_only and read_only.read == 2 and read_only.written == 0
    assert staging_counts(sqlite_erp) == {} and last_written(store)["active"] is None

    one = run_writeback(
        SqlUnitOfWorkFactory(store),
        mm_client,
        sink,
        WritebackPolicy.from_settings(settings),
        run_id="ended-long-ago",
        now=now,
    )
    assert (one.read, one.written) == (1, 1)
    assert set(staging_counts(sqlite_erp)) == {"ended-long-ago"}
    with pytest.raises(RecordError, match="no bound run"):
        run_writeback(
            SqlUnitOfWorkFactory(store),
            mm_client,
            sink,
            WritebackPolicy.from_settings(settings),
            run_id="nope",
        )


def test_configuration_problems_raise_and_are_recorded(
    sqlite_state_store: StateStore,
    tmp_path: Path,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    mm_settings: MMSettings,
) -> None:
    store = sqlite_state_store
    start_run(mm_client, "r1")
    bind_run(store, "r1")
    bare_erp = create_db_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    settings = settings_for(str(bare_erp.url), mm_settings)
    with pytest.raises(ConfigError, match="erpsync erp install-staging"):
        run_writeback(
            SqlUnitOfWorkFactory(store),
            mm_client,
            StagingSink(bare_erp, TABLE),
            WritebackPolicy.from_settings(settings),
        )
    wrong_key = fast_mm_settings(mm_simulator.base_url, "not-the-key")
    with MMClient(wrong_key) as client, pytest.raises(ConfigError):
        run_writeback(
            SqlUnitOfWorkFactory(store),
            client,
            NoneSink(),
            WritebackPolicy.from_settings(settings_for(str(bare_erp.url), wrong_key)),
        )
    assert [c.outcome for c in cycles(store)] == ["config_error", "config_error"]
    assert last_written(store)["r1"] is None
    bare_erp.dispose()


# ---- the CLI, as a user runs it ------------------------------------------------------------------


def _cli_env(monkeypatch: pytest.MonkeyPatch, state_url: str, erp_url: str, sim: MMSimulator) -> None:
    monkeypatch.setenv("ERPSYNC_STATE__URL", state_url)
    monkeypatch.setenv("ERPSYNC_MM__BASE_URL", sim.base_url)
    monkeypatch.setenv("ERPSYNC_MM__API_KEY", sim.api_key)
    monkeypatch.setenv("ERPSYNC_WRITEBACK__DATABASE__URL", erp_url)


def test_cli_install_staging_dry_run_and_cycle(
    sqlite_url: str,
    sqlite_state_store: StateStore,
    tmp_path: Path,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    erp_url = f"sqlite:///{tmp_path / 'cli-erp.db'}"
    _cli_env(monkeypatch, sqlite_url, erp_url, mm_simulator)
    start_run(mm_client, "r1")
    mm_simulator.set_counts("r1", total=6, scrap=1)
    bind_run(sqlite_state_store, "r1")

    missing = runner.invoke(app, ["writeback"])
    assert missing.exit_code == 2
    assert "run `erpsync erp install-staging`" in missing.output

    ddl = runner.invoke(app, ["erp", "install-staging", "--print-sql"])
    assert ddl.exit_code == 0 and 'CREATE TABLE "ERPSYNC_RUN_COUNTS"' in ddl.output
    assert runner.invoke(app, ["erp", "install-staging"]).exit_code == 0

    dry = runner.invoke(app, ["writeback", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert report["summary"]["dry_run"] and report["summary"]["would_write"] == 1
    assert report["rows"][0]["mm_counts"] == {"total": 6, "good": 5, "scrap": 1, "nonconform": 0}

    real = runner.invoke(app, ["writeback", "--run", "r1"])
    assert real.exit_code == 0, real.output
    assert "1 written" in real.output
    erp = create_db_engine(erp_url)
    assert staging_counts(erp) == {"r1": (6, 5, 1, 0)}
    erp.dispose()
    unknown = runner.invoke(app, ["writeback", "--run", "nope"])
    assert unknown.exit_code == 1 and "no bound run" in unknown.output


def test_a_poison_row_fails_alone_and_the_rest_of_its_batch_is_written(
    tmp_path: Path,
    sqlite_state_store: StateStore,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    mm_settings: MMSettings,
) -> None:
    store = sqlite_state_store
    erp = create_db_engine(f"sqlite:///{tmp_path / 'erp.db'}")
    with erp.begin() as conn:
        conn.execute(
            text("CREATE TABLE counts (run_key VARCHAR(64) PRIMARY KEY, good INTEGER CHECK (good < 100))")
        )
    for run_id, total in (("ok-1", 5), ("poison", 500), ("ok-2", 7)):
        start_run(mm_client, run_id)
        mm_simulator.set_counts(run_id, total=total)
        bind_run(store, run_id)
    statement = "INSERT INTO counts (run_key, good) VALUES (:run_key, :good_parts)"
    settings = settings_for(str(erp.url), mm_settings, sink="sql", statement=statement)
    summary = run_writeback(
        SqlUnitOfWorkFactory(store),
        mm_client,
        SqlSink(erp, statement),
        WritebackPolicy.from_settings(settings),
    )
    assert (summary.written, summary.failed, summary.outcome) == (2, 1, "partial")
    with erp.connect() as conn:
        assert dict(conn.execute(text("SELECT run_key, good FROM counts")).all()) == {
            "K-ok-1": 5,
            "K-ok-2": 7,
        }
    [failed] = audits(store, outcome="failed")
    assert failed.mm_run_id == "poison" and "refused a row" in (failed.error_message or "")
    assert last_written(store)["poison"] is None and last_written(store)["ok-1"] == (5, 5, 0, 0)
    erp.dispose()


def test_a_write_in_doubt_the_erp_already_held_is_settled_without_claiming_a_write(
    sqlite_state_store: StateStore,
    tmp_path: Path,
    mm_simulator: MMSimulator,
    mm_client: MMClient,
    mm_settings: MMSettings,
) -> None:
    """The ERP connection was cut during the first write of a run MM still counts 0 for.

    The next cycle finds the labor ticket at 0, its blank value: erpsync never changed it. The doubt
    is settled, and 0 is not recorded as erpsync's write, which no audit row would back (the
    reliability campaign's audit invariant caught this).
    """
    store = sqlite_state_store
    erp = create_db_engine(f"sqlite:///{tmp_path / 'visual.db'}")
    create_visual_schema(erp)
    visual = VisualFixture(erp)
    visual.add_resource("MILL-1")
    visual.add_operation(visual.add_work_order("W100"), 10, "MILL-1")
    ticket = visual.clock_in(
        OperationKey(WorkOrderKey("W", "W100"), 10), datetime(2026, 3, 2, 6, 0), resource_id="MILL-1"
    )
    start_run(mm_client, "r1")
    mm_simulator.set_counts("r1", total=0)
    bind_run(
        store, "r1", run_key=f"LT{ticket}", in_doubt=[PartCounts(total=0, good=0, scrap=0, nonconform=0)]
    )

    run_writeback(
        SqlUnitOfWorkFactory(store),
        mm_client,
        VisualLaborTicketSink(erp),
        WritebackPolicy.from_settings(settings_for(str(erp.url), mm_settings)),
    )

    with store.session() as session:
        assert session.scalars(select(RunBinding.counts_in_doubt)).one() is None
    assert last_written(store) == {"r1": None}
    assert [a.outcome for a in audits(store)] == []
    assert [(row["GOOD_QTY"], row["BAD_QTY"]) for row in visual.tickets([ticket])] == [(0, 0)]
    erp.dispose()
