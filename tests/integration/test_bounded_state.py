"""A cycle's cost does not grow with history, on SQLite, PostgreSQL and MariaDB state.

- a no-change cycle writes nothing: no MM call, no audit row, no binding update, even with several
  open tickets on one machine (the ones that lose it are flagged once, not every cycle);
- a finished run the ERP still reports is recognised by its key (it is not among the bindings a
  cycle always loads) and never started twice;
- the leader lease is kept while the jobs are busy longer than its TTL (a saturated connection pool,
  a slow MM): its renewals have their own connections.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text, update

from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, RunBinding, SyncAction
from erpsync.runtime.leader import LeaderLease
from erpsync.runtime.scheduler import ScheduledJob
from erpsync.runtime.service import Service
from erpsync.runtime.term import FencingContext
from tests.integration.test_service_lifecycle import (
    InProcess,
    Serve,
    service_settings,
    wait_for,
)
from tests.integration.test_sync_e2e import Harness
from tests.sync_helpers import ERP_TZ, Shop, settings_for, write_config


def hours_ago(hours: float) -> datetime:
    """An ERP-local wall time (VISUAL stores naive local times) inside the closed-ticket lookback."""
    now = datetime.now(ZoneInfo(ERP_TZ)).replace(tzinfo=None, microsecond=0)
    return now - timedelta(hours=hours)


@pytest.fixture
def store(database_url: str) -> Iterator[StateStore]:
    store = StateStore(create_db_engine(database_url))
    migrate.upgrade(store.engine)
    yield store
    store.dispose()


def state_writes(store: StateStore) -> dict[str, Any]:
    """Everything a cycle could have written: row counts, and each binding's version and update time."""
    with store.session() as session:
        return {
            "audit": session.scalar(select(func.count()).select_from(AuditEntry)),
            "actions": session.scalar(select(func.count()).select_from(SyncAction)),
            "bindings": sorted(
                session.execute(select(RunBinding.run_key, RunBinding.version, RunBinding.updated_at)).all()
            ),
        }


def test_no_change_cycles_write_nothing_with_several_open_tickets_on_one_machine(
    database_url: str, store: StateStore, tmp_path: Path, mm_simulator: MMSimulator
) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=3)
    # a crew of three clocked in on HAAS-1's operation: one MM run; a finished run stays in the lookback
    crowded = [shop.fx.clock_in(shop.ops["HAAS-1"], hours_ago(h)) for h in (5, 4, 3)]
    shop.fx.clock_in(shop.ops["HAAS-2"], hours_ago(4))
    finished = shop.fx.clock_in(shop.ops["HAAS-3"], hours_ago(6))
    h = Harness(settings_for(erp_url, database_url, mm_simulator), store)
    first = h.sync()
    assert first.started == 3
    shop.fx.clock_out(finished, hours_ago(2))
    assert h.sync().stopped == 1
    h.sync()

    before, calls = state_writes(store), len(mm_simulator.calls())
    for _ in range(100):
        summary = h.sync()
        assert (summary.started, summary.stopped, summary.quarantined, summary.flagged) == (0, 0, 0, 0)
    assert len(mm_simulator.calls()) == calls, "a no-change cycle called MM"
    assert state_writes(store) == before, "a no-change cycle wrote audit rows, actions or bindings"

    with store.session() as session:
        superseded = session.scalars(
            select(AuditEntry.mm_run_id).where(AuditEntry.action == "superseded")
        ).all()
    assert superseded == [], "a crew on one operation is one run, nobody superseded"
    assert set(mm_simulator.runs()) == {f"erp:LT{crowded[0]}", f"erp:LT{crowded[2] + 1}", f"erp:LT{finished}"}
    shop.dispose()


def test_a_finished_run_the_erp_reports_again_is_recognised_never_restarted_under_its_id(
    database_url: str, store: StateStore, tmp_path: Path, mm_simulator: MMSimulator
) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=2)
    ticket = shop.fx.clock_in(shop.ops["HAAS-1"], hours_ago(5))
    h = Harness(settings_for(erp_url, database_url, mm_simulator), store)
    assert h.sync().started == 1
    shop.fx.clock_out(ticket, hours_ago(4))
    assert h.sync().stopped == 1

    service = h.service(None, None)  # type: ignore[arg-type]
    try:
        always_loaded, _ = service._load_state()
    finally:
        service.source.close()
    assert always_loaded == {}, "a finished binding is not among the bindings every cycle loads"

    # someone reopens the ticket (CLOCK_OUT back to NULL): its binding is finished, found by key,
    # and the ticket is shown again as the run's next generation (a new MM run id, domain/shop_floor.py)
    with shop.engine.begin() as conn:
        conn.execute(
            update(LABOR_TICKET)
            .where(LABOR_TICKET.c["TRANSACTION_ID"] == ticket)
            .values(CLOCK_OUT=None, ACT_CLOCK_OUT=None)
        )
    assert h.plan() == [("start_run", f"erp:LT{ticket}.g2")]
    assert h.sync().started == 1
    for _ in range(2):
        summary = h.sync()
        assert (summary.started, summary.stopped) == (0, 0)
    starts = [
        c["run_id"] for c in mm_simulator.calls() if c["operation"] == "start" and (c["status"] or 999) < 300
    ]
    assert starts == [f"erp:LT{ticket}", f"erp:LT{ticket}.g2"], "a run id was started twice"
    shop.dispose()


def test_the_lease_is_kept_while_a_job_holds_the_whole_pool_past_the_ttl(database_url: str) -> None:
    # a pool of one connection, held by a job for three lease TTLs: renewals must not queue behind it
    engine = create_db_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=60)
    migrate.upgrade(engine)
    store = StateStore(engine)
    settings = service_settings("busy")
    ttl = settings.service.lease_ttl_seconds
    seen: list[int] = []

    def jobs(fencing: FencingContext) -> list[ScheduledJob]:
        def busy(_flag: threading.Event) -> None:
            if seen:
                return
            with store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                time.sleep(3 * ttl)
            with store.session() as session:
                fencing.check(session)  # FencedError if the lease lapsed meanwhile
            seen.append(fencing.token)

        return [ScheduledJob("sync", busy, 0.2, 10 * ttl)]

    running = InProcess(Service(settings, store, jobs))
    try:
        wait_for(lambda: bool(seen), 10 * ttl, "the busy job to finish")
        assert running.service.is_leader()
        assert running.service.lease.status().token == 1, "the lease was lost and taken again"
    finally:
        assert running.stop() == 0
    assert seen == [1]


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_serve_keeps_its_lease_while_mm_answers_slower_than_the_ttl(
    database_url: str, store: StateStore, tmp_path: Path, mm_simulator: MMSimulator
) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=4)
    for op in shop.ops.values():
        shop.fx.clock_in(op, hours_ago(3))
    config = write_config(
        tmp_path / "erpsync.toml",
        erp_url,
        database_url,
        mm_simulator,
        sections={
            "sync": {"interval_seconds": 0.5},
            "writeback": {"sink": "visual-labor-ticket", "interval_seconds": 0.5},
        },
        max_concurrency=2,
    )
    mm_simulator.set_faults({"kind": "latency", "latency_ms": 2500})  # every MM call outlasts the 2 s TTL
    serve = Serve(config, "slow-mm", tmp_path)
    watcher = LeaderLease(store.engine, holder="test-watcher", ttl_seconds=1)
    try:
        wait_for(lambda: watcher.status().held, 30, "serve to lead")
        wait_for(lambda: len(mm_simulator.runs()) == 4, 60, "the four starts through the slow MM")
        time.sleep(6)  # write-back reads the runs through the slow MM too
        assert watcher.status().token == 1, "the lease lapsed and a new term began"
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(20) == 0
    finally:
        serve.kill()
    logs = serve.logs()
    assert "leader lease lost" not in logs
    assert "FencedError" not in logs
    assert '"level": "error"' not in logs
    shop.dispose()
