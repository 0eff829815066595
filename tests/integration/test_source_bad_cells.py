"""Issue 19, ERP-source cases, end to end: a real source, the sync service, the MM simulator over HTTP.

Each test asserts what MM holds afterwards (open runs per machine, run ids, start/end), what the
ERP holds (untouched: erpsync only reads it), and what the quarantine and the audit say.
- case 4: one bad cell costs one row (VISUAL on SQLite and PostgreSQL, CSV path, generic-sql);
- case 3: inbox A, then B, then A again: the second A is read;
- case 7: one Windows-1252 byte on another line does not change a UTF-8 row's run key or job name;
- case 8: generic-sql rows sharing a run key on two machines are quarantined, not resolved silently.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    Table,
    Unicode,
    create_engine,
    insert,
    select,
    text,
)

from erpsync.adapters.erp.visual_schema import LABOR_TICKET, create_visual_schema
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry
from erpsync.config import (
    CsvSettings,
    GenericMappingSettings,
    ServiceSettings,
    Settings,
    SourceSettings,
    StateSettings,
    SyncSettings,
)
from erpsync.demo.visual_fixture import VisualFixture
from tests.fixtures_mm import fast_mm_settings
from tests.integration.test_sync_e2e import Harness
from tests.sync_helpers import local

VISUAL_HEADER = (
    "WORKORDER_TYPE,WORKORDER_BASE_ID,WORKORDER_LOT_ID,SEQUENCE_NO,RESOURCE_ID,PART_ID,CALC_END_QTY,"
    "QTY_GOOD,SETUP_HRS,RUN,RUN_TYPE,DESIRED_WANT_DATE,ACT_START_DATE,STATUS\n"
)


@pytest.fixture
def state(sqlite_url: str) -> Iterator[StateStore]:
    store = StateStore(create_db_engine(sqlite_url))
    migrate.upgrade(store.engine)
    yield store
    store.dispose()


def settings(source: SourceSettings, state_url: str, sim: MMSimulator, **sync: Any) -> Settings:
    return Settings(
        state=StateSettings(url=state_url),
        mm=fast_mm_settings(sim.base_url, sim.api_key),
        source=source,
        sync=SyncSettings(**sync),
        service=ServiceSettings(lease_ttl_seconds=5, lease_renew_seconds=1, lease_retry_seconds=0.5),
    )


def open_runs(sim: MMSimulator) -> dict[str, str]:
    """MM run id -> machine of every run MM has open."""
    return {run_id: run["machine_id"] for run_id, run in sim.runs().items() if run["end_at"] is None}


def quarantine(store: StateStore) -> dict[str, QuarantineEntry]:
    with store.session() as session:
        entries = session.scalars(select(QuarantineEntry).where(QuarantineEntry.status == "open")).all()
        session.expunge_all()
    return {e.record_key: e for e in entries}


def quarantine_audit(store: StateStore) -> list[str]:
    with store.session() as session:
        return sorted(
            d or ""
            for d in session.scalars(select(AuditEntry.detail).where(AuditEntry.action == "quarantine"))
        )


def assert_one_open_run_per_machine(sim: MMSimulator) -> None:
    per_machine = Counter(open_runs(sim).values())
    assert all(n == 1 for n in per_machine.values()), per_machine


# -- case 4: VISUAL database ----------------------------------------------------------------------

# Per backend, values its column types can hold: SQLite keeps 1E30 in a decimal(20,8) column (the
# issue's crash); PostgreSQL's numeric(20,8) / (8,3) cap them, so the largest they hold is used.
# RUN is the smallest rate the column's 8 decimals hold (1E-30 reads back as 0: no standard).
POISON = {
    "sqlite": {"CALC_END_QTY": "1E30", "SETUP_HRS": "1E30", "RUN": "0.00000001"},
    "postgresql": {"CALC_END_QTY": "999999999999", "SETUP_HRS": "99999", "RUN": "0.00000001"},
}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_visual_bad_cells_cost_one_ticket_each(
    backend: str, database_url: str, state: StateStore, sqlite_url: str, mm_simulator: MMSimulator
) -> None:
    engine = create_db_engine(database_url)
    create_visual_schema(engine)
    fx = VisualFixture(engine)
    ops = {}
    for i in range(1, 7):
        machine = fx.add_resource(f"HAAS-{i}")
        wo = fx.add_work_order(f"5500{i}", "1", desired_qty=10)
        run_type = "PCS/HR" if i == 4 else "HRS/PC"
        ops[machine] = fx.add_operation(
            wo, 10, machine, setup_hrs=1, run=0.05, run_type=run_type, calc_end_qty=10
        )
    poison = POISON[backend]
    with engine.begin() as conn:
        for machine, column in (("HAAS-2", "CALC_END_QTY"), ("HAAS-3", "SETUP_HRS"), ("HAAS-4", "RUN")):
            conn.execute(
                text(f'UPDATE "OPERATION" SET "{column}" = {poison[column]} WHERE "RESOURCE_ID" = :m'),
                {"m": machine},
            )
    good = fx.clock_in(ops["HAAS-1"], local(8))
    tickets = {m: fx.clock_in(ops[m], local(8)) for m in ("HAAS-2", "HAAS-3", "HAAS-4")}
    tickets["HAAS-5"] = fx.clock_in(ops["HAAS-5"], datetime(9999, 12, 31, 23, 59))
    tickets["HAAS-6"] = fx.clock_in(ops["HAAS-6"], datetime(1, 1, 1))
    source = SourceSettings(kind="infor-visual", url=database_url, timezone="America/Chicago")
    h = Harness(settings(source, sqlite_url, mm_simulator), state)

    summary = h.sync()

    assert summary.started == 1
    assert open_runs(mm_simulator) == {f"erp:LT{good}": "HAAS-1"}
    assert mm_simulator.runs()[f"erp:LT{good}"]["start_at"] == "2026-11-20T14:00:00.000Z"
    bad = quarantine(state)
    assert set(bad) == {f"LT{t}" for t in tickets.values()}  # keyed by run key: the binding is held
    expect = {
        "HAAS-2": ("CALC_END_QTY", "10^9 pieces"),
        "HAAS-3": ("SETUP_HRS", "10 years"),
        "HAAS-4": ("RUN", "10 years"),
        "HAAS-5": ("CLOCK_IN", "1900-01-01..2199-12-31"),
        "HAAS-6": ("CLOCK_IN", "1900-01-01..2199-12-31"),
    }
    for machine, (field, bound) in expect.items():
        entry = bad[f"LT{tickets[machine]}"]
        assert (entry.field, entry.error_class) == (field, "invalid_record"), entry.message
        assert bound in entry.message, entry.message
    audit = quarantine_audit(state)
    assert len(audit) == 5 and all("1900" in d or "10" in d for d in audit)
    with engine.connect() as conn:  # the ERP is read, never written
        assert conn.execute(select(LABOR_TICKET.c.CLOCK_OUT)).scalars().all() == [None] * 6

    summary = h.sync()  # the next cycle is as good: nothing to do, nothing new quarantined
    assert (summary.started, summary.stopped) == (0, 0)
    assert len(quarantine_audit(state)) == 5
    engine.dispose()


# -- case 4: CSV ----------------------------------------------------------------------------------


def csv_row(base: str, machine: str, **cells: str) -> str:
    values = {"qty": "10", "good": "5", "setup": "1", "run": "0.05", "unit": "HRS/PC", "due": "", "start": ""}
    values.update(cells)
    v = values
    return (
        f"W,{base},1,10,{machine},P-{base},{v['qty']},{v['good']},{v['setup']},{v['run']},{v['unit']},"
        f"{v['due']},{v['start']},R\n"
    )


def csv_source(tmp_path: Path, zone: str = "America/Chicago", **csv: Any) -> SourceSettings:
    return SourceSettings(
        kind="infor-visual-csv", name="visual-csv", timezone=zone, csv=CsvSettings(settle_seconds=0, **csv)
    )


def test_csv_bad_cells_cost_one_line_each(
    tmp_path: Path, state: StateStore, sqlite_url: str, mm_simulator: MMSimulator
) -> None:
    export = tmp_path / "ops.csv"
    content = VISUAL_HEADER + "".join(
        [
            csv_row("9001", "M1"),
            csv_row("9002", "M2", qty="1E30"),
            csv_row("9003", "M3", qty="12345678901234567890123456789"),
            csv_row("9004", "M4", setup="1e30"),
            csv_row("9005", "M5", run="1e-30", unit="PCS/HR"),
            csv_row("9006", "M6", due="9999-12-31 23:59"),
            csv_row("9007", "M7", due="2026-12-01 16:00"),
        ]
    )
    export.write_text(content, encoding="utf-8")
    source = csv_source(tmp_path, path=export)
    h = Harness(settings(source, sqlite_url, mm_simulator), state)

    summary = h.sync()

    assert summary.started == 2
    runs = open_runs(mm_simulator)
    assert sorted(runs.values()) == ["M1", "M7"]
    assert {mm_simulator.runs()[r]["job_name"] for r in runs} == {"9001/1", "9007/1"}
    bad = quarantine(state)
    expect = {
        "W/9002/1/0/0|10": (3, "CALC_END_QTY", "10^9 pieces"),
        "W/9003/1/0/0|10": (4, "CALC_END_QTY", "10^9 pieces"),
        "W/9004/1/0/0|10": (5, "SETUP_HRS", "10 years"),
        "W/9005/1/0/0|10": (6, "RUN", "10 years"),
        "W/9006/1/0/0|10": (7, "DESIRED_WANT_DATE", "1900-01-01..2199-12-31"),
    }
    assert set(bad) == set(expect)
    for key, (line, field, bound) in expect.items():
        entry = bad[key]
        assert (entry.file_name, entry.line_number, entry.field) == ("ops.csv", line, field)
        assert bound in entry.message, entry.message
    assert len(quarantine_audit(state)) == 5
    assert export.read_text(encoding="utf-8") == content  # the export is read, never changed


def test_csv_start_date_out_of_range_in_tokyo_costs_one_line(
    tmp_path: Path, state: StateStore, sqlite_url: str, mm_simulator: MMSimulator
) -> None:
    export = tmp_path / "ops.csv"
    export.write_text(
        VISUAL_HEADER
        + csv_row("9101", "M1", start="2026-11-20 08:00")
        + csv_row("9102", "M2", start="0001-01-01"),
        encoding="utf-8",
    )
    h = Harness(settings(csv_source(tmp_path, "Asia/Tokyo", path=export), sqlite_url, mm_simulator), state)

    assert h.sync().started == 1
    (run,) = [r for r in mm_simulator.runs().values() if r["end_at"] is None]
    assert (run["machine_id"], run["job_name"]) == ("M1", "9101/1")
    entry = quarantine(state)["W/9102/1/0/0|10"]
    assert (entry.line_number, entry.field) == (3, "ACT_START_DATE")
    assert "0001-01-01 00:00:00 (Asia/Tokyo) is outside the bound 1900-01-01..2199-12-31" in entry.message


# -- case 4 and case 8: generic-sql ----------------------------------------------------------------

GENERIC = {
    "run_key": "RunKey",
    "job": "Job",
    "operation": "Op",
    "machine": "Machine",
    "quantity": "Qty",
    "run_time": "CycleSec",
    "start_at": "StartedAt",
}


def generic_table(url: str, rows: list[dict[str, Any]]) -> None:
    table = Table(
        "ops",
        MetaData(),
        Column("Id", Integer, primary_key=True, autoincrement=False),
        Column("RunKey", Unicode(30)),
        Column("Job", Unicode(30)),
        Column("Op", Unicode(10)),
        Column("Machine", Unicode(20)),
        Column("Qty", Float),
        Column("CycleSec", Float),
        Column("StartedAt", DateTime),
    )
    engine = create_engine(url)
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(table), rows)
    engine.dispose()


def generic_source(url: str) -> SourceSettings:
    mapping = GenericMappingSettings(table="ops", columns=GENERIC, run_time_unit="SEC/PC")
    return SourceSettings(
        kind="generic-sql", name="generic", url=url, timezone="America/Chicago", generic=mapping
    )


def generic_row(i: int, key: str, machine: str, **values: Any) -> dict[str, Any]:
    row = {"Id": i, "RunKey": key, "Job": f"J{i}", "Op": "10", "Machine": machine, "Qty": 10.0}
    return {"CycleSec": 30.0, "StartedAt": local(8), **row, **values}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_generic_float_overflow_and_nan_cost_one_row_each(
    backend: str, database_url: str, state: StateStore, sqlite_url: str, mm_simulator: MMSimulator
) -> None:
    # SQLite stores NaN as NULL, so there infinity stands in for it; PostgreSQL keeps NaN.
    not_a_number = float("nan") if backend == "postgresql" else float("inf")
    generic_table(
        database_url,
        [
            generic_row(1, "R1", "M1"),
            generic_row(2, "R2", "M2", Qty=1e300),
            generic_row(3, "R3", "M3", CycleSec=not_a_number),
            generic_row(4, "R4", "M4", CycleSec=1e300),
            generic_row(5, "R5", "M5", StartedAt=datetime(9999, 12, 31, 23, 59)),
        ],
    )
    h = Harness(settings(generic_source(database_url), sqlite_url, mm_simulator), state)

    assert h.sync().started == 1
    assert open_runs(mm_simulator) == {"generic:R1": "M1"}
    bad = quarantine(state)
    assert {k: bad[k].field for k in bad} == {
        "R2": "Qty",
        "R3": "CycleSec",
        "R4": "CycleSec",
        "R5": "StartedAt",
    }
    assert "10^9 pieces" in bad["R2"].message
    assert "not a finite number" in bad["R3"].message
    assert "10 years" in bad["R4"].message
    assert "1900-01-01..2199-12-31" in bad["R5"].message
    assert len(quarantine_audit(state)) == 4


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_generic_rows_sharing_a_run_key_on_two_machines_are_quarantined(
    backend: str, database_url: str, state: StateStore, sqlite_url: str, mm_simulator: MMSimulator
) -> None:
    generic_table(
        database_url,
        [
            generic_row(1, "R1", "M1", Job="J1"),
            generic_row(2, "R1", "M2", Job="J1"),
            generic_row(3, "R2", "M3", Job="J3"),
            generic_row(4, "R2", "M3", Job="J3"),  # the same row again (a join fan-out): not a conflict
        ],
    )
    h = Harness(settings(generic_source(database_url), sqlite_url, mm_simulator), state)

    summary = h.sync()

    assert summary.started == 1
    assert open_runs(mm_simulator) == {"generic:R2": "M3"}
    bad = quarantine(state)
    assert set(bad) == {"R1"}
    entry = bad["R1"]
    assert (entry.error_class, entry.field) == ("duplicate_run_key", "RunKey")
    assert "'M1'" in entry.message and "'M2'" in entry.message
    assert any(("duplicate" not in d and "R1" in d) or "'M1', 'M2'" in d for d in quarantine_audit(state))


# -- case 3: inbox A, B, A -------------------------------------------------------------------------


def drop(inbox: Path, name: str, content: str, age: float) -> None:
    path = inbox / name
    path.write_text(content, encoding="utf-8")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))


def test_inbox_state_a_then_b_then_a_again_is_read(
    tmp_path: Path, state: StateStore, sqlite_url: str, mm_simulator: MMSimulator
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    a = VISUAL_HEADER + csv_row("9201", "M1")
    b = a + csv_row("9202", "M2")
    source = csv_source(tmp_path, inbox=inbox)
    h = Harness(settings(source, sqlite_url, mm_simulator, vanished_runs="stop"), state)

    drop(inbox, "export-1.csv", a, 30)
    assert h.sync().started == 1
    drop(inbox, "export-2.csv", b, 20)
    assert h.sync().started == 1
    assert sorted(open_runs(mm_simulator).values()) == ["M1", "M2"]

    drop(inbox, "export-3.csv", a, 10)  # the same bytes as export-1: the ERP is back at state A
    summary = h.sync()

    assert summary.stopped == 1
    assert sorted(open_runs(mm_simulator).values()) == ["M1"]
    (stopped,) = [r for r in mm_simulator.runs().values() if r["end_at"] is not None]
    assert (stopped["machine_id"], stopped["job_name"]) == ("M2", "9202/1")
    assert sorted(p.name for p in (inbox / "archive").iterdir()) == [
        "export-1.csv",
        "export-2.csv",
        "export-3.csv",
    ]
    assert quarantine(state) == {}

    drop(inbox, "export-4.csv", a, 5)  # the same as the LAST file processed: nothing new, not read
    assert (h.sync().started, h.sync().stopped) == (0, 0)
    assert (inbox / "archive" / "export-4.csv").exists()


# -- case 7: encoding -------------------------------------------------------------------------------


def test_a_cp1252_byte_elsewhere_does_not_change_a_utf8_rows_run_key(
    tmp_path: Path, state: StateStore, sqlite_url: str, mm_simulator: MMSimulator
) -> None:
    export = tmp_path / "ops.csv"
    utf8_row = csv_row("MÜLLER-7", "M1")
    export.write_bytes((VISUAL_HEADER + utf8_row).encode("utf-8"))
    h = Harness(settings(csv_source(tmp_path, path=export), sqlite_url, mm_simulator), state)
    assert h.sync().started == 1
    (first_id,) = open_runs(mm_simulator)

    cp1252_row = csv_row("9301", "M2").replace("P-9301", "Ø-9301")
    export.write_bytes((VISUAL_HEADER + utf8_row).encode("utf-8") + cp1252_row.encode("cp1252"))
    summary = h.sync()

    assert (summary.started, summary.stopped) == (1, 0)
    runs = mm_simulator.runs()
    assert open_runs(mm_simulator).keys() == {first_id, *(set(open_runs(mm_simulator)) - {first_id})}
    by_machine = {r["machine_id"]: r for r in runs.values()}
    assert len(runs) == 2 and set(by_machine) == {"M1", "M2"}  # no second run for the same operation
    assert by_machine["M1"]["job_name"] == "MÜLLER-7/1"
    assert by_machine["M2"]["part_name"] == "Ø-9301"
    assert all(r["end_at"] is None for r in runs.values())
    assert_one_open_run_per_machine(mm_simulator)
    assert quarantine(state) == {}
