"""Campaign finding F3: a write-back killed after its ERP commit on a reopened VISUAL labor ticket.

A reopened ticket has two MM runs (``erp:LT1`` stopped, ``erp:LT1.g2`` open) and LABOR_TICKET holds
the sum of their counts. When both runs' counts moved and a real `erpsync writeback` process dies
between the ERP commit and the state commit, the ERP holds both runs' new counts together while
erpsync's state still has both writes in doubt. The next write-back must take that value for its
own (no false conflict), and a value a person typed must still be a conflict.
VISUAL ERP on SQLite and PostgreSQL, state on SQLite, PostgreSQL and MariaDB, the MM simulator over
loopback HTTP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from erpsync.adapters.erp.sinks.visual_labor_ticket import VisualLaborTicketSink
from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import RunBinding, SinkCounts
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.domain.writeback_rules import CONFLICT_CLASS
from erpsync.observability.crashpoints import CRASH_EXIT_CODE
from erpsync.service.writeback import WritebackPolicy, run_writeback
from tests.conftest import create_database, drop_database
from tests.integration.test_shop_floor import Floor, local
from tests.integration.writeback_support import audits, quarantine
from tests.sync_helpers import run_erpsync, write_config

SINK = "visual-labor-ticket"
FIRST, SECOND = "erp:LT1", "erp:LT1.g2"


@pytest.fixture(
    params=[("sqlite", "sqlite"), ("postgresql", "postgresql"), ("sqlite", "mariadb")],
    ids=["erp-sqlite-state-sqlite", "erp-pg-state-pg", "erp-sqlite-state-mariadb"],
)
def floor(request: pytest.FixtureRequest, tmp_path: Path, mm_simulator: MMSimulator) -> Iterator[Floor]:
    erp_backend, state_backend = request.param
    erp_url, erp_token = create_database(erp_backend, tmp_path)
    state_url, state_token = create_database(state_backend, tmp_path)
    engine = create_db_engine(state_url)
    migrate.upgrade(engine)
    store = StateStore(engine)
    world = Floor(erp_url, state_url, mm_simulator, store)
    yield world
    world.shop.dispose()
    store.dispose()
    drop_database(state_backend, state_token)
    drop_database(erp_backend, erp_token)


def ticket_counts(floor: Floor, ticket: int) -> tuple[int, int]:
    (row,) = floor.shop.fx.tickets([ticket])
    return int(row["GOOD_QTY"]), int(row["BAD_QTY"])


def sink_counts(floor: Floor) -> dict[str, tuple[tuple[int | None, ...], str | None]]:
    """MM run id -> (what erpsync last wrote to the ticket sink, its writes in doubt)."""
    query = select(RunBinding.mm_run_id, SinkCounts).join(SinkCounts, SinkCounts.binding_id == RunBinding.id)
    with floor.store.session() as session:
        rows = session.execute(query.where(SinkCounts.sink == SINK)).all()
    return {
        run: (
            (c.last_total_parts, c.last_good_parts, c.last_scrap_parts, c.last_nonconform_parts),
            c.counts_in_doubt,
        )
        for run, c in rows
    }


def writeback_in_process(floor: Floor, batch_size: int = 500, minutes_later: float = 0) -> None:
    policy = WritebackPolicy.from_settings(floor.harness.settings)
    sink = VisualLaborTicketSink(floor.shop.engine, batch_size=batch_size)
    now = datetime.now(UTC) + timedelta(minutes=minutes_later)
    with MMClient(floor.harness.settings.mm) as client:
        summary = run_writeback(SqlUnitOfWorkFactory(floor.store), client, sink, policy, now=now)
    assert summary.failed == 0 and summary.conflicts == 0, summary


def writeback(config: Path) -> str:
    """`erpsync writeback` as a process, once the killed process's leader lease (2 s TTL) expired."""
    for _ in range(40):
        result = run_erpsync(config, "writeback")
        if result.returncode == 1 and "another erpsync instance leads" in result.stderr:
            time.sleep(0.25)
            continue
        return result.stdout + result.stderr
    pytest.fail("the killed process's lease never expired")


def reopened_ticket_killed_after_the_erp_commit(floor: Floor, tmp_path: Path) -> tuple[int, Path]:
    """The ticket clocked in, counted, clocked out and reopened (two runs); both runs' counts move
    (+7 each) and `erpsync writeback` dies at `writeback.after_erp_commit`."""
    fx, sim = floor.shop.fx, floor.sim
    ticket = fx.clock_in(floor.op_a, local(8, 0))
    floor.sync()
    sim.set_counts(FIRST, total=40, scrap=2)
    writeback_in_process(floor)
    assert ticket_counts(floor, ticket) == (38, 2)
    fx.clock_out(ticket, local(9, 0), good_qty=38, bad_qty=2)
    floor.sync()
    floor.reopen(ticket)
    floor.sync()
    assert floor.open_on() == [SECOND]
    sim.set_counts(SECOND, total=15, scrap=1)
    writeback_in_process(floor)
    assert ticket_counts(floor, ticket) == (38 + 14, 2 + 1)

    sim.set_counts(FIRST, total=47, scrap=2)  # parts counted late on the stopped run
    sim.set_counts(SECOND, total=22, scrap=1)  # new parts on the open one
    config = write_config(
        tmp_path / "erpsync.toml",
        floor.shop.engine.url.render_as_string(hide_password=False),
        floor.store.engine.url.render_as_string(hide_password=False),
        sim,
        sections={"writeback": {"sink": SINK}},
    )
    crashed = run_erpsync(config, "writeback", crash_at="writeback.after_erp_commit")
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    assert ticket_counts(floor, ticket) == (45 + 21, 2 + 1)  # the ERP committed the new sum
    state = sink_counts(floor)  # erpsync's state is behind: both runs' writes are in doubt
    assert state[FIRST][0] == (40, 38, 2, 0) and state[SECOND][0] == (15, 14, 1, 0)
    assert state[FIRST][1] is not None and state[SECOND][1] is not None
    return ticket, config


@pytest.mark.parametrize("counts_on", [False, True], ids=["mm-still", "mm-counts-on"])
def test_a_write_back_killed_after_the_erp_commit_on_a_reopened_ticket_is_no_conflict(
    floor: Floor, tmp_path: Path, counts_on: bool
) -> None:
    ticket, config = reopened_ticket_killed_after_the_erp_commit(floor, tmp_path)
    second = (22, 21, 1, 0)
    if counts_on:  # the machine kept running while erpsync was down
        floor.sim.set_counts(SECOND, total=25, scrap=1)
        second = (25, 24, 1, 0)

    output = writeback(config)
    assert ticket_counts(floor, ticket) == (45 + second[1], 2 + 1), output  # the sum of MM's counts
    assert audits(floor.store, outcome="conflict") == [] and quarantine(floor.store) == []
    state = sink_counts(floor)
    assert state == {FIRST: ((47, 45, 2, 0), None), SECOND: (second, None)}  # nothing left in doubt
    last = {a.mm_run_id: a.outcome for a in audits(floor.store)}
    assert last == {FIRST: "already_written", SECOND: "written" if counts_on else "already_written"}

    floor.sim.set_counts(SECOND, total=30, scrap=1)  # and counts keep flowing to the ticket
    writeback(config)
    assert ticket_counts(floor, ticket) == (45 + 29, 2 + 1)


def test_a_person_editing_a_reopened_ticket_after_the_crash_is_still_a_conflict(
    floor: Floor, tmp_path: Path
) -> None:
    ticket, config = reopened_ticket_killed_after_the_erp_commit(floor, tmp_path)
    with floor.shop.engine.begin() as conn:  # a person corrects the quantity in VISUAL
        conn.execute(update(LABOR_TICKET).where(ticket == LABOR_TICKET.c.TRANSACTION_ID).values(GOOD_QTY=70))

    output = writeback(config)
    assert ticket_counts(floor, ticket) == (70, 3), output  # never overwritten
    conflicts = audits(floor.store, outcome="conflict")
    assert sorted(a.mm_run_id for a in conflicts) == [FIRST, SECOND]
    assert all(json.loads(a.before_json or "{}") == {"GOOD_QTY": 70, "BAD_QTY": 3} for a in conflicts)
    entries = quarantine(floor.store)
    assert sorted((q.record_key, q.error_class) for q in entries) == [
        (FIRST, CONFLICT_CLASS),
        (SECOND, CONFLICT_CLASS),
    ]
    assert all("holds GOOD_QTY=70, BAD_QTY=3" in q.message for q in entries)


def test_a_reopened_ticket_s_runs_written_in_separate_batches_are_no_conflict(floor: Floor) -> None:
    """`writeback.batch_size` can split a ticket's runs over two ERP transactions of one cycle: the
    second finds the ticket holding what the first wrote for the other run, which the targets read
    at the start of the cycle do not say yet; it is still erpsync's own value."""
    fx, sim = floor.shop.fx, floor.sim
    ticket = fx.clock_in(floor.op_a, local(8, 0))
    floor.sync()
    fx.clock_out(ticket, local(9, 0))
    floor.sync()
    floor.reopen(ticket)
    floor.sync()
    sim.set_counts(FIRST, total=40, scrap=2)
    sim.set_counts(SECOND, total=15, scrap=1)
    writeback_in_process(floor, batch_size=1)
    assert ticket_counts(floor, ticket) == (38 + 14, 2 + 1)
    sim.set_counts(FIRST, total=47, scrap=2)
    sim.set_counts(SECOND, total=22, scrap=1)
    writeback_in_process(floor, batch_size=1)
    assert ticket_counts(floor, ticket) == (45 + 21, 2 + 1)
    assert audits(floor.store, outcome="conflict") == [] and quarantine(floor.store) == []


def test_late_parts_on_a_first_run_whose_later_run_is_done_are_added_to_the_ticket(floor: Floor) -> None:
    """The second run's final counts are in the ticket (it is no longer read), the first run still
    gets late parts (its settle window moved with them): its write keeps the second run's part."""
    fx, sim = floor.shop.fx, floor.sim
    window = floor.harness.settings.writeback.settle_window_minutes
    ticket = fx.clock_in(floor.op_a, local(8, 0))
    floor.sync()
    sim.set_counts(FIRST, total=40, scrap=2)
    writeback_in_process(floor)
    fx.clock_out(ticket, local(9, 0), good_qty=38, bad_qty=2)  # as erpsync wrote it
    floor.sync()
    floor.reopen(ticket)
    floor.sync()
    sim.set_counts(SECOND, total=15, scrap=1)
    writeback_in_process(floor)
    fx.clock_out(ticket, local(10, 0), good_qty=38 + 14, bad_qty=3)
    floor.sync()  # both runs stopped, their final counts due
    sim.set_counts(FIRST, total=47, scrap=2)
    writeback_in_process(floor, minutes_later=1)  # late parts: the first run's window moves
    writeback_in_process(floor, minutes_later=window + 0.5)  # the second run is done, the first not
    with floor.store.session() as session:
        due = {b.mm_run_id for b in session.scalars(select(RunBinding)) if b.final_counts_since is not None}
    assert due == {FIRST}
    assert ticket_counts(floor, ticket) == (45 + 14, 3)
    sim.set_counts(FIRST, total=50, scrap=2)
    writeback_in_process(floor, minutes_later=window + 0.7)
    assert ticket_counts(floor, ticket) == (48 + 14, 3)
    assert audits(floor.store, outcome="conflict") == [] and quarantine(floor.store) == []
