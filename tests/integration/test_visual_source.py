"""The infor-visual preset reads the same canonical records from SQLite, PostgreSQL and MariaDB.

The fixture holds the SQL-side dirty-data cases of erp-sources.md section 6: padded keys (1),
numeric-looking lots (2), split and sub work orders (3), unexpected statuses (4), local times across
a DST gap (5), the unit zoo and a unit nobody knows (7), odd characters in ids and descriptions
(8, 9), outside-service operations (12), open / indirect / old tickets (13).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, insert, select
from sqlalchemy.exc import DBAPIError

from erpsync.adapters.erp.visual_schema import LABOR_TICKET, OPERATION, PART, WORK_ORDER, create_visual_schema
from erpsync.adapters.erp.visual_source import VisualSource
from erpsync.config import SourceSettings, VisualPresetSettings
from erpsync.demo.visual_fixture import (
    OperationKey,
    VisualFixture,
    WorkOrderKey,
    labor_ticket_values,
    operation_values,
    work_order_values,
)
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, RunState

NOW = datetime(2024, 3, 12, 12, 0, tzinfo=UTC)
ZONE = "America/Chicago"


def fixture_engine(url: str) -> Engine:
    """An engine to build fixtures with; SQLite skips fsync per commit (fixtures commit a lot)."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA synchronous=OFF"))
    return engine


@pytest.fixture
def erp(database_url: str) -> Iterator[Engine]:
    engine = fixture_engine(database_url)
    create_visual_schema(engine)
    yield engine
    engine.dispose()


def build(engine: Engine) -> dict[str, int]:
    """The shared dirty-data fixture; returns ticket ids by name."""
    fx = VisualFixture(engine, site_id="MAIN")
    for res in ("HAAS-VF2", "F FOIL MILL #1", "LATHE 3 ", "VENDOR", "MILL-2"):
        fx.add_resource(res, f"resource {res.strip()}")
    fx.add_part("P-100", 'Bracket, 6" "steel"\nrev B')
    fx.add_part("P-200", "Ø12 bore, µm finish ®")

    padded = fx.add_work_order("1808412 ", "1", part_id="P-100", desired_qty=100, status="R")
    op10 = fx.add_operation(padded, 10, "HAAS-VF2", setup_hrs=1.5, run=Decimal("0.5"), calc_end_qty=100)
    op20 = fx.add_operation(padded, 20, "LATHE 3 ", run=60, run_type="PCS/HR", calc_end_qty=Decimal("98.5"))
    op30 = fx.add_operation(padded, 30, "VENDOR", service_id="HEAT-TREAT", vendor_id="ACME")
    op40 = fx.add_operation(padded, 40, "MILL-2", run=2, run_type="FURLONGS")

    split0 = fx.add_work_order("2001", "1", "0", "0", part_id="P-200", desired_qty=10)
    split1 = fx.add_work_order("2001", "1", "1", "0", part_id="P-200", desired_qty=5)
    leg = fx.add_work_order("2001", "1", "0", "1", part_id="P-200", desired_qty=20, status="F")
    s0 = fx.add_operation(split0, 10, "MILL-2", run=Decimal("1.5"), run_type="MIN/PC")
    s1 = fx.add_operation(split1, 10, "MILL-2", run=Decimal("1.5"), run_type="MIN/PC")
    lg = fx.add_operation(leg, 10, "MILL-2", run=4, run_type="HRS/JOB", calc_end_qty=8)

    lot01 = fx.add_work_order("3001", "01", desired_qty=1)
    lot1 = fx.add_work_order("3001", "1", desired_qty=2)
    l01 = fx.add_operation(lot01, 10, "HAAS-VF2", run=30, run_type="SEC/PC")
    l1 = fx.add_operation(lot1, 10, "HAAS-VF2", run=2, run_type="PCS/MIN")

    master = fx.add_work_order("ENG-1", "0", type="M")
    mop = fx.add_operation(master, 10, "HAAS-VF2")
    unreleased = fx.add_work_order("4001", "1", status="U")
    fx.add_operation(unreleased, 10, "HAAS-VF2")
    firmed = fx.add_work_order("4002", "1", status="F")
    fx.add_operation(firmed, 10, "HAAS-VF2", status="C")
    fx.add_operation(firmed, 20, "HAAS-VF2", status="X")
    fx.add_operation(firmed, 30, "MILL-2", status="R", setup_hrs=0.25)

    t: dict[str, int] = {}
    # 02:30 on 2024-03-10 does not exist in Chicago: shifted forward -> 08:30 UTC.
    t["open_run"] = fx.clock_in(op10, datetime(2024, 3, 10, 2, 30), ticket_type="R", resource_id="HAAS-VF2")
    t["open_setup"] = fx.clock_in(op20, datetime(2024, 3, 12, 5, 0), ticket_type="S")
    t["recent_closed"] = fx.clock_in(op10, datetime(2024, 3, 11, 8, 0), ticket_type="R")
    fx.clock_out(t["recent_closed"], datetime(2024, 3, 11, 10, 0), good_qty=12, bad_qty=1)
    t["old_closed"] = fx.clock_in(op10, datetime(2024, 3, 1, 8, 0))
    fx.clock_out(t["old_closed"], datetime(2024, 3, 1, 9, 0), good_qty=3)
    t["indirect"] = fx.clock_in(None, datetime(2024, 3, 12, 6, 0), indirect_id="CLEANUP")
    t["outside"] = fx.clock_in(op30, datetime(2024, 3, 12, 6, 0))
    t["bad_unit"] = fx.clock_in(op40, datetime(2024, 3, 12, 6, 0))
    t["bad_type"] = fx.clock_in(l1, datetime(2024, 3, 12, 6, 0), ticket_type="Z")
    t["split0"] = fx.clock_in(s0, datetime(2024, 3, 12, 6, 0))
    t["split1"] = fx.clock_in(s1, datetime(2024, 3, 12, 6, 5), resource_id="F FOIL MILL #1")
    t["leg"] = fx.clock_in(lg, datetime(2024, 3, 12, 6, 10), ticket_type="S")
    t["master"] = fx.clock_in(mop, datetime(2024, 3, 12, 6, 0))
    t["lot01"] = fx.clock_in(l01, datetime(2024, 3, 12, 7, 0))
    t["missing_op"] = fx.clock_in(OperationKey(lot1, 99), datetime(2024, 3, 12, 7, 0))
    return t


def source(url: str, **visual: Any) -> VisualSource:
    settings = SourceSettings(url=url, name="visual", kind="infor-visual", timezone=ZONE, batch_size=100)
    settings.visual = VisualPresetSettings(**visual)
    return VisualSource(settings, clock=lambda: NOW)


def canon(item: JobOperationRun | BadRecord | JobOperation) -> tuple[Any, ...]:
    if isinstance(item, BadRecord):
        return ("bad", item.record_key, item.field)
    op = item.operation if isinstance(item, JobOperationRun) else item
    fields = (
        op.job_key,
        op.job_name,
        op.operation_seq,
        op.operation_name,
        op.machine,
        op.part_name,
        op.lot_name,
        op.description,
        op.quantity_required,
        op.expected_setup_seconds,
        op.expected_part_ms,
        op.ideal_part_ms,
    )
    if isinstance(item, JobOperationRun):
        return ("run", item.run_key, item.state, item.start_at, item.end_at, item.origin, *fields)
    return ("op", *fields)


def test_runs_snapshot_on_every_backend(erp: Engine, database_url: str) -> None:
    t = build(erp)
    src = source(database_url)
    try:
        snapshot = src.read_runs()
        items = list(snapshot)
    finally:
        src.close()
    assert snapshot.complete is True
    runs = {i.run_key: i for i in items if isinstance(i, JobOperationRun)}
    bad = {i.record_key: i for i in items if isinstance(i, BadRecord)}

    def lt(name: str) -> str:
        return f"LT{t[name]}"

    assert set(runs) == {
        lt(n) for n in ("open_run", "open_setup", "recent_closed", "split0", "split1", "leg", "lot01")
    }
    assert set(bad) == {lt("bad_unit"), lt("bad_type"), lt("missing_op")}
    assert bad[lt("bad_unit")].field == "RUN_TYPE"
    assert "FURLONGS" in bad[lt("bad_unit")].reason
    assert bad[lt("bad_type")].field == "TYPE"
    assert "visual.setup_ticket_types" in bad[lt("bad_type")].reason
    assert bad[lt("missing_op")].field == "OPERATION_SEQ_NO"

    run = runs[lt("open_run")]
    assert run.state is RunState.PRODUCTION
    assert run.start_at == datetime(2024, 3, 10, 8, 30, tzinfo=UTC)  # DST gap shifted forward
    assert run.end_at is None
    assert run.origin == f"LABOR_TICKET.TRANSACTION_ID={t['open_run']}"
    op = run.operation
    assert op.job_key == ("W", "1808412", "1", "0", "0")  # padding trimmed
    assert (op.job_name, op.operation_seq, op.operation_name) == ("1808412/1", "10", "1808412/1|10")
    assert (op.machine, op.part_name, op.lot_name) == ("HAAS-VF2", "P-100", "1")
    assert op.description == 'Bracket, 6" "steel"\nrev B'
    assert (op.quantity_required, op.expected_setup_seconds, op.expected_part_ms) == (100, 5400, 1_800_000)

    setup = runs[lt("open_setup")]
    assert setup.state is RunState.SETUP
    assert setup.machine == "LATHE 3"  # from the operation, trimmed
    assert setup.operation.quantity_required == 99  # 98.5 rounds up
    assert setup.operation.expected_part_ms == 60_000  # 60 PCS/HR

    ended = runs[lt("recent_closed")]
    assert ended.state is RunState.ENDED
    assert ended.end_at == datetime(2024, 3, 11, 15, 0, tzinfo=UTC)

    assert runs[lt("split0")].operation.job_name == "2001/1"
    assert runs[lt("split1")].operation.job_name == "2001/1/1"
    assert runs[lt("split1")].machine == "F FOIL MILL #1"  # the ticket's resource wins
    assert runs[lt("leg")].operation.job_name == "2001/1-1"
    assert runs[lt("leg")].operation.expected_part_ms == 1_800_000  # 4 HRS/JOB over 8 pieces
    assert runs[lt("split0")].operation.expected_part_ms == 90_000
    assert runs[lt("lot01")].operation.job_key == ("W", "3001", "01", "0", "0")
    assert runs[lt("lot01")].operation.part_name == ""

    stats = snapshot.stats
    assert stats.runs == 7
    assert stats.quarantined == 3
    assert stats.skipped == {"indirect_ticket": 1, "outside_service": 1, "not_work_order": 1}
    assert stats.rows_read == 13  # the ticket closed 11 days ago is outside the 72 h lookback
    assert stats.machines == {"HAAS-VF2", "LATHE 3", "MILL-2", "F FOIL MILL #1"}


def test_identical_records_across_backends(pg_url: str, mariadb_url: str, sqlite_url: str) -> None:
    results = []
    for url in (sqlite_url.replace("state.db", "erp.db"), pg_url, mariadb_url):
        engine = fixture_engine(url)
        create_visual_schema(engine)
        build(engine)
        engine.dispose()
        src = source(url)
        try:
            runs = sorted(canon(i) for i in src.read_runs())
            ops = sorted(canon(i) for i in src.read_operations())
            looked_up = sorted(canon(i) for i in src.lookup_runs(["LT1", "LT4", "LT999", "nope"]))
        finally:
            src.close()
        results.append((runs, ops, looked_up))
    assert results[0] == results[1] == results[2]
    assert len(results[0][0]) == 10


def test_lookup_finds_any_ticket_by_id_in_batches(erp: Engine, database_url: str) -> None:
    t = build(erp)
    src = source(database_url)
    try:
        keys = [f"LT{n}" for n in range(100_000, 101_200)]  # 1200 unknown ids: three batches
        keys += [f"LT{t['old_closed']}", f"LT{t['open_run']}", "WO-1|10"]
        found = list(src.lookup_runs(keys))
    finally:
        src.close()
    runs = {i.run_key: i for i in found if isinstance(i, JobOperationRun)}
    assert set(runs) == {f"LT{t['old_closed']}", f"LT{t['open_run']}"}
    old = runs[f"LT{t['old_closed']}"]
    assert old.state is RunState.ENDED  # older than the lookback, still found by id
    assert old.end_at == datetime(2024, 3, 1, 15, 0, tzinfo=UTC)
    assert runs[f"LT{t['open_run']}"].state is RunState.PRODUCTION
    bad = [i for i in found if isinstance(i, BadRecord)]
    assert [(b.record_key, b.field) for b in bad] == [("WO-1|10", "run_key")]


def test_operations_respect_configurable_status_filters(erp: Engine, database_url: str) -> None:
    build(erp)
    src = source(database_url)
    try:
        items = list(src.read_operations())
    finally:
        src.close()
    ops = {(i.job_name, i.operation_seq) for i in items if isinstance(i, JobOperation)}
    bad = [i for i in items if isinstance(i, BadRecord)]
    # U (unreleased) work order and C/X operations are not imported; masters never are.
    assert ops == {
        ("1808412/1", "10"),
        ("1808412/1", "20"),
        ("2001/1", "10"),
        ("2001/1/1", "10"),
        ("2001/1-1", "10"),
        ("3001/01", "10"),
        ("3001/1", "10"),
        ("4002/1", "30"),
    }
    assert [(b.record_key, b.field) for b in bad] == [("W/1808412/1/0/0|40", "RUN_TYPE")]
    assert src.operation_stats.skipped == {"outside_service": 1}
    assert src.operation_stats.operations == 8
    firmed = next(i for i in items if isinstance(i, JobOperation) and i.job_name == "4002/1")
    assert firmed.expected_setup_seconds == 900
    assert firmed.expected_part_ms is None  # no RUN standard

    # The filters are configuration: only unreleased work orders, no operation excluded.
    src = source(database_url, work_order_statuses=["U"], excluded_operation_statuses=[])
    try:
        unreleased = {
            (i.job_name, i.operation_seq) for i in src.read_operations() if isinstance(i, JobOperation)
        }
    finally:
        src.close()
    assert unreleased == {("4001/1", "10")}


def test_site_filter_and_ticket_type_config(erp: Engine, database_url: str) -> None:
    t = build(erp)
    other = VisualFixture(erp, site_id="EAST")
    wo = other.add_work_order("9001", "1")
    op = other.add_operation(wo, 10, "MILL-2")
    other.clock_in(op, datetime(2024, 3, 12, 6, 0))
    src = source(database_url, site_id="MAIN", run_ticket_types=["R", "Z"])
    try:
        runs = {i.run_key: i for i in src.read_runs() if isinstance(i, JobOperationRun)}
    finally:
        src.close()
    assert f"LT{t['bad_type']}" in runs  # 'Z' is now a run type
    assert all(r.operation.job_key[1] != "9001" for r in runs.values())  # other site not read


def test_streams_every_row_in_batches(erp: Engine, database_url: str) -> None:
    fx = VisualFixture(erp)
    fx.add_resource("M1")
    wo_rows, op_rows, lt_rows = [], [], []
    for n in range(350):
        key = WorkOrderKey("W", f"B{n:05d}")
        wo_rows.append(work_order_values(key, site_id="MAIN", DESIRED_QTY=10))
        opk = OperationKey(key, 10)
        op_rows.append(operation_values(opk, "M1", site_id="MAIN", RUN=Decimal(1), RUN_TYPE="MIN/PC"))
        lt_rows.append(labor_ticket_values(n + 1, opk, site_id="MAIN", clock_in=datetime(2024, 3, 12, 6)))
    fx.insert(WORK_ORDER, wo_rows)
    fx.insert(OPERATION, op_rows)
    fx.insert(LABOR_TICKET, lt_rows)
    src = source(database_url)  # batch_size=100: four fetches
    try:
        snapshot = src.read_runs()
        keys = [i.run_key for i in snapshot if isinstance(i, JobOperationRun)]
    finally:
        src.close()
    assert keys == [f"LT{n}" for n in range(1, 351)]
    assert snapshot.stats.rows_read == 350


def test_source_connections_refuse_writes(erp: Engine, database_url: str) -> None:
    """Read-only sessions on every backend: PG read-only tx, MySQL session, SQLite query_only."""
    build(erp)
    src = source(database_url)
    try:
        with pytest.raises(DBAPIError), src.engine.begin() as conn:
            conn.execute(insert(PART).values(ID="WRITTEN-BY-SOURCE"))
        assert len(list(src.read_runs())) == 10  # reading still works on the same engine
    finally:
        src.close()
    with erp.connect() as conn:
        assert conn.execute(select(PART.c.ID).where(PART.c.ID == "WRITTEN-BY-SOURCE")).first() is None
