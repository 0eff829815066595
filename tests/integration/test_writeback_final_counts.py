"""Final counts of runs erpsync stops (issue 19, case 2), end to end.

A VISUAL ERP (SQLite, PostgreSQL) holds the labor tickets and the staging table; the sync stops
the MM run (simulator over loopback HTTP) when the ticket is clocked out; write-back then gets the
final counts into the staging table whatever the clock-out time, across outages, and gives up
(quarantined, with what to do) only when its final reads keep failing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text, update

from erpsync.adapters.erp.sinks.staging import StagingSink, install_staging, staging_table
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import Fault, MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.counts import SqlCounts
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import RunBinding
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.config import DatabaseSettings, Settings, WritebackSettings
from erpsync.domain.writeback_rules import FINAL_COUNTS_CLASS
from erpsync.service.sync import SyncSummary
from erpsync.service.writeback import WritebackPolicy, run_writeback
from erpsync.service.writeback_report import WritebackSummary
from tests.integration.writeback_support import TABLE, audits, bind_run, quarantine
from tests.sync_helpers import ERP_TZ, Shop, settings_for, sync_cycle

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

WINDOW = timedelta(minutes=10)  # writeback.settle_window_minutes


def local_now() -> datetime:
    """The ERP's wall clock now (VISUAL stores naive plant-local times)."""
    return datetime.now(ZoneInfo(ERP_TZ)).replace(tzinfo=None, microsecond=0)


def utc_of(local: datetime) -> datetime:
    return local.replace(tzinfo=ZoneInfo(ERP_TZ)).astimezone(UTC)


def mm_time(local: datetime) -> str:
    """How the simulator shows a time: UTC, milliseconds, Z."""
    return utc_of(local).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Plant:
    """A one-machine VISUAL shop with the staging table, its erpsync state, sync and write-back."""

    def __init__(self, erp_url: str, state_url: str, sim: MMSimulator, **writeback: Any) -> None:
        self.sim = sim
        self.shop = Shop(erp_url, machines=1)
        install_staging(self.shop.engine, TABLE)
        self.store = StateStore(create_db_engine(state_url))
        migrate.upgrade(self.store.engine)
        section = WritebackSettings(
            database=DatabaseSettings(url=erp_url), settle_window_minutes=10, **writeback
        )
        self.settings: Settings = settings_for(erp_url, state_url, sim).model_copy(
            update={"writeback": section}
        )
        self.sink = StagingSink(create_db_engine(erp_url), TABLE)

    def sync(self) -> SyncSummary:
        """One `erpsync sync` cycle: clock-ins start MM runs, clock-outs stop them."""
        return sync_cycle(self.settings, self.store)

    def writeback(self, at: datetime | None = None, **kw: Any) -> WritebackSummary:
        """One write-back cycle, as if run at `at` (default: now)."""
        with MMClient(self.settings.mm) as client:
            policy = WritebackPolicy.from_settings(self.settings)
            uow = SqlUnitOfWorkFactory(self.store)
            return run_writeback(uow, client, self.sink, policy, now=at, **kw)

    def clock_in(self, at: datetime) -> str:
        """A labor ticket clocked in on HAAS-1 and synced: the MM run id erpsync started."""
        ticket = self.shop.fx.clock_in(self.shop.ops["HAAS-1"], at, ticket_type="R")
        assert self.sync().started == 1
        return f"erp:LT{ticket}"

    def staging_row(self, run_id: str) -> dict[str, Any]:
        table = staging_table(TABLE)
        key = table.c.RUN_ID
        with self.shop.engine.connect() as conn:
            row = conn.execute(select(table).where(key == run_id)).one()
        return dict(row._mapping)

    def final_since(self, run_id: str) -> datetime | None:
        with self.store.session() as session:
            binding = session.scalars(select(RunBinding).where(RunBinding.mm_run_id == run_id)).one()
            return binding.final_counts_since

    def close(self) -> None:
        self.sink.close()
        self.store.dispose()
        self.shop.dispose()


@pytest.fixture
def plant(database_url: str, sqlite_url: str, mm_simulator: MMSimulator) -> Iterator[Plant]:
    p = Plant(database_url, sqlite_url, mm_simulator)
    yield p
    p.close()


def counts_of(row: dict[str, Any]) -> tuple[int, int, int]:
    return int(row["TOTAL_QTY"]), int(row["GOOD_QTY"]), int(row["SCRAP_QTY"])


def naive_utc(local: datetime) -> datetime:
    return utc_of(local).replace(tzinfo=None)


def stop_late(plant: Plant, run_id: str, clock_out: datetime) -> None:
    """The ticket's clock-out entered now (maybe hours late); the sync stops the MM run with it."""
    ticket = int(run_id.removeprefix("erp:LT"))
    plant.shop.fx.clock_out(ticket, clock_out, good_qty=0)
    assert plant.sync().stopped == 1
    assert plant.sim.runs()[run_id]["end_at"] == mm_time(clock_out)


def test_a_clock_out_entered_three_hours_late_gets_the_final_counts(plant: Plant) -> None:
    clock_in = local_now() - timedelta(hours=8)
    run_id = plant.clock_in(clock_in)
    plant.sim.set_counts(run_id, total=20, scrap=2)
    assert plant.writeback().written == 1
    assert counts_of(plant.staging_row(run_id)) == (20, 18, 2)

    plant.sim.set_counts(run_id, total=35, scrap=3)  # counted after the last write-back
    clock_out = local_now() - timedelta(hours=3)  # entered by a supervisor the next morning
    stop_late(plant, run_id, clock_out)
    assert plant.final_since(run_id) is not None  # from when erpsync stopped it

    final = plant.writeback()
    assert (final.read, final.written) == (1, 1)
    row = plant.staging_row(run_id)
    assert counts_of(row) == (35, 32, 3)
    assert row["MM_START_AT"] == naive_utc(clock_in) and row["MM_END_AT"] == naive_utc(clock_out)
    audit = audits(plant.store, outcome="written")[-1]
    assert audit.mm_run_id == run_id and json.loads(audit.after_json or "{}")["TOTAL_QTY"] == 35
    assert json.loads(audit.before_json or "{}")["TOTAL_QTY"] == 20

    mm_run = plant.sim.runs()[run_id]  # MM: stopped with the late endAt, counts untouched
    assert (mm_run["start_at"], mm_run["end_at"]) == (mm_time(clock_in), mm_time(clock_out))
    assert mm_run["metrics"]["totalParts"] == 35

    settled = plant.writeback(datetime.now(UTC) + WINDOW + timedelta(minutes=1))
    assert (settled.read, settled.unchanged) == (1, 1) and plant.final_since(run_id) is None
    assert plant.writeback(datetime.now(UTC) + WINDOW * 2).read == 0  # done: not read again
    assert len(audits(plant.store, outcome="written")) == 2 and quarantine(plant.store) == []


def test_an_outage_longer_than_the_window_still_writes_the_final_counts(plant: Plant) -> None:
    run_id = plant.clock_in(local_now() - timedelta(hours=4))
    plant.sim.set_counts(run_id, total=10)
    plant.writeback()
    plant.sim.set_counts(run_id, total=18)
    clock_out = local_now() - timedelta(minutes=1)
    stop_late(plant, run_id, clock_out)

    back = datetime.now(UTC) + timedelta(hours=2)  # write-back (or MM) was away two hours
    after_outage = plant.writeback(back)
    assert (after_outage.read, after_outage.written) == (1, 1)
    row = plant.staging_row(run_id)
    assert counts_of(row) == (18, 18, 0) and row["MM_END_AT"] == naive_utc(clock_out)
    assert [a.outcome for a in audits(plant.store)] == ["written", "written"]
    assert plant.writeback(back + WINDOW).unchanged == 1 and plant.final_since(run_id) is None


def test_a_failing_final_read_keeps_the_run_until_it_succeeds(plant: Plant) -> None:
    run_id = plant.clock_in(local_now() - timedelta(hours=4))
    plant.sim.set_counts(run_id, total=10)
    plant.writeback()
    plant.sim.set_counts(run_id, total=14)
    stop_late(plant, run_id, local_now() - timedelta(minutes=1))
    plant.sim.set_faults(Fault(kind="error", operations=frozenset({"get"}), status=503))

    now = datetime.now(UTC)
    for minutes in (60, 90):
        failing = plant.writeback(now + timedelta(minutes=minutes))
        assert (failing.read, failing.no_data, failing.unreachable) == (1, 1, 1)
        assert counts_of(plant.staging_row(run_id)) == (10, 10, 0)
        assert plant.final_since(run_id) is not None
    [no_data] = audits(plant.store, outcome="no_data")  # audited once, not every cycle
    assert no_data.mm_run_id == run_id and no_data.http_status == 503

    plant.sim.set_faults()  # MM answers again
    back = plant.writeback(now + timedelta(minutes=100))
    assert back.written == 1 and counts_of(plant.staging_row(run_id)) == (14, 14, 0)
    assert plant.writeback(now + timedelta(minutes=111)).unchanged == 1
    assert plant.final_since(run_id) is None and quarantine(plant.store) == []


def test_final_reads_failing_past_the_limit_are_quarantined_with_a_reason(
    database_url: str, sqlite_url: str, mm_simulator: MMSimulator
) -> None:
    plant = Plant(database_url, sqlite_url, mm_simulator, final_counts_max_hours=2)
    try:
        run_id = plant.clock_in(local_now() - timedelta(hours=4))
        plant.sim.set_counts(run_id, total=10)
        plant.writeback()
        plant.sim.set_counts(run_id, total=14)
        stop_late(plant, run_id, local_now() - timedelta(minutes=1))
        plant.sim.set_faults(Fault(kind="error", operations=frozenset({"get"}), status=503))

        now = datetime.now(UTC)
        assert plant.writeback(now + timedelta(hours=1)).final_quarantined == 0
        given_up = plant.writeback(now + timedelta(hours=2, minutes=1))
        assert given_up.final_quarantined == 1 and plant.final_since(run_id) is None
        [entry] = quarantine(plant.store)
        assert (entry.record_key, entry.error_class, entry.status) == (run_id, FINAL_COUNTS_CLASS, "open")
        assert f"final part counts of MM run {run_id}" in entry.message
        assert f"erpsync writeback --run {run_id}" in entry.message and "503" in entry.message
        [gave_up] = audits(plant.store, outcome="quarantined")
        assert gave_up.mm_run_id == run_id and gave_up.error_class == FINAL_COUNTS_CLASS
        assert counts_of(plant.staging_row(run_id)) == (10, 10, 0)  # nothing guessed
        assert plant.writeback(now + timedelta(hours=3)).read == 0  # bounded: no longer read

        plant.sim.set_faults()  # what the reason says: once MM answers, write-back --run
        by_hand = plant.writeback(run_id=run_id)
        assert by_hand.written == 1 and counts_of(plant.staging_row(run_id)) == (14, 14, 0)
        assert [e.status for e in quarantine(plant.store)] == ["resolved"]
    finally:
        plant.close()


def test_staging_gets_mm_end_at_when_a_run_ends_with_unchanged_counts(plant: Plant) -> None:
    run_id = plant.clock_in(local_now() - timedelta(hours=4))
    plant.sim.set_counts(run_id, total=10, scrap=1)
    plant.writeback()
    first = plant.staging_row(run_id)
    assert counts_of(first) == (10, 9, 1) and first["MM_END_AT"] is None

    clock_out = local_now() - timedelta(minutes=2)
    stop_late(plant, run_id, clock_out)
    within = plant.writeback()
    assert within.unchanged == 1 and plant.staging_row(run_id)["MM_END_AT"] is None

    final = plant.writeback(datetime.now(UTC) + WINDOW + timedelta(minutes=1))
    assert final.written == 1 and plant.final_since(run_id) is None
    row = plant.staging_row(run_id)
    assert counts_of(row) == (10, 9, 1) and row["MM_END_AT"] == naive_utc(clock_out)
    assert row["UPDATED_AT"] > first["UPDATED_AT"]
    audit = audits(plant.store, outcome="written")[-1]
    assert json.loads(audit.before_json or "{}")["MM_END_AT"] is None
    assert json.loads(audit.after_json or "{}")["MM_END_AT"] == naive_utc(clock_out).isoformat()
    assert "MM_END_AT set" in (audit.detail or "")
    assert plant.writeback(datetime.now(UTC) + WINDOW * 2).read == 0


def test_no_change_cycle_reads_only_open_and_due_runs(plant: Plant) -> None:
    """Finished runs are never read again: the candidate query is bounded by what can change."""
    run_id = plant.clock_in(local_now() - timedelta(hours=4))
    plant.sim.set_counts(run_id, total=3)
    plant.writeback()
    stop_late(plant, run_id, local_now() - timedelta(minutes=1))
    plant.writeback(datetime.now(UTC) + WINDOW)
    assert plant.final_since(run_id) is None
    before = len(plant.sim.calls())
    assert plant.writeback().read == 0 and len(plant.sim.calls()) == before


def test_migration_0006_keeps_recently_stopped_runs_due(database_url: str) -> None:
    """An upgrade loses no final counts: runs stopped within the last day stay candidates."""
    engine = create_db_engine(database_url)
    try:
        migrate.upgrade(engine, "0005")
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        rows = [
            ("recent", "stopped", now - timedelta(minutes=5)),
            ("old", "stopped", now - timedelta(days=3)),
            ("open", "running", now - timedelta(minutes=5)),
        ]
        with engine.begin() as conn:
            for run_id, status, updated in rows:
                conn.execute(
                    text(
                        "INSERT INTO erpsync_run_binding (source, run_key, mm_run_id, erp_job, "
                        "erp_operation, erp_machine, mm_machine_id, status, in_setup, key_generation, "
                        "created_at, updated_at, version) VALUES ('erp', :id, :id, 'J', '10', 'M', 'M', "
                        ":status, false, '', :at, :at, 1)"
                    ),
                    {"id": run_id, "status": status, "at": updated},
                )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            marks = dict(
                conn.execute(text("SELECT mm_run_id, final_counts_since FROM erpsync_run_binding")).all()
            )
        assert marks["recent"] is not None and marks["old"] is None and marks["open"] is None
    finally:
        engine.dispose()


def test_a_marker_moved_meanwhile_is_not_overwritten(state_store: StateStore) -> None:
    """A stop settled while a cycle ran (re-started, stopped again) keeps its own final read."""
    first, again = datetime(2026, 12, 7, 8, tzinfo=UTC), datetime(2026, 12, 7, 9, tzinfo=UTC)
    bind_run(state_store, "r1", status="stopped", final_since=first)
    with state_store.session() as session:
        [target] = SqlCounts(session).targets("staging", run_id="r1")
        session.execute(update(RunBinding).values(final_counts_since=again))  # the sync, meanwhile
        SqlCounts(session).set_final_since([(target, None)])  # the cycle's view: done
        session.commit()
    with state_store.session() as session:
        assert session.scalar(select(RunBinding.final_counts_since)) == again
        [target] = SqlCounts(session).targets("staging", run_id=None)
        SqlCounts(session).set_final_since([(target, None)])
        session.commit()
        assert session.scalar(select(RunBinding.final_counts_since)) is None
