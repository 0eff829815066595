"""generic-sql maps any table, view or SELECT onto canonical runs, on every backend, safely."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    Table,
    Unicode,
    create_engine,
    insert,
    inspect,
)

from erpsync.adapters.erp.factory import open_source
from erpsync.adapters.erp.generic_source import GenericSqlSource
from erpsync.config import GenericMappingSettings, SourceSettings
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, RunState

# Awkward identifiers on purpose: a space in the table name, a reserved word as a column.
OPS = Table(
    "job ops",
    MetaData(),
    Column("RowId", Integer, primary_key=True, autoincrement=False),
    Column("JobNo", Unicode(30)),
    Column("order", Unicode(10)),
    Column("WorkCntr", Unicode(20)),
    Column("Qty", Unicode(20)),
    Column("SetupMin", Numeric(10, 3)),
    Column("CycleSec", Numeric(10, 3)),
    Column("StartedAt", DateTime),
    Column("EndedAt", DateTime),
    Column("InSetup", Unicode(5)),
    Column("Stat", Unicode(20)),
    Column("Descr", Unicode(120)),
)
ROWS: list[dict[str, Any]] = [
    dict(RowId=1, JobNo="J-100 ", order="10", WorkCntr="HAAS-1", Qty="1.234,5", SetupMin=30, CycleSec=45,
         StartedAt=datetime(2024, 3, 10, 2, 30), InSetup="N", Stat="Running", Descr='Bracket, "B"'),
    dict(RowId=2, JobNo="J-100", order="20", WorkCntr="LATHE", Qty="10", CycleSec=12,
         StartedAt=datetime(2024, 3, 12, 6, 0), InSetup="Y", Stat="Setting up"),
    dict(RowId=3, JobNo="J-101", order="10", WorkCntr="HAAS-1", Qty="5", CycleSec=30,
         StartedAt=datetime(2024, 3, 11, 8, 0), EndedAt=datetime(2024, 3, 11, 9, 0), Stat="Done"),
    dict(RowId=4, JobNo="J-102", order="10", WorkCntr="HAAS-1", Qty="7", CycleSec=30, Stat="Queued"),
    dict(RowId=5, JobNo="J-103", order="10", WorkCntr="MILL", Qty="many", CycleSec=30,
         StartedAt=datetime(2024, 3, 12, 6, 0), Stat="Running"),
    dict(RowId=6, JobNo="J-104", order="10", WorkCntr="", Qty="1", Stat="Running",
         StartedAt=datetime(2024, 3, 12, 6, 0)),
    dict(RowId=7, JobNo="J-105", order="10", WorkCntr="MILL", Qty="1", Stat="Template"),
    dict(RowId=8, JobNo="J-106", order="10", WorkCntr="MILL", Qty="1", Stat="Mystery",
         StartedAt=datetime(2024, 3, 12, 6, 0)),
]  # fmt: skip
COLUMNS = {
    "job": "jobno",  # matched case-insensitively to JobNo
    "operation": "order",
    "machine": "WorkCntr",
    "quantity": "Qty",
    "setup_time": "SetupMin",
    "run_time": "CycleSec",
    "start_at": "StartedAt",
    "end_at": "EndedAt",
    "in_setup": "InSetup",
    "description": "Descr",
}


@pytest.fixture
def erp(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    OPS.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(OPS), [{c.name: row.get(c.name) for c in OPS.columns} for row in ROWS])
    yield engine
    engine.dispose()


def settings(url: str, **generic: Any) -> SourceSettings:
    mapping = {
        "table": "job ops",
        "columns": COLUMNS,
        "run_time_unit": "SEC/PC",
        "setup_time_unit": "minutes",
    }
    mapping.update(generic)
    return SourceSettings(
        url=url,
        name="generic",
        kind="generic-sql",
        timezone="America/Chicago",
        batch_size=100,
        generic=GenericMappingSettings(**mapping),
    )


def test_table_mapping_reads_runs(erp: Engine, database_url: str) -> None:
    source = open_source(settings(database_url))
    try:
        snapshot = source.read_runs()
        assert snapshot is not None
        items = list(snapshot)
    finally:
        source.close()
    assert snapshot.complete is True
    runs = {i.run_key: i for i in items if isinstance(i, JobOperationRun)}
    bad = {i.record_key: i for i in items if isinstance(i, BadRecord)}
    assert set(runs) == {"J-100|10", "J-100|20", "J-101|10", "J-106|10"}
    first = runs["J-100|10"]
    assert first.state is RunState.PRODUCTION
    assert first.start_at == datetime(2024, 3, 10, 8, 30, tzinfo=UTC)  # DST gap, shifted forward
    op = first.operation
    assert (op.job_key, op.job_name, op.operation_name, op.machine) == (
        ("J-100",),
        "J-100",
        "J-100|10",
        "HAAS-1",
    )
    assert (op.quantity_required, op.expected_setup_seconds, op.expected_part_ms) == (1235, 1800, 45_000)
    assert op.description == 'Bracket, "B"'
    assert runs["J-100|20"].state is RunState.SETUP
    assert runs["J-101|10"].state is RunState.ENDED
    assert runs["J-101|10"].end_at == datetime(2024, 3, 11, 14, 0, tzinfo=UTC)
    assert set(bad) == {"J-103|10", "J-104|10"}
    assert bad["J-103|10"].field == "Qty"
    assert "many" in bad["J-103|10"].reason
    assert bad["J-104|10"].field == "WorkCntr"
    assert snapshot.stats.rows_read == 8


def test_status_map_decides_the_run_state(erp: Engine, database_url: str) -> None:
    status_map = {
        "running": "production",
        "setting up": "setup",
        "done": "ended",
        "queued": "not_started",
        "template": "skip",
    }
    source = GenericSqlSource(
        settings(database_url, columns={**COLUMNS, "status": "Stat"}, status_map=status_map)
    )
    try:
        items = list(source.read_runs())
        ops = list(source.read_operations())
    finally:
        source.close()
    runs = {i.run_key: i.state for i in items if isinstance(i, JobOperationRun)}
    assert runs == {"J-100|10": RunState.PRODUCTION, "J-100|20": RunState.SETUP, "J-101|10": RunState.ENDED}
    bad = {i.record_key: i for i in items if isinstance(i, BadRecord)}
    assert bad["J-106|10"].field == "Stat"
    assert "status_map" in bad["J-106|10"].reason
    imported = {(o.job_name, o.operation_seq) for o in ops if isinstance(o, JobOperation)}
    assert imported == {("J-100", "10"), ("J-100", "20"), ("J-102", "10")}  # not ended, not skipped
    assert source.operation_stats.skipped == {"status": 1}


def test_query_mapping_and_bound_lookups(erp: Engine, database_url: str) -> None:
    table = inspect(erp).get_table_names()
    assert "job ops" in table
    quoted = erp.dialect.identifier_preparer.quote
    query = f"SELECT * FROM {quoted('job ops')} WHERE {quoted('WorkCntr')} <> 'LATHE'"
    source = GenericSqlSource(settings(database_url, table=None, query=query))
    try:
        keys = {i.run_key for i in source.read_runs() if isinstance(i, JobOperationRun)}
        assert keys == {"J-100|10", "J-101|10", "J-106|10"}
        many = [f"J-9{n:03d}|10" for n in range(1100)] + ["J-101|10", 'x\'; DROP TABLE "job ops"; --|1']
        found = [i.run_key for i in source.lookup_runs(many) if isinstance(i, JobOperationRun)]
        assert found == ["J-101|10"]
    finally:
        source.close()
    assert "job ops" in inspect(erp).get_table_names()  # values were bound, never pasted

    # With a run_key column, lookups bind run keys directly.
    by_key = GenericSqlSource(settings(database_url, columns={**COLUMNS, "run_key": "RowId"}))
    try:
        found_by_key = {
            i.run_key: i.state
            for i in by_key.lookup_runs(["3", "1", "4", "999"])
            if isinstance(i, JobOperationRun)
        }
    finally:
        by_key.close()
    assert found_by_key == {"1": RunState.PRODUCTION, "3": RunState.ENDED}  # row 4 never started


def test_mapping_errors_name_the_key(erp: Engine, database_url: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"columns": {**COLUMNS, "machine": "Machine_No"}},
            "source.generic.columns.machine: column 'Machine_No'",
        ),
        ({"table": "no_such_table"}, "source.generic.table: table or view 'no_such_table' not found"),
    ]
    for generic, message in cases:
        source = GenericSqlSource(settings(database_url, **generic))
        try:
            with pytest.raises(ConfigError, match=message):
                list(source.read_runs())
        finally:
            source.close()


@pytest.mark.parametrize(
    ("generic", "message"),
    [
        ({"columns": {**COLUMNS, "colour": "x"}}, "source.generic.columns.colour: unknown field"),
        ({"columns": {"job": "JobNo", "operation": "order"}}, "source.generic.columns.machine: required"),
        ({"table": None}, "source.generic: set table"),
        ({"run_time_unit": "FURLONGS"}, "source.generic.run_time_unit"),
        ({"run_time_unit": None}, "source.generic.run_time_unit: required"),
        ({"columns": {**COLUMNS, "status": "Stat"}}, "source.generic.status_map: required"),
    ],
)
def test_config_errors_before_connecting(generic: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GenericSqlSource(settings("sqlite://", **generic))


def test_decimal_quantities_from_numeric_columns(database_url: str) -> None:
    engine = create_engine(database_url)
    table = Table(
        "ops_numeric",
        MetaData(),
        Column("job", Unicode(10), primary_key=True),
        Column("op", Integer),
        Column("wc", Unicode(10)),
        Column("qty", Numeric(20, 8)),
        Column("started", DateTime),
    )
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table), [{"job": "A", "op": 10, "wc": "M", "qty": Decimal("10.00000000"),
                                      "started": datetime(2024, 1, 1, 8)}])  # fmt: skip
    engine.dispose()
    cols = {"job": "job", "operation": "op", "machine": "wc", "quantity": "qty", "start_at": "started"}
    source = GenericSqlSource(settings(database_url, table="ops_numeric", columns=cols, run_time_unit=None))
    try:
        runs = [i for i in source.read_runs() if isinstance(i, JobOperationRun)]
    finally:
        source.close()
    assert [(r.run_key, r.operation.quantity_required) for r in runs] == [("A|10", 10)]
