"""generic-sql with a `watermark` column: between full reads a read takes the changed rows plus the
open runs by key, and still sees every change a full read would (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    Unicode,
    create_engine,
    delete,
    insert,
    update,
)

from erpsync.adapters.erp.generic_source import GenericSqlSource
from erpsync.adapters.erp.read_window import ReadWindows
from erpsync.config import GenericMappingSettings, SourceSettings
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import BadRecord, JobOperationRun

START = datetime(2024, 3, 12, 12, 0, tzinfo=UTC)
RUNS = Table(
    "ERP_RUNS",
    MetaData(),
    Column("ID", Integer, primary_key=True, autoincrement=False),
    Column("RUN_KEY", Unicode(20), nullable=False),
    Column("JOB", Unicode(20), nullable=False),
    Column("OP", Unicode(10), nullable=False),
    Column("MACHINE", Unicode(20), nullable=False),
    Column("STARTED", DateTime),
    Column("ENDED", DateTime),
    Column("VERSION", Integer, nullable=False),  # bumped on every change, like a rowversion
    Column("CHANGED_AT", DateTime, nullable=False),  # set on every change
)


class Erp:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.version = 0
        self.now = START.replace(tzinfo=None)

    def _stamp(self) -> dict[str, Any]:
        self.version += 1
        self.now += timedelta(seconds=1)
        return {"VERSION": self.version, "CHANGED_AT": self.now}

    def add(self, n: int, *, ended: bool = False, job: str | None = None) -> None:
        row = {
            "ID": n,
            "RUN_KEY": f"R{n}",
            "JOB": job or f"J{n}",
            "OP": "10",
            "MACHINE": f"M{n % 3}",
            "STARTED": START.replace(tzinfo=None) - timedelta(hours=2),
            "ENDED": START.replace(tzinfo=None) - timedelta(hours=1) if ended else None,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(RUNS), [row | self._stamp()])

    def set(self, n: int, *, stamp: bool = True, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(RUNS).where(RUNS.c["ID"] == n).values(**values, **(self._stamp() if stamp else {}))
            )

    def delete(self, n: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(RUNS).where(RUNS.c["ID"] == n))


@pytest.fixture
def erp(database_url: str) -> Iterator[Erp]:
    engine = create_engine(database_url)
    RUNS.metadata.create_all(engine)
    yield Erp(engine)
    engine.dispose()


def _source(url: str, clock: list[datetime], windows: ReadWindows, **mapping: Any) -> GenericSqlSource:
    columns = {"run_key": "RUN_KEY", "job": "JOB", "operation": "OP", "machine": "MACHINE",
               "start_at": "STARTED", "end_at": "ENDED"}  # fmt: skip
    generic = GenericMappingSettings(table="ERP_RUNS", columns=columns, **mapping)
    settings = SourceSettings(url=url, name="erp", kind="generic-sql", generic=generic)
    return GenericSqlSource(settings, clock=lambda: clock[0], windows=windows)


def _runs(source: GenericSqlSource) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for item in source.read_runs():
        if isinstance(item, JobOperationRun):
            out[item.run_key] = (item.state, item.machine, item.end_at)
        else:
            assert isinstance(item, BadRecord)
            out[item.record_key] = ("bad", item.field)
    return out


@pytest.mark.parametrize(
    "mapping",
    [{"watermark": "VERSION", "watermark_margin": 0}, {"watermark": "changed_at"}],
    ids=["version", "changed_at (default margin 300 s)"],
)
def test_changes_are_seen_and_unchanged_ended_runs_are_not_reread(
    erp: Erp, database_url: str, mapping: dict[str, Any]
) -> None:
    clock = [START]
    windows = ReadWindows()
    source = _source(database_url, clock, windows, full_read_interval_minutes=60, **mapping)
    full = _source(database_url, clock, ReadWindows(), full_read_interval_minutes=0, **mapping)
    for n in range(6, 9):
        erp.add(n, ended=True)
    erp.now += timedelta(minutes=10)  # the ended runs last changed well before the margin
    for n in range(1, 6):
        erp.add(n)
    try:
        assert _runs(source) == _runs(full)  # the first read of a process is a full one

        erp.add(9)  # new
        erp.set(1, ENDED=erp.now)  # ended
        erp.set(2, MACHINE="M9", stamp=False)  # edited without moving the watermark: open, so re-read
        erp.delete(3)  # deleted
        erp.set(6, ENDED=None)  # an ended run reopened
        clock[0] += timedelta(minutes=1)
        changed = _runs(source)
        everything = _runs(full)
        assert set(changed) == {"R1", "R2", "R4", "R5", "R6", "R9"}  # R7, R8: ended, unchanged
        assert {k: everything[k] for k in changed} == changed
        assert changed["R2"][1] == "M9" and "R3" not in everything

        clock[0] += timedelta(minutes=59)  # full_read_interval_minutes after the first read
        assert _runs(source) == _runs(full)
    finally:
        source.close()
        full.close()


def test_open_runs_are_reread_by_job_without_a_run_key_column(erp: Erp, database_url: str) -> None:
    clock = [START]
    columns = {
        "job": "JOB",
        "operation": "OP",
        "machine": "MACHINE",
        "start_at": "STARTED",
        "end_at": "ENDED",
    }
    generic = GenericMappingSettings(
        table="ERP_RUNS", columns=columns, watermark="VERSION", watermark_margin=0
    )
    source = GenericSqlSource(
        SourceSettings(url=database_url, name="erp", kind="generic-sql", generic=generic),
        clock=lambda: clock[0],
        windows=ReadWindows(),
    )
    erp.add(1)
    erp.add(2)
    try:
        assert set(_runs(source)) == {"J1|10", "J2|10"}
        erp.set(1, MACHINE="M7", stamp=False)
        erp.set(2, ENDED=erp.now)
        runs = _runs(source)
        assert runs["J1|10"][1] == "M7" and runs["J2|10"][2] is not None
    finally:
        source.close()


def test_a_watermark_column_that_does_not_exist_is_a_config_error(erp: Erp, database_url: str) -> None:
    source = _source(database_url, [START], ReadWindows(), watermark="LAST_MOD")
    try:
        with pytest.raises(ConfigError, match=r"source.generic.watermark: column 'LAST_MOD' not found"):
            list(source.read_runs())
    finally:
        source.close()
