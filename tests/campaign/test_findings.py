"""Regressions for the defects the scenario campaign found (tests/campaign/FINDINGS.md).

Each is the smallest fixed batch sequence that shows the defect in a scenario world (a VISUAL shop,
state on SQLite, the MM simulator, a running `erpsync serve`), judged by the same oracle and
invariants as the campaign. They fail while the defect is there. Marked `campaign`: not part of
the default run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection

from erpsync.observability.crashpoints import CRASH_EXIT_CODE
from erpsync.runtime.logging import configure_logging
from tests.campaign.procs import Erpsync
from tests.campaign.scenario_trials import scripted
from tests.campaign.scenario_world import ScenarioWorld, WorldParams
from tests.campaign.scenarios import Ticket

pytestmark = pytest.mark.campaign


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ScenarioWorld]:
    configure_logging("WARNING", "json")
    w = ScenarioWorld(tmp_path / "world", WorldParams(17, "sqlite", "flag", "restart", history_rows=1000))
    yield w
    w.abort()


@pytest.mark.timeout(300)
def test_f1_a_setup_run_whose_ticket_was_edited_switches_to_production(world: ScenarioWorld) -> None:
    """F1: a setup ticket moved to another operation of its machine, then a run ticket joins that
    operation: the rule says production; erpsync sends the switch with the edited job fields, MM
    answers 409 and the switch is quarantined, the run stays in setup."""
    shop, rng = world.shop, world.rng
    machine = shop.machines[1]
    first, other = shop.ops[machine][0], shop.ops[machine][1]
    setup: list[Ticket] = []

    def clock_in_setup(conn: Connection, now: datetime) -> None:
        setup.append(shop.clock_in(conn, first, now - timedelta(hours=1), "S", rng))

    assert scripted(world, clock_in_setup) == []
    assert scripted(world, lambda conn, now: shop.edit_op(conn, setup[0], other)) == []
    assert scripted(world, lambda conn, now: shop.clock_in(conn, other, now, "R", rng)) == []


@pytest.fixture
def stop_world(tmp_path: Path) -> Iterator[ScenarioWorld]:
    configure_logging("WARNING", "json")
    w = ScenarioWorld(tmp_path / "world", WorldParams(17, "sqlite", "stop", "restart", history_rows=1000))
    yield w
    w.abort()


@pytest.mark.timeout(300)
def test_f2_a_run_never_starts_before_a_vanished_run_on_its_machine_ended(stop_world: ScenarioWorld) -> None:
    """F2: with `vanished_runs = "stop"`, a deleted ticket's run is stopped at erpsync's now; a
    ticket entered later with an earlier clock-in on that machine must start its run when the
    machine was freed (that stop). erpsync does not read the deleted ticket's binding, starts the
    run at its clock-in, and MM's runs on the machine overlap."""
    world = stop_world
    shop, rng = world.shop, world.rng
    machine = shop.machines[2]
    op = shop.ops[machine][0]
    gone: list[Ticket] = []

    def clock_in(conn: Connection, now: datetime) -> None:
        gone.append(shop.clock_in(conn, op, now, "R", rng))

    assert scripted(world, clock_in) == []
    assert scripted(world, lambda conn, now: shop.delete(conn, gone[0])) == []
    late = timedelta(minutes=30)  # clocked in before the deleted ticket, entered now
    assert scripted(world, lambda conn, now: shop.clock_in(conn, op, now - late, "R", rng)) == []


@pytest.mark.timeout(300)
def test_f3_a_write_back_crash_on_a_reopened_ticket_is_no_conflict(world: ScenarioWorld) -> None:
    """F3: a reopened ticket has two runs (generation 1 and 2) and holds their sum. A write-back
    that dies between its ERP commit and its state commit (the crash point, as a SIGKILL or a
    cut state connection would) while both runs' counts moved leaves the ERP ahead; the next cycle
    must recognise its own write. erpsync judges each run's writes in doubt against the other
    run's last *confirmed* counts, finds the ticket edited by "someone else" and quarantines a
    write-back conflict: counts stop flowing to that ticket."""
    shop, rng = world.shop, world.rng
    op = shop.ops[shop.machines[3]][0]
    mine: list[Ticket] = []

    def clock_in(conn: Connection, now: datetime) -> None:
        mine.append(shop.clock_in(conn, op, now - timedelta(minutes=20), "R", rng))

    assert scripted(world, clock_in) == []
    assert scripted(world, lambda conn, now: shop.clock_out(conn, mine[0], now - timedelta(minutes=10))) == []
    assert scripted(world, lambda conn, now: shop.reopen(conn, mine[0])) == []  # generation 2
    assert scripted(world, lambda conn, now: None) == []  # counts on both runs written
    Erpsync.stop(world.serve)
    world.serve = None
    runs = world.sim.runs()
    for rid in (f"erp:LT{mine[0].id}", f"erp:LT{mine[0].id}.g2"):  # late parts on 1, more on 2
        total = runs[rid]["metrics"]["totalParts"] + 7
        world.sim.set_counts(rid, total=total, scrap=runs[rid]["metrics"]["scrapParts"])
    crashed = world.erpsync.start("writeback", crash_at="writeback.after_erp_commit")
    assert crashed.wait(timeout=120) == CRASH_EXIT_CODE
    world.serve = world.erpsync.start("serve")
    found, _ = world.converge()
    assert found == [], "\n".join(found)
