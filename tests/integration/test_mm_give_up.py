"""Issue #15 cases 2, 3 and 4: give up only after reading MM, end to end.

A VISUAL ERP (SQLite), the MM simulator over loopback HTTP, behind the misbehaving proxy
(tests/mm_proxy.py) where a case needs an answer MM itself never gives, and real sync cycles on
every state backend. Each test asserts what MM holds afterwards (open/ended, endAt), the journal,
the binding and the audit, and that the next cycles converge: no run left open in MM that the ERP
closed, no start recorded as succeeded that MM does not have.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.simulator import Fault, MMSimulator
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding, SyncAction
from erpsync.config import ServiceSettings, Settings, SourceSettings, StateSettings
from erpsync.config.sync import SyncSettings
from erpsync.service.sync import SyncSummary
from tests.fixtures_mm import fast_mm_settings
from tests.mm_proxy import JSON, MisbehavingProxy, Rule
from tests.sync_helpers import ERP_TZ, Shop, run_erpsync, sync_cycle, write_config

DAY = (datetime.now(ZoneInfo(ERP_TZ)) - timedelta(days=1)).date()  # closed tickets stay in the lookback
RUN = "erp:LT1"
NOT_FOUND = b'{"code":"NotFound","message":"Job run not found","errors":[]}'
CONFLICT = b'{"code":"Conflict","message":"Job run conflicts with an existing one","errors":[]}'


def local(hour: int, minute: int = 0) -> datetime:
    """A naive ERP-local wall time (VISUAL stores local times)."""
    return datetime.combine(DAY, time(hour, minute))


def utc(hour: int, minute: int = 0) -> str:
    """That time as the simulator shows it."""
    at = local(hour, minute).replace(tzinfo=ZoneInfo(ERP_TZ)).astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class World:
    """One machine (HAAS-1) in a VISUAL shop, erpsync talking to MM through the proxy."""

    def __init__(
        self, erp_url: str, state_url: str, store: StateStore, sim: MMSimulator, proxy: MisbehavingProxy
    ) -> None:
        self.shop = Shop(erp_url, machines=1)
        self.op = self.shop.ops["HAAS-1"]
        self.sim, self.proxy, self.store = sim, proxy, store
        self.erp_url, self.state_url = erp_url, state_url
        self.settings = self.with_attempts(1)

    def with_attempts(self, attempts: int) -> Settings:
        """Settings with `sync.max_action_attempts` = attempts (1: the first failure is the last)."""
        self.settings = Settings(
            state=StateSettings(url=self.state_url),
            mm=fast_mm_settings(self.proxy.url, self.sim.api_key),
            source=SourceSettings(kind="infor-visual", url=self.erp_url, timezone=ERP_TZ),
            service=ServiceSettings(lease_ttl_seconds=5, lease_renew_seconds=1, lease_retry_seconds=0.5),
            sync=SyncSettings(max_action_attempts=attempts),
        )
        return self.settings

    def sync(self) -> SyncSummary:
        return sync_cycle(self.settings, self.store)

    def run(self) -> dict[str, Any]:
        return self.sim.runs()[RUN]

    def mm_calls(self, operation: str) -> int:
        return sum(1 for c in self.sim.calls() if c["operation"] == operation)

    def journal(self) -> dict[str, str]:
        with self.store.session() as session:
            return {a.idempotency_key: a.status for a in session.scalars(select(SyncAction))}

    def binding(self) -> tuple[str, bool, datetime | None]:
        with self.store.session() as session:
            bound = session.scalars(select(RunBinding).where(RunBinding.mm_run_id == RUN)).one()
            end = bound.mm_end_at.replace(tzinfo=UTC) if bound.mm_end_at is not None else None
            return bound.status, bound.in_setup, end

    def audit(self, action: str) -> list[AuditEntry]:
        with self.store.session() as session:
            query = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            return list(session.scalars(query))

    def quarantined(self) -> list[QuarantineEntry]:
        with self.store.session() as session:
            return list(session.scalars(select(QuarantineEntry).where(QuarantineEntry.status == "open")))

    def due_now(self) -> None:
        """Backoffs run out: retryable actions are due in the next cycle."""
        with self.store.session() as session:
            session.execute(
                update(SyncAction).where(SyncAction.status == "failed_retryable").values(next_attempt_at=None)
            )

    def production(self, ticket: int) -> None:
        """The setup ticket becomes a run ticket: the ERP moves the run to production."""
        with self.shop.engine.begin() as conn:
            conn.execute(update(LABOR_TICKET).where(ticket == LABOR_TICKET.c.TRANSACTION_ID).values(TYPE="R"))

    def assert_converged(self, *, open_in_erp: bool, mm_lost_it: bool = False) -> None:
        """Two more cycles send nothing; MM agrees with the ERP; no succeeded start MM lacks
        (unless the test made MM lose the run afterwards)."""
        calls = len(self.sim.calls())
        for _ in range(2):
            summary = self.sync()
            assert (summary.started, summary.stopped, summary.retried) == (0, 0, 0), summary
        assert [c for c in self.sim.calls()[calls:] if c["operation"] != "get"] == []
        runs = self.sim.runs()
        if open_in_erp:
            assert runs[RUN]["end_at"] is None
        else:
            assert all(r["end_at"] is not None for r in runs.values()), runs
        started = [k for k, s in self.journal().items() if k.startswith("start_run") and s == "succeeded"]
        assert mm_lost_it or not started or RUN in runs


@pytest.fixture
def world(
    database_url: str, state_store: StateStore, mm_simulator: MMSimulator, tmp_path: Path
) -> Iterator[World]:
    with MisbehavingProxy(mm_simulator.base_url) as proxy:
        here = World(f"sqlite:///{tmp_path / 'erp.db'}", database_url, state_store, mm_simulator, proxy)
        yield here
        here.shop.dispose()


# -- case 2: ghost start, then give-up -----------------------------------------------------------
def test_a_ghost_start_given_up_is_settled_by_a_read_and_stopped_at_the_clock_out(world: World) -> None:
    world.sim.set_faults(Fault("apply_then_fail", operations=frozenset({"start"})))
    ticket = world.shop.fx.clock_in(world.op, local(8))

    summary = world.sync()

    assert (summary.started, summary.quarantined) == (1, 0)
    assert (world.run()["end_at"], world.run()["start_at"]) == (None, utc(8))
    assert world.journal() == {f"start_run:{RUN}:production": "succeeded"}
    assert world.binding()[0] == "running"
    (row,) = world.audit("start_run")
    assert row.outcome == "succeeded" and row.detail is not None
    assert (
        row.detail.startswith("settled by a read after 1 failed attempts") and "MM has the run" in row.detail
    )
    assert json.loads(row.after_json or "{}")["settled_by"] == "read"
    assert world.quarantined() == []

    world.sim.set_faults()
    world.shop.fx.clock_out(ticket, local(11))
    assert world.sync().stopped == 1
    assert world.run()["end_at"] == utc(11)
    assert world.binding()[0] == "stopped"
    world.assert_converged(open_in_erp=False)


@pytest.mark.parametrize("mm_took_it", [True, False], ids=["ghost", "never-reached"])
def test_a_start_given_up_with_mm_unreadable_is_unconfirmed_and_still_stopped(
    world: World, mm_took_it: bool
) -> None:
    start_fault = Fault(
        "apply_then_fail" if mm_took_it else "error", operations=frozenset({"start"}), status=503
    )
    world.sim.set_faults(start_fault, Fault("error", operations=frozenset({"get"}), status=503))
    ticket = world.shop.fx.clock_in(world.op, local(8))

    summary = world.sync()

    assert (summary.started, summary.quarantined) == (0, 1)
    assert (RUN in world.sim.runs()) is mm_took_it
    assert world.journal() == {f"start_run:{RUN}:production": "failed_permanent"}
    assert world.binding()[0] == "unconfirmed"
    (row,) = world.audit("start_run")
    assert row.outcome == "failed" and "could not be read either" in (row.error_message or "")
    assert "may have the run" in (row.detail or "")
    assert len(world.quarantined()) == 1

    world.sim.set_faults()
    starts = world.mm_calls("start")
    for _ in range(2):  # never started again by a sync while the ERP has it open
        assert world.sync().started == 0
    assert world.mm_calls("start") == starts
    assert world.binding()[0] == "unconfirmed"

    world.shop.fx.clock_out(ticket, local(11))
    assert world.sync().stopped == 1

    assert world.binding()[0] == "stopped"
    if mm_took_it:
        assert world.run()["end_at"] == utc(11)
        assert [r.outcome for r in world.audit("stop_run")] == ["succeeded"]
    else:  # MM's own 404, confirmed by a read: nothing to stop
        assert world.sim.runs() == {}
        (stop,) = world.audit("stop_run")
        assert (stop.outcome, stop.http_status) == ("noop", 404)
        assert "a read confirms it has no such run" in (stop.detail or "")
    world.assert_converged(open_in_erp=False)


# -- case 3: a 404 to a stop ------------------------------------------------------------------------
@pytest.mark.parametrize("times", [None, 1], ids=["until-cleared", "once"])
def test_a_404_to_a_stop_of_a_run_mm_has_open_is_sent_again_until_mm_ends_it(
    world: World, times: int | None
) -> None:
    world.with_attempts(3)
    ticket = world.shop.fx.clock_in(world.op, local(8))
    assert world.sync().started == 1
    world.proxy.arm(Rule("stop", status=404, body=NOT_FOUND, content_type=JSON, times=times))
    world.shop.fx.clock_out(ticket, local(11))

    summary = world.sync()

    assert (summary.stopped, summary.retried) == (0, 1)
    assert world.run()["end_at"] is None  # MM never saw the stop
    assert world.journal()[f"stop_run:{RUN}"] == "failed_retryable"
    assert world.binding()[0] == "stopping"
    (row,) = world.audit("stop_run")
    assert (row.outcome, row.http_status) == ("retrying", 404)
    assert "a read shows the run open" in (row.error_message or "")
    assert "not settled: the stop is sent again" in (row.error_message or "")

    if times is None:
        world.proxy.clear()
    world.due_now()
    summary = world.sync()

    assert summary.recovered == 1
    assert world.run()["end_at"] == utc(11)
    assert world.journal()[f"stop_run:{RUN}"] == "succeeded"
    status, _, mm_end = world.binding()
    assert status == "stopped" and mm_end is not None
    assert [r.outcome for r in world.audit("stop_run")] == ["retrying", "succeeded"]
    world.assert_converged(open_in_erp=False)


def test_a_404_to_a_stop_of_a_run_mm_lacks_is_nothing_to_stop_after_a_read(world: World) -> None:
    ticket = world.shop.fx.clock_in(world.op, local(8))
    assert world.sync().started == 1
    world.sim.reset()  # MM lost the run
    world.shop.fx.clock_out(ticket, local(11))

    assert world.sync().stopped == 1

    ops = [(c.operation, c.status) for c in world.proxy.calls if c.operation in ("stop", "get")]
    assert ops[-2:] == [("stop", 404), ("get", 404)]
    assert world.binding()[0] == "stopped"
    (row,) = world.audit("stop_run")
    assert (row.outcome, row.detail) == (
        "noop",
        "MM answered 404 and a read confirms it has no such run: nothing to stop",
    )
    world.assert_converged(open_in_erp=False, mm_lost_it=True)


# -- case 4: a 409 to the setup -> production switch -------------------------------------------------
@pytest.mark.parametrize("when", ["after", "instead"])
def test_a_409_to_the_switch_is_flagged_for_a_person_and_a_retry_switches(
    world: World, when: str, tmp_path: Path
) -> None:
    ticket = world.shop.fx.clock_in(world.op, local(8), ticket_type="S")
    assert world.sync().started == 1
    assert world.run()["phase"] == "setup"
    world.proxy.arm(Rule("start", when=when, status=409, body=CONFLICT, content_type=JSON, times=1))  # type: ignore[arg-type]
    world.production(ticket)

    summary = world.sync()

    assert (summary.started, summary.quarantined) == (0, 1)
    assert world.run()["phase"] == ("production" if when == "after" else "setup")
    assert world.run()["end_at"] is None
    assert world.binding()[:2] == ("running", True)  # not recorded as switched
    key = f"start_run:{RUN}:production"
    assert world.journal()[key] == "quarantined"
    switch = [r for r in world.audit("start_run") if r.outcome != "succeeded"]
    assert [(r.outcome, r.http_status) for r in switch] == [("quarantined", 409)]
    assert "MachineMetrics refused the switch to production (409)" in (switch[0].error_message or "")
    assert "erpsync quarantine retry" in (switch[0].error_message or "")
    (entry,) = world.quarantined()

    starts = len(world.proxy.seen("start"))
    world.assert_converged(open_in_erp=True)  # not journaled or sent again, cycle after cycle
    assert len(world.proxy.seen("start")) == starts
    assert len(world.journal()) == 2

    config = write_config(tmp_path / "erpsync.toml", world.erp_url, world.state_url, world.sim)
    retried = run_erpsync(config, "quarantine", "retry", str(entry.id))
    assert retried.returncode == 0, retried.stderr
    world.sync()

    assert world.run()["phase"] == "production"
    assert world.journal()[key] == "succeeded"
    assert world.binding()[:2] == ("running", False)
    world.assert_converged(open_in_erp=True)


def test_a_409_to_a_first_production_start_is_still_read_and_held(world: World) -> None:
    world.proxy.arm(Rule("start", when="after", status=409, body=CONFLICT, content_type=JSON, times=1))
    world.shop.fx.clock_in(world.op, local(8))

    assert world.sync().started == 1

    assert world.run()["end_at"] is None
    assert world.journal() == {f"start_run:{RUN}:production": "succeeded"}
    assert world.binding()[:2] == ("running", False)
    world.assert_converged(open_in_erp=True)
