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

from erpsync.runtime.logging import configure_logging
from tests.campaign.scenario_trials import scripted
from tests.campaign.scenario_world import ScenarioWorld, WorldParams
from tests.campaign.scenarios import Ticket

pytestmark = pytest.mark.campaign


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ScenarioWorld]:
    configure_logging("WARNING", "json")
    w = ScenarioWorld(tmp_path / "world", WorldParams(17, "sqlite", "flag", None, history_rows=1000))
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
    w = ScenarioWorld(tmp_path / "world", WorldParams(17, "sqlite", "stop", None, history_rows=1000))
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
