"""Issue #15 case 7: drift is healed, not just logged, end to end.

A VISUAL ERP (SQLite) whose LABOR_TICKET gets the part counts (`visual-labor-ticket` sink), the MM
simulator over loopback HTTP, real sync and write-back cycles, and erpsync's state on SQLite,
PostgreSQL and MariaDB. MM loses a run, or a person ends it by hand in MM, while the ERP ticket is
still open: write-back's own read (or a resync) finds it, audits it once, and by `sync.heal_drift`
the next sync starts the ticket's next run generation or leaves it to a person. Asserted on what MM
holds (open runs, start and end times, calls), the LABOR_TICKET counts, bindings and the audit.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from erpsync.adapters.erp.sinks.visual_labor_ticket import VisualLaborTicketSink
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, RunBinding
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.bootstrap import open_sync
from erpsync.cli.app import app
from erpsync.config import ServiceSettings, Settings, SourceSettings, StateSettings
from erpsync.config.sync import SyncSettings
from erpsync.domain.drift import HealDrift
from erpsync.observability.correlation import correlation
from erpsync.runtime.cli_lease import held_lease
from erpsync.service.resync import Selection, run_resync
from erpsync.service.sync import SyncSummary
from erpsync.service.writeback import WritebackPolicy, run_writeback
from erpsync.service.writeback_report import WritebackSummary
from tests.fixtures_mm import fast_mm_settings
from tests.sync_helpers import ERP_TZ, Shop, sync_cycle, write_config

LT1, G2 = "erp:LT1", "erp:LT1.g2"


def local_now() -> datetime:
    """The ERP's wall clock now (VISUAL stores naive local times), to the second."""
    return datetime.now(ZoneInfo(ERP_TZ)).replace(tzinfo=None, microsecond=0)


class World:
    """One machine (HAAS-1) of a VISUAL shop, erpsync writing counts into LABOR_TICKET."""

    def __init__(
        self, erp_url: str, state_url: str, store: StateStore, sim: MMSimulator, heal: HealDrift
    ) -> None:
        self.shop = Shop(erp_url, machines=1)
        self.op = self.shop.ops["HAAS-1"]
        self.sim, self.store = sim, store
        self.erp_url, self.state_url = erp_url, state_url
        self.settings = Settings(
            state=StateSettings(url=state_url),
            mm=fast_mm_settings(sim.base_url, sim.api_key),
            source=SourceSettings(kind="infor-visual", url=erp_url, timezone=ERP_TZ),
            service=ServiceSettings(lease_ttl_seconds=5, lease_renew_seconds=1, lease_retry_seconds=0.5),
            sync=SyncSettings(heal_drift=heal),
        )
        self.sink = VisualLaborTicketSink(self.shop.engine)
        self.ticket = 0

    def clock_in(self, hours_ago: float = 3) -> int:
        self.ticket = self.shop.fx.clock_in(self.op, local_now() - timedelta(hours=hours_ago))
        return self.ticket

    def clock_out(self) -> None:
        good, bad = self.ticket_counts()  # what the operator reports: what erpsync wrote
        self.shop.fx.clock_out(self.ticket, local_now(), good_qty=good, bad_qty=bad)

    def sync(self) -> SyncSummary:
        summary = sync_cycle(self.settings, self.store)
        assert summary.not_sent == 0 and summary.quarantined == 0, summary
        return summary

    def writeback(self) -> WritebackSummary:
        policy = WritebackPolicy.from_settings(self.settings)
        with MMClient(self.settings.mm) as client:
            summary = run_writeback(SqlUnitOfWorkFactory(self.store), client, self.sink, policy)
        assert summary.failed == 0 and summary.conflicts == 0, summary
        return summary

    def resync(self) -> None:
        with (
            MMClient(self.settings.mm) as client,
            correlation("cli"),
            held_lease(self.settings, self.store) as fence,
        ):
            service = open_sync(self.settings, self.store, fence, client)
            try:
                run_resync(service, Selection(run="LT1"), dry_run=False)
            finally:
                service.source.close()

    def ticket_counts(self) -> tuple[int, int]:
        (row,) = self.shop.fx.tickets([self.ticket])
        return int(row["GOOD_QTY"] or 0), int(row["BAD_QTY"] or 0)

    def open_runs(self) -> list[str]:
        return sorted(r for r, run in self.sim.runs().items() if run["end_at"] is None)

    def calls(self, since: int = 0) -> list[tuple[str, str | None]]:
        return [(c["operation"], c["run_id"]) for c in self.sim.calls()[since:]]

    def bindings(self) -> dict[str, str]:
        with self.store.session() as session:
            return {b.run_key: b.status for b in session.scalars(select(RunBinding))}

    def audit(self, *actions: str) -> list[AuditEntry]:
        with self.store.session() as session:
            query = select(AuditEntry).where(AuditEntry.action.in_(actions)).order_by(AuditEntry.id)
            return list(session.scalars(query))


@pytest.fixture
def healing(
    database_url: str, state_store: StateStore, mm_simulator: MMSimulator, tmp_path: Path
) -> Iterator[World]:
    """`sync.heal_drift = "restart"` (the default)."""
    here = World(f"sqlite:///{tmp_path / 'erp.db'}", database_url, state_store, mm_simulator, "restart")
    assert Settings().sync.heal_drift == "restart"
    yield here
    here.shop.dispose()


@pytest.fixture
def flagging(
    database_url: str, state_store: StateStore, mm_simulator: MMSimulator, tmp_path: Path
) -> Iterator[World]:
    """`sync.heal_drift = "flag"`."""
    here = World(f"sqlite:///{tmp_path / 'erp.db'}", database_url, state_store, mm_simulator, "flag")
    yield here
    here.shop.dispose()


def started_and_counted(world: World) -> None:
    """LT1 clocked in, its run open in MM with 40 parts (2 scrap) written into the ticket."""
    world.clock_in()
    assert world.sync().started == 1
    world.sim.set_counts(LT1, total=40, scrap=2)
    world.writeback()
    assert world.ticket_counts() == (38, 2)


def test_a_run_mm_lost_is_audited_once_and_the_next_sync_starts_generation_2(healing: World) -> None:
    world = healing
    started_and_counted(world)
    world.sim.lose_run(LT1)
    lost_at = datetime.now(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%S")

    found = world.writeback()

    assert (found.drifted, found.no_data, found.written) == (1, 0, 0)
    assert world.bindings() == {"LT1": "stopped"}
    (row,) = world.audit("missing_in_mm", "ended_in_mm")
    assert (row.outcome, row.mm_run_id, row.erp_machine, row.http_status) == ("flagged", LT1, "HAAS-1", 404)
    assert "next sync cycle starts a new MM run" in (row.detail or "")
    before = len(world.sim.calls())
    again = world.writeback()  # not read again: no "no data" every cycle
    assert (again.read, again.no_data) == (0, 0)
    assert world.calls(before) == []

    assert world.sync().started == 1

    assert world.open_runs() == [G2]  # exactly one open run for the open ticket
    assert world.sim.runs()[G2]["start_at"] >= lost_at  # from when erpsync found LT1 gone
    assert world.bindings() == {"LT1": "stopped", "LT1#g2": "running"}
    assert len(world.audit("missing_in_mm")) == 1

    world.sim.set_counts(G2, total=15, scrap=1)
    world.writeback()
    assert world.ticket_counts() == (38 + 14, 2 + 1)  # both runs' parts, none twice

    # a cycle with no change: sync asks MM nothing, write-back reads the one open run only
    before = len(world.sim.calls())
    quiet = world.sync()
    assert (quiet.started, quiet.stopped, quiet.flagged) == (0, 0, 0)
    assert world.calls(before) == []
    assert world.writeback().written == 0
    assert world.calls(before) == [("get", G2)]

    world.clock_out()
    assert world.sync().stopped == 1
    assert world.open_runs() == []
    world.writeback()
    assert world.ticket_counts() == (52, 3)
    assert len(world.audit("missing_in_mm", "ended_in_mm")) == 1


def test_a_run_ended_by_hand_in_mm_is_ended_in_mm_and_a_new_generation_follows_it(healing: World) -> None:
    world = healing
    started_and_counted(world)
    world.sim.set_counts(LT1, total=45, scrap=2)  # counted before a person ended it in MM
    ended = world.sim.end_run(LT1)

    found = world.writeback()

    assert (found.drifted, found.written) == (1, 1)
    assert world.ticket_counts() == (43, 2)  # the counts MM ended with reach the ERP
    (row,) = world.audit("missing_in_mm", "ended_in_mm")
    assert (row.action, row.outcome) == ("ended_in_mm", "flagged")
    with world.store.session() as session:
        bound = session.scalars(select(RunBinding)).one()
        assert (bound.status, bound.mm_end_at is not None) == ("stopped", True)

    assert world.sync().started == 1

    runs = world.sim.runs()
    assert world.open_runs() == [G2]
    assert runs[G2]["start_at"] >= runs[LT1]["end_at"] == ended.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    world.sim.set_counts(G2, total=10)
    world.writeback()
    assert world.ticket_counts() == (43 + 10, 2)
    assert world.writeback().drifted == 0 and len(world.audit("missing_in_mm", "ended_in_mm")) == 1

    world.clock_out()
    assert world.sync().stopped == 1
    assert world.open_runs() == []


@pytest.mark.parametrize("drift", ["lost", "ended"])
def test_flag_leaves_it_to_a_person_and_resync_heals_it(flagging: World, drift: str) -> None:
    world = flagging
    started_and_counted(world)
    if drift == "lost":
        world.sim.lose_run(LT1)
    else:
        world.sim.end_run(LT1)

    assert world.writeback().drifted == 1

    assert world.bindings() == {"LT1": "failed"}
    (row,) = world.audit("missing_in_mm", "ended_in_mm")
    assert row.outcome == "flagged" and "erpsync resync --run LT1" in (row.detail or "")
    starts = len([c for c in world.calls() if c[0] == "start"])
    for _ in range(2):
        assert world.sync().started == 0
        world.writeback()
    assert len([c for c in world.calls() if c[0] == "start"]) == starts  # no new MM run
    assert world.open_runs() == []
    assert len(world.audit("missing_in_mm", "ended_in_mm")) == 1  # audited once

    world.resync()  # the person's answer: MM is read, the run recorded stopped

    assert world.bindings() == {"LT1": "stopped"}
    assert world.sync().started == 1
    assert world.open_runs() == [G2]
    world.sim.set_counts(G2, total=5)
    world.writeback()
    assert world.ticket_counts() == (38 + 5, 2)
    world.clock_out()
    assert world.sync().stopped == 1
    assert world.open_runs() == []


@pytest.mark.parametrize("drift", ["lost", "ended"])
def test_resync_finding_drift_heals_it_too(healing: World, drift: str) -> None:
    """Before any write-back cycle read it: `erpsync resync` finds it and the next sync heals it."""
    world = healing
    started_and_counted(world)
    if drift == "lost":
        world.sim.lose_run(LT1)
    else:
        world.sim.end_run(LT1)

    world.resync()

    assert world.bindings() == {"LT1": "stopped"}
    (row,) = world.audit("missing_in_mm", "ended_in_mm")
    assert row.action == ("missing_in_mm" if drift == "lost" else "ended_in_mm")
    assert world.sync().started == 1
    runs = world.sim.runs()
    assert world.open_runs() == [G2]
    if drift == "ended":
        assert runs[G2]["start_at"] >= runs[LT1]["end_at"]  # after MM's end: never overlapping
    world.sim.set_counts(G2, total=3)
    world.writeback()
    assert world.ticket_counts()[0] >= 38 + 3  # the old run's counts stay in the sum
    world.clock_out()
    world.sync()
    assert world.open_runs() == []
    assert len(world.audit("missing_in_mm", "ended_in_mm")) == 1


def test_plan_says_it_compares_the_erp_with_erpsyncs_records_not_mm(
    healing: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = healing
    world.clock_in()
    world.sync()
    world.sim.lose_run(LT1)  # a plan cannot know: it does not ask MM
    config = write_config(tmp_path / "erpsync.toml", world.erp_url, world.state_url, world.sim)
    before = len(world.sim.calls())

    result = CliRunner().invoke(app, ["--config", str(config), "plan"])

    assert result.exit_code == 0, result.output
    assert "nothing to do: erpsync's records match the ERP" in result.output
    assert "MachineMetrics not asked; `erpsync resync --dry-run` reads it" in result.output
    assert "MachineMetrics matches the ERP" not in result.output
    assert world.calls(before) == []


def test_the_writeback_command_says_how_many_runs_mm_lost_or_ended(healing: World, tmp_path: Path) -> None:
    world = healing
    world.clock_in()
    world.sync()
    world.sim.lose_run(LT1)
    config = write_config(tmp_path / "erpsync.toml", world.erp_url, world.state_url, world.sim)

    result = CliRunner().invoke(app, ["--config", str(config), "writeback"])

    assert "1 lost or ended in MM" in result.output, result.output
    assert result.exit_code == 0, result.output  # healed (sync.heal_drift = "restart"): nothing left undone
    assert len(world.audit("missing_in_mm")) == 1
