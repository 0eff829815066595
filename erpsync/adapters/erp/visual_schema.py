"""Infor VISUAL tables erpsync reads (and a write-back sink may update), as SQLAlchemy Core.

Names and types follow a live VISUAL (VMFG) SQL Server schema dump:
`nvarchar` -> `Unicode(n)`, `nchar(1)` -> `NCHAR(1)`, `decimal(20,8)` -> `Numeric(20, 8)`, `datetime`
-> naive `DateTime` (VISUAL stores local wall time). Only the columns the preset, the
`visual-labor-ticket` sink and realistic fixtures need are declared; NOT NULL columns carry the
Python-side defaults VISUAL would fill, so Core inserts work. The `ROWID` identity columns are left
out: erpsync never uses them and a non-key identity is not portable to MySQL/SQLite.

`create_visual_schema(engine)` builds the tables in a test/demo database (never in a real ERP);
erpsync/demo/visual_fixture.py fills them the way VISUAL's shop-floor clients do.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    NCHAR,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Unicode,
    func,
)

metadata = MetaData()


def _qty() -> Numeric[Decimal]:
    return Numeric(20, 8)


def _work_order_key(prefix: str, *, primary_key: bool) -> list[Column[str]]:
    """VISUAL's work-order key: bare on WORK_ORDER, `WORKORDER_`-prefixed on the rows under it."""
    key = (
        ("TYPE", NCHAR(1)),
        ("BASE_ID", Unicode(30)),
        ("LOT_ID", Unicode(3)),
        ("SPLIT_ID", Unicode(3)),
        ("SUB_ID", Unicode(3)),
    )
    return [Column(prefix + name, kind, primary_key=primary_key) for name, kind in key]


def _flag(name: str, default: str = "N", nullable: bool = False) -> Column[str]:
    return Column(name, NCHAR(1), nullable=nullable, default=default)


SHOP_RESOURCE = Table(
    "SHOP_RESOURCE",
    metadata,
    Column("ID", Unicode(15), primary_key=True),
    Column("DESCRIPTION", Unicode(40)),
    _flag("SCHEDULE_NORMALLY", "Y"),
    _flag("AUTO_REPORTING", "N"),
    _flag("TYPE", "W"),
    Column("SHIFT_1_CAPACITY", SmallInteger, nullable=False, default=1),
    Column("SHIFT_2_CAPACITY", SmallInteger, nullable=False, default=0),
    Column("SHIFT_3_CAPACITY", SmallInteger, nullable=False, default=0),
    Column("SCHEDULE_GROUP_ID", Unicode(15)),
    Column("DEPARTMENT_ID", Unicode(15)),
    Column("STATUS", NCHAR(1)),
)

PART = Table(
    "PART",
    metadata,
    Column("ID", Unicode(30), primary_key=True),
    Column("DESCRIPTION", Unicode(120)),
    Column("STOCK_UM", Unicode(15), nullable=False, default="EA"),
    _flag("FABRICATED", "Y"),
    _flag("PURCHASED", "N"),
    _flag("STOCKED", "N"),
    Column("QTY_ON_HAND", _qty(), nullable=False, default=0),
)

WORK_ORDER = Table(
    "WORK_ORDER",
    metadata,
    *_work_order_key("", primary_key=True),
    Column("PART_ID", Unicode(30)),
    Column("DESIRED_QTY", _qty()),
    Column("RECEIVED_QTY", _qty(), nullable=False, default=0),
    Column("CREATE_DATE", DateTime, nullable=False, default=func.current_timestamp()),
    Column("DESIRED_RLS_DATE", DateTime),
    Column("DESIRED_WANT_DATE", DateTime),
    Column("CLOSE_DATE", DateTime),
    Column("STATUS", NCHAR(1), nullable=False, default="R"),
    Column("SCHED_START_DATE", DateTime),
    Column("SCHED_FINISH_DATE", DateTime),
    Column("STATUS_EFF_DATE", DateTime, nullable=False, default=func.current_timestamp()),
    Column("SITE_ID", Unicode(15), nullable=False),
)

OPERATION = Table(
    "OPERATION",
    metadata,
    *_work_order_key("WORKORDER_", primary_key=True),
    Column("SEQUENCE_NO", SmallInteger, primary_key=True, autoincrement=False),
    Column("RESOURCE_ID", Unicode(15), nullable=False),
    Column("SETUP_HRS", Numeric(8, 3)),
    Column("RUN", _qty()),
    Column("RUN_TYPE", Unicode(15), nullable=False, default="HRS/PC"),
    Column("RUN_HRS", Numeric(7, 2)),
    Column("SERVICE_ID", Unicode(15)),
    Column("CALC_START_QTY", _qty()),
    Column("CALC_END_QTY", _qty()),
    Column("COMPLETED_QTY", _qty(), nullable=False, default=0),
    Column("DEVIATED_QTY", _qty(), nullable=False, default=0),
    Column("ACT_SETUP_HRS", Numeric(7, 2), nullable=False, default=0),
    Column("ACT_RUN_HRS", Numeric(7, 2), nullable=False, default=0),
    Column("STATUS", NCHAR(1), nullable=False, default="R"),
    _flag("SETUP_COMPLETED", "N"),
    Column("CLOSE_DATE", DateTime),
    Column("OPERATION_TYPE", Unicode(15)),
    Column("SCHED_START_DATE", DateTime),
    Column("SCHED_FINISH_DATE", DateTime),
    Column("VENDOR_ID", Unicode(15)),
    Column("VENDOR_SERVICE_ID", Unicode(30)),
    Column("SERVICE_PART_ID", Unicode(30)),
    Column("STATUS_EFF_DATE", DateTime, nullable=False, default=func.current_timestamp()),
    Column("SITE_ID", Unicode(15), nullable=False),
)

LABOR_TICKET = Table(
    "LABOR_TICKET",
    metadata,
    Column("TRANSACTION_ID", Integer, primary_key=True, autoincrement=False),
    *_work_order_key("WORKORDER_", primary_key=False),
    Column("OPERATION_SEQ_NO", SmallInteger),
    Column("TYPE", NCHAR(1), nullable=False),
    _flag("SETUP_COMPLETED", "N"),
    Column("EMPLOYEE_ID", Unicode(15), nullable=False),
    Column("DEPARTMENT_ID", Unicode(15), nullable=False, default=""),
    Column("RESOURCE_ID", Unicode(15)),
    Column("CLOCK_IN", DateTime),
    Column("CLOCK_OUT", DateTime),
    Column("HOURS_WORKED", Numeric(7, 3)),
    Column("HOURS_BREAK", Numeric(7, 3)),
    Column("GOOD_QTY", _qty(), nullable=False, default=0),
    Column("BAD_QTY", _qty(), nullable=False, default=0),
    Column("TRANSACTION_DATE", DateTime, nullable=False, default=func.current_timestamp()),
    Column("DESCRIPTION", Unicode(80)),
    Column("USER_ID", Unicode(20)),
    _flag("POSTING_CANDIDATE", "N"),
    _flag("INDIRECT_CODE", "N"),
    Column("INDIRECT_ID", Unicode(15)),
    Column("SHIFT_DATE", DateTime),
    Column("CREATE_DATE", DateTime, nullable=False, default=func.current_timestamp()),
    Column("ACT_CLOCK_IN", DateTime),
    Column("ACT_CLOCK_OUT", DateTime),
    Column("UNADJ_CLOCK_IN", DateTime),
    Column("UNADJ_CLOCK_OUT", DateTime),
    Column("SITE_ID", Unicode(15), nullable=False),
    # Fixture-only index (VISUAL's own indexes are not in the dump): keeps "open or recent" fast.
    Index("IX_ERPSYNC_FIXTURE_LT_CLOCK_OUT", "CLOCK_OUT"),
)

VISUAL_TABLES: tuple[Table, ...] = (SHOP_RESOURCE, PART, WORK_ORDER, OPERATION, LABOR_TICKET)


def create_visual_schema(engine: Engine) -> None:
    """Create the VISUAL tables in a test or demo database (idempotent). Never run against an ERP."""
    metadata.create_all(engine, tables=list(VISUAL_TABLES))


def drop_visual_schema(engine: Engine) -> None:
    """Drop the fixture tables again (tests and benchmarks clean up after themselves)."""
    metadata.drop_all(engine, tables=list(VISUAL_TABLES))
