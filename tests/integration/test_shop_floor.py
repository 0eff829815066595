"""Issue #19 cases 1 and 3: crews, overlapping tickets and reopened work, end to end.

A VISUAL ERP (SQLite and PostgreSQL) or an LN CSV export, the MM simulator over loopback HTTP and
real sync cycles. Each test asserts what MM holds afterwards (open runs per machine, run ids,
startAt/endAt) and what the audit says, against the multi-ticket rule (domain/shop_floor.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select, update

from erpsync.adapters.erp.sinks.visual_labor_ticket import VisualLaborTicketSink
from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, RunBinding
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.config.sync import SyncSettings
from erpsync.demo.visual_fixture import OperationKey
from erpsync.domain.identity import generation_run_id
from erpsync.service.writeback import WritebackPolicy, run_writeback
from tests.integration.test_sync_e2e import Harness
from tests.integration.test_untrusted_snapshot import LN_HEADER, World, run_id, write
from tests.sync_helpers import ERP_TZ, Shop, settings_for

# yesterday in the ERP's zone: recent enough that closed tickets are in the read's lookback
DAY = (datetime.now(ZoneInfo(ERP_TZ)) - timedelta(days=1)).date()


def local(hour: int, minute: int = 0) -> datetime:
    """A naive ERP-local wall time (VISUAL stores local times)."""
    return datetime.combine(DAY, time(hour, minute))


def utc(hour: int, minute: int = 0) -> str:
    """That time as the simulator shows it."""
    at = local(hour, minute).replace(tzinfo=ZoneInfo(ERP_TZ)).astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Floor:
    """A VISUAL shop with two operations on HAAS-1 (work orders 1808401 and 1808402)."""

    def __init__(self, erp_url: str, state_url: str, sim: MMSimulator, store: StateStore) -> None:
        self.shop = Shop(erp_url, machines=1)
        self.sim = sim
        self.store = store
        self.op_a = self.shop.ops["HAAS-1"]
        wo = self.shop.fx.add_work_order("1808402", "1", part_id="P-100", desired_qty=80)
        self.op_b: OperationKey = self.shop.fx.add_operation(wo, 20, "HAAS-1", run=0.05, calc_end_qty=80)
        self.harness = Harness(settings_for(erp_url, state_url, sim), store)

    def sync(self) -> None:
        summary = self.harness.sync()
        assert summary.not_sent == 0 and summary.quarantined == 0, summary

    def runs(self) -> dict[str, tuple[str, str, str | None]]:
        """MM run id -> (job, startAt, endAt)."""
        return {rid: (r["job_name"], r["start_at"], r["end_at"]) for rid, r in self.sim.runs().items()}

    def open_on(self, machine: str = "HAAS-1") -> list[str]:
        return sorted(
            rid for rid, r in self.sim.runs().items() if r["machine_id"] == machine and not r["end_at"]
        )

    def audit(self, action: str) -> list[AuditEntry]:
        with self.store.session() as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))

    def reopen(self, ticket: int) -> None:
        """A mistaken clock-out undone: CLOCK_OUT back to NULL."""
        with self.shop.engine.begin() as conn:
            conn.execute(
                update(LABOR_TICKET)
                .where(ticket == LABOR_TICKET.c.TRANSACTION_ID)
                .values(CLOCK_OUT=None, ACT_CLOCK_OUT=None, HOURS_WORKED=None)
            )


@pytest.fixture(params=["sqlite", "postgresql"])
def floor(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_url: str,
    sqlite_state_store: StateStore,
    mm_simulator: MMSimulator,
) -> Iterator[Floor]:
    if request.param == "postgresql":
        erp_url = request.getfixturevalue("pg_url")
    else:
        erp_url = f"sqlite:///{tmp_path / 'erp.db'}"
    world = Floor(erp_url, sqlite_url, mm_simulator, sqlite_state_store)
    yield world
    world.shop.dispose()


def test_a_helper_on_the_same_operation_joins_the_run_and_leaving_does_not_stop_it(floor: Floor) -> None:
    fx = floor.shop.fx
    operator = fx.clock_in(floor.op_a, local(8, 0), employee_id="OPERATOR")
    floor.sync()
    helper = fx.clock_in(floor.op_a, local(8, 30), employee_id="HELPER")
    floor.sync()
    assert floor.open_on() == ["erp:LT1"]  # one MM run for the operation, not superseded
    fx.clock_out(helper, local(9, 0))
    floor.sync()
    assert floor.open_on() == ["erp:LT1"]
    assert floor.runs()["erp:LT1"] == ("1808401/1", utc(8), None)

    fx.clock_out(operator, local(11, 0))
    floor.sync()
    assert floor.open_on() == []
    assert floor.runs() == {"erp:LT1": ("1808401/1", utc(8), utc(11))}  # first clock-in to last clock-out
    assert floor.audit("superseded") == []
    starts = [(c["operation"], c["run_id"]) for c in floor.sim.calls() if c["operation"] in ("start", "stop")]
    assert starts == [("start", "erp:LT1"), ("stop", "erp:LT1")]


def test_the_operator_leaves_first_and_the_run_lasts_until_the_helper_clocks_out(floor: Floor) -> None:
    fx = floor.shop.fx
    operator = fx.clock_in(floor.op_a, local(8, 0), employee_id="OPERATOR")
    helper = fx.clock_in(floor.op_a, local(8, 10), employee_id="HELPER", ticket_type="S")
    floor.sync()
    assert floor.open_on() == ["erp:LT1"]
    assert floor.sim.runs()["erp:LT1"]["phase"] == "production"  # one run ticket is enough
    fx.clock_out(operator, local(10, 0))
    floor.sync()
    assert floor.open_on() == ["erp:LT1"]
    fx.clock_out(helper, local(10, 45))
    floor.sync()
    assert floor.runs() == {"erp:LT1": ("1808401/1", utc(8), utc(10, 45))}


def test_a_later_clock_in_on_another_operation_is_shown_and_the_first_comes_back_as_a_new_run(
    floor: Floor,
) -> None:
    fx = floor.shop.fx
    first = fx.clock_in(floor.op_a, local(8, 0), employee_id="ANN")
    floor.sync()
    second = fx.clock_in(floor.op_b, local(9, 0), employee_id="BOB")
    floor.sync()
    floor.sync()  # the overlap is flagged once, not every cycle
    assert floor.open_on() == ["erp:LT2"]
    assert floor.runs()["erp:LT1"] == ("1808401/1", utc(8), utc(9))  # stopped at the later clock-in
    flagged = floor.audit("superseded")
    assert len(flagged) == 1 and "likely forgotten clock-out" in (flagged[0].detail or "")

    fx.clock_out(second, local(10, 0))
    floor.sync()
    assert floor.open_on() == ["erp:LT1.g2"]  # ANN is still clocked in: shown again, a new run id
    assert floor.runs()["erp:LT1.g2"] == ("1808401/1", utc(10), None)  # from when HAAS-1 was freed
    assert floor.runs()["erp:LT2"] == ("1808402/1", utc(9), utc(10))
    started = [a for a in floor.audit("start_run") if a.mm_run_id == "erp:LT1.g2"]
    assert len(started) == 1 and "generation 2" in (started[0].detail or started[0].reason or "")

    fx.clock_out(first, local(12, 0))
    floor.sync()
    assert floor.open_on() == []
    assert floor.runs()["erp:LT1.g2"] == ("1808401/1", utc(10), utc(12))
    with floor.store.session() as session:
        keys = {b.run_key: b.status for b in session.scalars(select(RunBinding))}
    assert keys == {"LT1": "stopped", "LT2": "stopped", "LT1#g2": "stopped"}


def test_a_reopened_ticket_starts_a_new_run_from_its_old_clock_out(floor: Floor) -> None:
    fx = floor.shop.fx
    ticket = fx.clock_in(floor.op_a, local(8, 0))
    floor.sync()
    fx.clock_out(ticket, local(9, 0))
    floor.sync()
    assert floor.open_on() == []
    floor.reopen(ticket)  # the clock-out was a mistake
    floor.sync()
    assert floor.open_on() == ["erp:LT1.g2"]
    assert floor.runs()["erp:LT1.g2"] == ("1808401/1", utc(9), None)  # MM's first run ended at 9:00
    fx.clock_out(ticket, local(12, 0))
    floor.sync()
    assert floor.runs() == {
        "erp:LT1": ("1808401/1", utc(8), utc(9)),
        "erp:LT1.g2": ("1808401/1", utc(9), utc(12)),
    }
    floor.sync()
    assert len(floor.runs()) == 2  # nothing more: no run id is ever started twice


def test_a_csv_operation_that_goes_back_to_open_is_shown_again(
    tmp_path: Path, mm_simulator: MMSimulator
) -> None:
    export = tmp_path / "export.csv"
    world = World(
        tmp_path, mm_simulator, {"kind": "infor-ln-csv", "name": "ln", "csv": {"path": str(export)}}
    )
    try:
        write(export, LN_HEADER + "PO1;10;M1;1;Actief\nPO2;10;M2;1;Actief\n")
        world.sync()
        write(export, LN_HEADER + "PO1;10;M1;1;Gereed\nPO2;10;M2;1;Actief\n")  # PO1 completed
        world.sync()
        assert world.open_runs() == {"M2": [run_id(2)]}
        write(export, LN_HEADER + "PO1;10;M1;1;Actief\nPO2;10;M2;1;Actief\n")  # back to open
        world.sync()  # the same bytes as the first file: read again all the same (A, B, A)
        again = generation_run_id("ln", "PO1|10", 2)
        assert world.open_runs() == {"M1": [again], "M2": [run_id(2)]}
        runs = mm_simulator.runs()
        assert runs[run_id(1)]["end_at"] is not None and runs[again]["start_at"] >= runs[run_id(1)]["end_at"]
    finally:
        world.dispose()


def test_a_reopened_tickets_runs_write_their_sum_into_labor_ticket(floor: Floor, tmp_path: Path) -> None:
    """`writeback.sink = "visual-labor-ticket"`: a ticket's two runs (before and after it was
    reopened) are one LABOR_TICKET row, which ends up holding both runs' parts."""
    fx, sim = floor.shop.fx, floor.sim
    sink = VisualLaborTicketSink(floor.shop.engine)
    policy = WritebackPolicy.from_settings(floor.harness.settings)

    def writeback() -> None:
        with MMClient(floor.harness.settings.mm) as client:
            summary = run_writeback(SqlUnitOfWorkFactory(floor.store), client, sink, policy)
        assert summary.failed == 0 and summary.conflicts == 0, summary

    def ticket_counts() -> tuple[int, int]:
        (row,) = fx.tickets([ticket])
        return int(row["GOOD_QTY"]), int(row["BAD_QTY"])

    ticket = fx.clock_in(floor.op_a, local(8, 0))
    floor.sync()
    sim.set_counts("erp:LT1", total=40, scrap=2)
    writeback()
    assert ticket_counts() == (38, 2)
    sim.set_counts("erp:LT1", total=45, scrap=2)  # counted before the clock-out, not read yet
    fx.clock_out(ticket, local(9, 0), good_qty=38, bad_qty=2)
    floor.sync()
    floor.reopen(ticket)
    floor.sync()
    assert floor.open_on() == ["erp:LT1.g2"]
    sim.set_counts("erp:LT1.g2", total=15, scrap=1)
    writeback()  # the first run's final counts and the second run's, in one batch
    assert ticket_counts() == (43 + 14, 2 + 1)  # both runs' parts, not the second run's alone
    sim.set_counts("erp:LT1.g2", total=20, scrap=1)
    writeback()
    assert ticket_counts() == (43 + 19, 2 + 1)


def test_a_setup_ticket_moved_to_another_operation_still_switches_to_production(floor: Floor) -> None:
    """Campaign finding F1: the switch repeats what MM was started with, not the edited ticket.

    A setup ticket is moved (edited while open) to another operation of the same machine; a run
    ticket then clocks in on that operation. MM answers a start of a known run id with other job
    fields with 409, so a switch built from the edited row was refused and the run stayed in setup.
    """
    fx = floor.shop.fx
    setup = fx.clock_in(floor.op_a, local(8, 0), employee_id="SETUP", ticket_type="S")
    floor.sync()
    assert floor.sim.runs()["erp:LT1"]["phase"] == "setup"
    with floor.shop.engine.begin() as conn:  # the ticket is corrected to op B while still open
        conn.execute(
            update(LABOR_TICKET)
            .where(setup == LABOR_TICKET.c.TRANSACTION_ID)
            .values(**floor.op_b.work_order.as_child_columns(), OPERATION_SEQ_NO=floor.op_b.sequence_no)
        )
    floor.sync()
    assert [a.detail for a in floor.audit("job_fields_changed")] != []  # flagged, MM untouched
    fx.clock_in(floor.op_b, local(8, 40), employee_id="OPERATOR")
    floor.sync()
    run = floor.sim.runs()["erp:LT1"]
    assert (run["phase"], run["job_name"], run["end_at"]) == ("production", "1808401/1", None)
    assert floor.open_on() == ["erp:LT1"]
    with floor.store.session() as session:
        outcomes = session.execute(
            select(AuditEntry.action, AuditEntry.outcome).where(AuditEntry.mm_run_id == "erp:LT1")
        ).all()
    assert ("start_run", "quarantined") not in outcomes and outcomes.count(("start_run", "succeeded")) == 2
    conflicts = [c for c in floor.sim.calls() if c["operation"] == "start" and c["status"] == 409]
    assert conflicts == []


def ago(minutes: int) -> datetime:
    """A naive ERP-local wall time ``minutes`` before now (a vanished run is stopped at now)."""
    return datetime.now(ZoneInfo(ERP_TZ)).replace(tzinfo=None) - timedelta(minutes=minutes)


def overlaps(sim: MMSimulator, machine: str = "HAAS-1") -> list[tuple[str, str]]:
    """Pairs of MM runs on ``machine`` that were open at the same moment (zero-length runs aside)."""
    runs = sorted(
        (r["start_at"], r["end_at"] or "9999", rid)
        for rid, r in sim.runs().items()
        if r["machine_id"] == machine and r["start_at"] != r["end_at"]
    )
    return [(a[2], b[2]) for a, b in itertools.pairwise(runs) if b[0] < a[1]]


def stop_vanished(floor: Floor) -> None:
    settings = floor.harness.settings
    floor.harness.settings = settings.model_copy(update={"sync": SyncSettings(vanished_runs="stop")})


def delete_ticket(floor: Floor, ticket: int) -> None:
    with floor.shop.engine.begin() as conn:
        conn.execute(delete(LABOR_TICKET).where(ticket == LABOR_TICKET.c.TRANSACTION_ID))


def test_a_late_clock_in_starts_after_a_vanished_run_erpsync_stopped_on_its_machine(floor: Floor) -> None:
    """Campaign finding F2 (``vanished_runs = "stop"``): a ticket deleted while open is stopped at
    erpsync's now; a ticket entered later whose clock-in is earlier starts its run when that stop
    freed the machine, not at its clock-in (two MM runs at once on one machine otherwise)."""
    stop_vanished(floor)
    fx = floor.shop.fx
    gone = fx.clock_in(floor.op_a, ago(60), employee_id="ANN")
    floor.sync()
    delete_ticket(floor, gone)
    floor.sync()
    stopped = floor.sim.runs()["erp:LT1"]
    assert floor.open_on() == [] and stopped["end_at"] is not None  # stopped at erpsync's now
    fx.clock_in(floor.op_b, ago(30), employee_id="BOB", transaction_id=2)  # entered late
    floor.sync()
    assert floor.open_on() == ["erp:LT2"]
    assert floor.sim.runs()["erp:LT2"]["start_at"] == stopped["end_at"]  # when HAAS-1 was freed
    assert overlaps(floor.sim) == []
    floor.sync()
    assert floor.sim.runs()["erp:LT1"] == stopped and len(floor.sim.runs()) == 2  # nothing more


def test_a_reopened_ticket_starts_its_next_run_after_a_vanished_run_erpsync_stopped(floor: Floor) -> None:
    """F2 for a new run generation: the reopened ticket's machine was freed by the vanished run's
    stop, after its own first run ended."""
    stop_vanished(floor)
    fx = floor.shop.fx
    reopened = fx.clock_in(floor.op_b, ago(180), employee_id="ANN")
    floor.sync()
    fx.clock_out(reopened, ago(120))
    floor.sync()
    gone = fx.clock_in(floor.op_a, ago(60), employee_id="BOB")
    floor.sync()
    delete_ticket(floor, gone)
    floor.sync()
    stopped = floor.sim.runs()["erp:LT2"]
    assert floor.open_on() == [] and stopped["end_at"] is not None
    floor.reopen(reopened)
    floor.sync()
    assert floor.open_on() == ["erp:LT1.g2"]
    assert floor.sim.runs()["erp:LT1.g2"]["start_at"] == stopped["end_at"]
    assert overlaps(floor.sim) == []
