"""The reconciler end to end: a VISUAL ERP (SQLite, PostgreSQL), the simulator over HTTP, real lease."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select

from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, MachineSeen, QuarantineEntry, RunBinding, SyncAction
from erpsync.adapters.state.uow import SqlUnitOfWork
from erpsync.bootstrap import open_sync
from erpsync.config import Settings
from erpsync.domain.errors import ErpsyncError
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import BadRecord, JobOperationRun
from erpsync.observability.correlation import correlation
from erpsync.runtime.cli_lease import held_lease
from erpsync.service import quarantine as quarantine_service
from erpsync.service.resync import Selection, run_resync
from erpsync.service.sync import SyncService, SyncSummary
from tests.sync_helpers import Shop, assert_converged, local, settings_for, sync_cycle


@pytest.fixture
def state(sqlite_url: str) -> Iterator[StateStore]:
    store = StateStore(create_db_engine(sqlite_url))
    migrate.upgrade(store.engine)
    yield store
    store.dispose()


class Harness:
    """One sync actor: settings, MM client, lease, service, like `erpsync sync` builds them."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store

    def sync(self) -> SyncSummary:
        return sync_cycle(self.settings, self.store)

    def plan(self) -> list[tuple[str, str]]:
        service = open_sync(self.settings, self.store, None, None)
        try:
            return [(str(a.kind), a.mm_run_id) for a in service.compute_plan().plan.actions]
        finally:
            service.source.close()

    def service(self, client: MMClient, fence: object) -> SyncService:
        return open_sync(self.settings, self.store, fence, client)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_clock_ins_become_runs_and_clock_outs_stop_them(
    database_url: str, state: StateStore, sqlite_url: str, mm_simulator: MMSimulator
) -> None:
    shop = Shop(database_url, machines=2)
    h = Harness(settings_for(database_url, sqlite_url, mm_simulator), state)
    t1 = shop.fx.clock_in(shop.ops["HAAS-1"], local(8, 0), ticket_type="R")
    t2 = shop.fx.clock_in(shop.ops["HAAS-2"], local(9, 15), ticket_type="S")

    planned = h.plan()
    assert sorted(planned) == [("start_run", "erp:LT1"), ("start_run", "erp:LT2")]
    summary = h.sync()
    assert (summary.started, summary.stopped, summary.quarantined) == (2, 0, 0)
    runs = mm_simulator.runs()
    assert set(runs) == {run_id for _, run_id in planned}  # plan matches what sync did
    one = runs["erp:LT1"]
    assert one["machine_id"] == "HAAS-1"
    assert one["job_name"] == "1808401/1"
    assert one["part_name"] == "P-100"
    assert one["start_at"] == "2026-11-20T14:00:00.000Z"  # 08:00 CST = 14:00 UTC
    assert one["part_time_ms"] == 180_000  # 0.05 HRS/PC
    assert one["phase"] == "production"
    assert runs["erp:LT2"]["phase"] == "setup"

    shop.fx.clock_out(t1, local(11, 30), good_qty=60)
    summary = h.sync()
    assert (summary.started, summary.stopped) == (0, 1)
    assert mm_simulator.runs()["erp:LT1"]["end_at"] == "2026-11-20T17:30:00.000Z"

    before = len(mm_simulator.calls())
    assert h.plan() == []
    summary = h.sync()
    assert (summary.started, summary.stopped) == (0, 0)
    assert len(mm_simulator.calls()) == before  # a no-change cycle makes no API call

    assert_converged(mm_simulator, state, {"erp:LT2": "HAAS-2"}, {"erp:LT1"})
    with state.session() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.mm_run_id == "erp:LT1")).all()
        assert [(r.action, r.outcome) for r in rows] == [
            ("start_run", "succeeded"),
            ("stop_run", "succeeded"),
        ]
        assert all(r.erp_machine == "HAAS-1" and r.erp_job == "1808401/1" for r in rows)
        assert all(r.triggered_by == "cli" and r.correlation_id for r in rows)
    shop.dispose()
    assert t2


def test_next_run_on_a_machine_stops_the_previous_one_first(
    sqlite_url: str, state: StateStore, mm_simulator: MMSimulator, tmp_path: Path
) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=1)
    h = Harness(settings_for(erp_url, sqlite_url, mm_simulator), state)
    first = shop.fx.clock_in(shop.ops["HAAS-1"], local(7, 0))
    h.sync()
    shop.fx.clock_out(first, local(10, 0))
    shop.fx.clock_in(shop.ops["HAAS-1"], local(10, 5))
    h.sync()
    ops = [(c["operation"], c["run_id"]) for c in mm_simulator.calls() if c["operation"] in ("start", "stop")]
    assert ops == [("start", "erp:LT1"), ("stop", "erp:LT1"), ("start", "erp:LT2")]
    assert mm_simulator.runs()["erp:LT1"]["end_at"] == "2026-11-20T16:00:00.000Z"
    assert_converged(mm_simulator, state, {"erp:LT2": "HAAS-1"}, {"erp:LT1"})


def test_unknown_machine_is_quarantined_without_failing_the_cycle(
    state: StateStore, sqlite_url: str, tmp_path: Path
) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=2)
    with MMSimulator(machines={"HAAS-1"}, seed=7) as sim:
        h = Harness(settings_for(erp_url, sqlite_url, sim), state)
        shop.fx.clock_in(shop.ops["HAAS-1"], local(8))
        shop.fx.clock_in(shop.ops["HAAS-2"], local(8))
        summary = h.sync()
        assert (summary.started, summary.quarantined) == (1, 1)
        with state.session() as session:
            entry = session.scalars(select(QuarantineEntry)).one()
            assert entry.status == "open" and "HAAS-2" in (entry.raw_payload or "")
            machine = session.get(MachineSeen, "HAAS-2")
            assert machine is not None and machine.rejected_at is not None
            entry_id = entry.id
        calls = len(sim.calls())
        h.sync()  # the rejected machine is not hammered every cycle
        assert len(sim.calls()) == calls

        sim.set_machines({"HAAS-1", "HAAS-2"})  # IT fixed the ERP Machine ID in MM
        with correlation("cli"), state.session() as session:
            quarantine_service.retry(SqlUnitOfWork(session), entry_id)
        summary = h.sync()
        assert summary.recovered == 1
        assert_converged(sim, state, {"erp:LT1": "HAAS-1", "erp:LT2": "HAAS-2"}, set())
    shop.dispose()


def test_apply_then_fail_429_and_5xx_converge_without_duplicates(
    state: StateStore, sqlite_url: str, tmp_path: Path
) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=4)
    with MMSimulator(seed=11) as sim:
        h = Harness(settings_for(erp_url, sqlite_url, sim, max_attempts=2), state)
        tickets = {m: shop.fx.clock_in(op, local(6)) for m, op in shop.ops.items()}
        sim.set_faults(
            {"kind": "apply_then_fail", "operations": ["start", "stop"], "probability": 0.5},
            {"kind": "rate_limit", "retry_after": 0.01, "probability": 0.2},
            {"kind": "error", "status": 503, "probability": 0.2},
            seed=3,
        )
        h.sync()
        for machine in ("HAAS-1", "HAAS-3"):
            shop.fx.clock_out(tickets[machine], local(9))
        for _ in range(6):
            h.sync()
        sim.set_faults()
        for _ in range(3):
            _due_now(state)
            h.sync()
        assert_converged(sim, state, {"erp:LT2": "HAAS-2", "erp:LT4": "HAAS-4"}, {"erp:LT1", "erp:LT3"})
        faults = [c for c in sim.calls() if c["fault"]]
        assert any(c["fault"] == "apply_then_fail" for c in faults)
    shop.dispose()


def _due_now(state: StateStore) -> None:
    """Make backed-off retries due (a test does not wait minutes for exponential backoff)."""
    with state.session() as session:
        session.execute(
            SyncAction.__table__.update()
            .where(SyncAction.status == "failed_retryable")
            .values(next_attempt_at=None)
        )


def test_resync_heals_runs_mm_lost_through_their_next_generation(
    state: StateStore, sqlite_url: str, tmp_path: Path
) -> None:
    """MM lost every run: resync finds it (a sync cannot: the bindings say running) and records them
    stopped (missing_in_mm); the next sync starts each ticket's next run generation, never the old
    id again (MM would count from 0 and the ERP lose what was written)."""
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=2)
    with MMSimulator(seed=5) as sim:
        settings = settings_for(erp_url, sqlite_url, sim)
        h = Harness(settings, state)
        first = shop.fx.clock_in(shop.ops["HAAS-1"], local(8))
        shop.fx.clock_in(shop.ops["HAAS-2"], local(8))
        h.sync()
        sim.reset()  # MM lost everything
        assert h.plan() == []  # a normal sync cannot see it: bindings say running
        with MMClient(settings.mm) as client, correlation("cli"), held_lease(settings, state) as fence:
            service = h.service(client, fence)
            dry = run_resync(service, Selection(machine="HAAS-1"), dry_run=True)
            assert dry.planned.plan.actions == []
            assert [(f.kind, f.mm_run_id) for f in dry.planned.plan.flags] == [("missing_in_mm", "erp:LT1")]
            done = run_resync(service, Selection(everything=True), dry_run=False)
            service.source.close()
        assert done.summary is not None and (done.summary.started, done.summary.flagged) == (0, 2)
        assert sim.runs() == {}
        assert h.sync().started == 2
        assert_converged(sim, state, {"erp:LT1.g2": "HAAS-1", "erp:LT2.g2": "HAAS-2"}, set())
        shop.fx.clock_out(first, local(12))
        assert h.sync().stopped == 1
        assert_converged(sim, state, {"erp:LT2.g2": "HAAS-2"}, {"erp:LT1.g2"})
    shop.dispose()


def test_resync_sends_the_switch_of_a_vanished_run_mm_has_in_setup(
    database_url: str, state_store: StateStore, mm_simulator: MMSimulator, tmp_path: Path
) -> None:
    """Started in setup, vanished (flagged, left open), back in the ERP as a run ticket: resync
    finds the run open in MM and switches it to production; a later sync has nothing to do."""
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=1)
    settings = settings_for(erp_url, database_url, mm_simulator)
    assert settings.sync.vanished_runs == "flag"
    h = Harness(settings, state_store)
    ticket = shop.fx.clock_in(shop.ops["HAAS-1"], local(8), ticket_type="S")
    assert h.sync().started == 1
    this = LABOR_TICKET.c["TRANSACTION_ID"] == ticket
    with shop.engine.begin() as conn:  # someone deletes the ticket...
        row = dict(conn.execute(select(LABOR_TICKET).where(this)).mappings().one())
        conn.execute(delete(LABOR_TICKET).where(this))
    assert h.sync().flagged == 1
    with shop.engine.begin() as conn:  # ...and restores it as a run ticket
        conn.execute(insert(LABOR_TICKET).values(**{**row, "TYPE": "R"}))
    assert h.plan() == []  # the vanished binding is terminal for a sync: resync is the way back
    with MMClient(settings.mm) as client, correlation("cli"), held_lease(settings, state_store) as fence:
        service = h.service(client, fence)
        done = run_resync(service, Selection(run="LT1"), dry_run=False)
        service.source.close()
    assert [(a.kind, a.mm_run_id, a.in_setup) for a in done.planned.plan.actions] == [
        ("start_run", "erp:LT1", False)
    ]
    run = mm_simulator.runs()["erp:LT1"]
    assert (run["phase"], run["started_in_setup"], run["end_at"]) == ("production", True, None)
    with state_store.session() as session:
        bound = session.scalars(select(RunBinding)).one()
        assert (bound.status, bound.in_setup) == ("running", False)
    assert h.sync().started == 0 and h.plan() == []
    assert_converged(mm_simulator, state_store, {"erp:LT1": "HAAS-1"}, set())
    shop.dispose()


def test_a_second_actor_is_refused_while_the_lease_is_held(
    state: StateStore, sqlite_url: str, mm_simulator: MMSimulator, tmp_path: Path
) -> None:
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    Shop(erp_url, machines=1).dispose()
    settings = settings_for(erp_url, sqlite_url, mm_simulator)
    with held_lease(settings, state), pytest.raises(ErpsyncError, match="another erpsync instance leads"):
        Harness(settings, state).sync()


def test_retry_replans_from_the_erp_as_it_is_now(state: StateStore, sqlite_url: str, tmp_path: Path) -> None:
    """A refused start retried after the ERP changed: a bad row, an ignored machine, an ended run."""
    erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    shop = Shop(erp_url, machines=1)
    ticket = shop.fx.clock_in(shop.ops["HAAS-1"], local(8))
    with MMSimulator(machines={"OTHER"}, seed=8) as sim:
        settings = settings_for(erp_url, sqlite_url, sim)
        h = Harness(settings, state)
        assert h.sync().quarantined == 1
        with state.session() as session:
            entry_id = session.scalars(select(QuarantineEntry.id)).one()
        service = open_sync(settings, state, None, None)
        source = service.source

        def current(run_key: str) -> JobOperationRun | BadRecord | None:
            return next(iter(source.lookup_runs([run_key])), None)

        def entry_and_action() -> tuple[str, str]:
            with state.session() as session:
                entry = session.get(QuarantineEntry, entry_id)
                assert entry is not None and entry.action_id is not None
                action = session.get(SyncAction, entry.action_id)
                assert action is not None
                return entry.status, action.status

        def bad(run_key: str) -> BadRecord:
            return BadRecord("erp", run_key, "RESOURCE_ID is blank", field="RESOURCE_ID")

        # the ERP row is bad now: nothing changes, the person is told what to fix
        with pytest.raises(ErpsyncError, match="RESOURCE_ID is blank"), state.session() as session:
            quarantine_service.retry(
                SqlUnitOfWork(session), entry_id, lookup=bad, mapper=service.policy.mapper
            )
        assert entry_and_action() == ("open", "quarantined")

        # the resource was put in machines.ignore: nothing to start, the entry is settled
        ignoring = MachineMapper(ignore=["HAAS-1"])
        with correlation("cli"), state.session() as session:
            what = quarantine_service.retry(SqlUnitOfWork(session), entry_id, lookup=current, mapper=ignoring)
        assert "machines.ignore" in what and "nothing to start" in what
        assert entry_and_action() == ("resolved", "quarantined")
        source.close()
        assert h.sync().started == 0 and sim.runs() == {}

        # MM learns the machine, the ERP ends the run, the entry is retried: nothing is started
        with state.session() as session:
            entry = session.get(QuarantineEntry, entry_id)
            assert entry is not None
            entry.status = "open"
        shop.fx.clock_out(ticket, local(9))
        service = open_sync(settings, state, None, None)
        with correlation("cli"), state.session() as session:
            what = quarantine_service.retry(
                SqlUnitOfWork(session), entry_id, lookup=current, mapper=service.policy.mapper
            )
        service.source.close()
        assert "ended" in what and "nothing to start" in what
        sim.set_machines({"HAAS-1"})
        assert h.sync().started == 0 and sim.runs() == {}
    shop.dispose()
