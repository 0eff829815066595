"""The state schema on every backend: upgrade, round-trip, models == migrations, append-only audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError

from erpsync.adapters.state import migrate
from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.machines import SqlMachines
from erpsync.adapters.state.rows import MACHINE_SEEN_RESOLUTION
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, Base, MachineSeen, RunBinding
from erpsync.observability.correlation import correlation

TABLES = {
    "erpsync_run_binding",
    "erpsync_action",
    "erpsync_checkpoint",
    "erpsync_quarantine",
    "erpsync_audit",
    "erpsync_leader",
    "erpsync_heartbeat",
    "erpsync_cycle",
    "erpsync_machine",
    "erpsync_sink_counts",
}
VIEWS = {
    "v_erpsync_recent_activity",
    "v_erpsync_failures",
    "v_erpsync_quarantine_open",
    "v_erpsync_open_runs",
    "v_erpsync_leader",
}


def test_upgrade_creates_tables_and_views_and_round_trips(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        migrate.upgrade(engine)
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) >= TABLES
        assert set(inspector.get_view_names()) >= VIEWS
        assert migrate.is_at_head(engine)
        migrate.downgrade(engine, "base")
        left = {t for t in inspect(engine).get_table_names() if t.startswith("erpsync_")}
        assert left == {"erpsync_alembic_version"}
        assert not (VIEWS & set(inspect(engine).get_view_names()))
        migrate.upgrade(engine)
        assert migrate.is_at_head(engine)
    finally:
        engine.dispose()


def test_models_and_migrations_agree(database_url: str) -> None:
    """The `alembic check` of our schema: autogenerate finds nothing to change."""
    engine = create_db_engine(database_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, type_, _: type_ != "table" or name.startswith("erpsync_"),
                },
            )
            diff = [
                d
                for d in compare_metadata(context, Base.metadata)
                if not (
                    isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "erpsync_alembic_version"
                )
            ]
        assert diff == []
    finally:
        engine.dispose()


def test_timestamps_come_back_as_aware_utc(state_store: StateStore) -> None:
    with correlation("cli") as cid, state_store.session() as session:
        record_audit(session, action="test", outcome="succeeded", erp_job="W/1/1/0/0")
    with state_store.session() as session:
        row = session.query(AuditEntry).one()
        assert row.occurred_at.tzinfo is not None
        assert abs((datetime.now(UTC) - row.occurred_at).total_seconds()) < 60
        assert row.correlation_id == cid
        assert row.triggered_by == "cli"


def _insert_audit(store: StateStore) -> None:
    with store.session() as session:
        record_audit(session, action="start_run", outcome="succeeded", mm_run_id="r1")


@pytest.mark.parametrize("backend", ["postgresql", "mariadb", "sqlite"], indirect=True)
def test_views_show_every_run_mm_may_have_open_and_counts_never_written(state_store: StateStore) -> None:
    # migration 0007: vanished and unconfirmed runs may be open in MM; implausible counts are failures
    statuses = ["starting", "running", "stopping", "stopped", "failed", "vanished", "unconfirmed"]
    with state_store.session() as session:
        for n, status in enumerate(statuses):
            session.add(
                RunBinding(
                    source="visual",
                    run_key=f"LT{n}",
                    mm_run_id=f"erp:LT{n}",
                    erp_job="1808412/1",
                    erp_operation="10",
                    erp_machine="HAAS-1",
                    mm_machine_id="haas-1",
                    status=status,
                )
            )
        record_audit(session, action="write_counts", outcome="implausible", mm_run_id="erp:LT1")
        record_audit(session, action="write_counts", outcome="succeeded", mm_run_id="erp:LT2")
    with state_store.engine.connect() as conn:
        open_runs = conn.execute(text("SELECT status FROM v_erpsync_open_runs")).scalars().all()
        failures = conn.execute(text("SELECT outcome FROM v_erpsync_failures")).scalars().all()
    assert sorted(open_runs) == ["running", "starting", "stopping", "unconfirmed", "vanished"]
    assert failures == ["implausible"]


@pytest.mark.parametrize("backend", ["postgresql", "mariadb", "sqlite"], indirect=True)
def test_audit_refuses_update(state_store: StateStore) -> None:
    _insert_audit(state_store)
    with pytest.raises(DBAPIError, match="append-only"), state_store.engine.begin() as conn:
        conn.execute(text("UPDATE erpsync_audit SET outcome = 'failed'"))


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_audit_refuses_delete_but_allows_the_purge(state_store: StateStore, backend: str) -> None:
    _insert_audit(state_store)
    with pytest.raises(DBAPIError, match="append-only"), state_store.engine.begin() as conn:
        conn.execute(text("DELETE FROM erpsync_audit"))
    with state_store.engine.begin() as conn:
        if backend == "postgresql":
            conn.execute(text("SET LOCAL erpsync.audit_purge = 'on'"))
        else:
            conn.execute(text("SET @erpsync_audit_purge = 1"))
        conn.execute(text("DELETE FROM erpsync_audit"))
        if backend == "mariadb":
            conn.execute(text("SET @erpsync_audit_purge = NULL"))
    with state_store.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM erpsync_audit")).scalar() == 0


def test_postgresql_refuses_truncate(pg_url: str) -> None:
    engine = create_db_engine(pg_url)
    try:
        migrate.upgrade(engine)
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text("TRUNCATE erpsync_audit"))
    finally:
        engine.dispose()


def test_machines_seen_are_inserted_updated_and_refreshed_at_most_every_resolution(
    state_store: StateStore,
) -> None:
    def seen() -> dict[str, tuple[str | None, int, datetime]]:
        with state_store.session() as session:
            return {
                m.erp_machine: (m.mm_machine_id, m.runs_seen, m.last_seen_at)
                for m in session.scalars(select(MachineSeen))
            }

    t0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
    with state_store.session() as session:
        SqlMachines(session).note({"M1": ("M1", 1), "M2": ("M2", 2)}, t0)
    assert seen() == {"M1": ("M1", 1, t0), "M2": ("M2", 2, t0)}

    soon = t0 + MACHINE_SEEN_RESOLUTION / 2  # unchanged machines keep last_seen_at; changes land
    with state_store.session() as session:
        SqlMachines(session).note({"M1": ("M1", 1), "M2": ("MILL-2", 3), "M3": (None, 1)}, soon)
    assert seen() == {"M1": ("M1", 1, t0), "M2": ("MILL-2", 3, soon), "M3": (None, 1, soon)}

    later = t0 + MACHINE_SEEN_RESOLUTION + timedelta(seconds=1)
    with state_store.session() as session:
        SqlMachines(session).note({"M1": ("M1", 1)}, later)
    assert seen()["M1"] == ("M1", 1, later)
    assert seen()["M2"][2] == soon  # not seen this cycle: untouched
