"""The SQL the `infor-visual` preset runs, as SQLAlchemy Core statements compiled per dialect.

Which tickets and operations each statement selects, and why a read picks one statement or
another, is in erpsync/adapters/erp/visual_source.py. Rows are unpacked by position for speed:
`TICKET_COLUMNS`, `OPERATION_KEY_COLUMNS` and the `OP_*` positions say where each part starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, ColumnElement, Select, Unicode, and_, bindparam, func, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from erpsync.adapters.erp.visual_names import clean
from erpsync.adapters.erp.visual_schema import LABOR_TICKET, OPERATION, PART, WORK_ORDER
from erpsync.adapters.state.db import describe_db_error
from erpsync.config import VisualPresetSettings

lt, op, wo, part = LABOR_TICKET.c, OPERATION.c, WORK_ORDER.c, PART.c

WORK_ORDER_KEY = ("TYPE", "BASE_ID", "LOT_ID", "SPLIT_ID", "SUB_ID")


def _key(
    columns: ReadOnlyColumnCollection[str, Column[Any]], prefix: str = "WORKORDER_"
) -> list[Column[Any]]:
    """The work-order key as a table names it: bare on WORK_ORDER, `WORKORDER_`-prefixed below it."""
    return [columns[prefix + name] for name in WORK_ORDER_KEY]


def _same(left: list[Column[Any]], right: list[Column[Any]]) -> ColumnElement[bool]:
    return and_(*(a == b for a, b in zip(left, right, strict=True)))


OP_COLUMNS = (
    op.RESOURCE_ID.label("OP_RESOURCE_ID"),
    op.SETUP_HRS,
    op.RUN,
    op.RUN_TYPE,
    op.CALC_END_QTY,
    op.SERVICE_ID,
    op.VENDOR_ID,
    op.OPERATION_TYPE,
    wo.PART_ID,
    wo.DESIRED_QTY,
    wo.DESIRED_WANT_DATE,
    part.DESCRIPTION.label("PART_DESCRIPTION"),
)
# positions within OP_COLUMNS (rows are unpacked by position: see visual_source.VisualSource._ticket)
OP_RESOURCE, OP_SERVICE, OP_VENDOR = 0, 5, 6
# ticket columns before OP_COLUMNS in _ticket_select; key columns before them in operations_statement
TICKET_COLUMNS = 12
OPERATION_KEY_COLUMNS = 6


class _code(FunctionElement[str]):
    """A padded code column (`nchar`) compared by its trimmed value, without wrapping it in a
    function where the database already ignores trailing blanks in comparisons (SQL Server,
    PostgreSQL `character`, MySQL/MariaDB PAD SPACE): an index a DBA adds on it stays usable."""

    name = "rtrim"
    inherit_cache = True
    type = Unicode()


@compiles(_code)
def _rtrim(element: _code, compiler: SQLCompiler, **kw: Any) -> str:
    return f"rtrim({compiler.process(element.clauses, **kw)})"


@compiles(_code, "mssql")
@compiles(_code, "postgresql")
@compiles(_code, "mysql")
@compiles(_code, "mariadb")
def _bare(element: _code, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


def _ticket_select() -> Select[Any]:
    op_join = and_(_same(_key(op), _key(lt)), op.SEQUENCE_NO == lt.OPERATION_SEQ_NO)
    wo_join = _same(_key(wo, ""), _key(lt))
    return (
        select(
            lt.TRANSACTION_ID,
            lt.TYPE.label("TICKET_TYPE"),
            *_key(lt),
            lt.OPERATION_SEQ_NO,
            lt.RESOURCE_ID.label("TICKET_RESOURCE_ID"),
            lt.CLOCK_IN,
            lt.CLOCK_OUT,
            op.SEQUENCE_NO.label("OP_SEQUENCE_NO"),
            *OP_COLUMNS,
        )
        .select_from(
            LABOR_TICKET.outerjoin(OPERATION, op_join)
            .outerjoin(WORK_ORDER, wo_join)
            .outerjoin(PART, part.ID == wo.PART_ID)
        )
        .order_by(lt.TRANSACTION_ID)
    )


def runs_statement(settings: VisualPresetSettings) -> Select[Any]:
    """Open tickets plus tickets closed since `:closed_since` (naive local time)."""
    stmt = _ticket_select().where(or_(lt.CLOCK_OUT.is_(None), lt["CLOCK_OUT"] >= bindparam("closed_since")))
    if settings.site_id:
        stmt = stmt.where(lt["SITE_ID"] == bindparam("site_id"))
    return stmt


def latest_id_statement() -> Select[Any]:
    """The highest TRANSACTION_ID in the table: one probe of the primary key."""
    return select(func.max(lt.TRANSACTION_ID))


def known_tickets_statement(settings: VisualPresetSettings) -> Select[Any]:
    """`runs_statement` restricted to ids the last read returned (`:ids`, expanding IN list)."""
    return runs_statement(settings).where(lt.TRANSACTION_ID.in_(bindparam("ids", expanding=True)))


def new_tickets_statement(settings: VisualPresetSettings) -> Select[Any]:
    """`runs_statement` restricted to ids above `:after` (a primary-key range)."""
    return runs_statement(settings).where(lt["TRANSACTION_ID"] > bindparam("after"))


def lookup_statement() -> Select[Any]:
    """Specific tickets by TRANSACTION_ID (`:ids`, an expanding IN list), open or closed."""
    return _ticket_select().where(lt.TRANSACTION_ID.in_(bindparam("ids", expanding=True)))


def operations_statement(settings: VisualPresetSettings) -> Select[Any]:
    """Operations of active work orders (`:wo_statuses`) not closed (`:op_excluded`), key order."""
    wo_join = _same(_key(wo, ""), _key(op))
    stmt = (
        select(
            *_key(op),
            op.SEQUENCE_NO.label("OP_SEQUENCE_NO"),
            *OP_COLUMNS,
        )
        .select_from(OPERATION.join(WORK_ORDER, wo_join).outerjoin(PART, part.ID == wo.PART_ID))
        .where(
            _code(wo.TYPE) == "W",
            _code(wo.STATUS).in_(bindparam("wo_statuses", expanding=True)),
            _code(op.STATUS).not_in(bindparam("op_excluded", expanding=True)),
        )
        .order_by(*_key(op)[1:], op.SEQUENCE_NO)  # TYPE is W throughout
    )
    if settings.site_id:
        stmt = stmt.where(wo["SITE_ID"] == bindparam("site_id"))
    return stmt


def preset_statements(settings: VisualPresetSettings) -> dict[str, Select[Any]]:
    """Every statement the preset runs, by name (the dialect-compile test walks these)."""
    return {
        "runs": runs_statement(settings),
        "latest_id": latest_id_statement(),
        "known_tickets": known_tickets_statement(settings),
        "new_tickets": new_tickets_statement(settings),
        "lookup": lookup_statement(),
        "operations": operations_statement(settings),
    }


def is_outside_service(standards: Sequence[Any]) -> bool:
    """Whether `OP_COLUMNS` values are an outside service's (SERVICE_ID or VENDOR_ID set)."""
    return bool(clean(standards[OP_SERVICE]) or clean(standards[OP_VENDOR]))


def missing_table_message(exc: DBAPIError, schema: str | None) -> str:
    """Where the preset looked for a table it did not find, and the two usual causes: the schema,
    and lower-case names."""
    where = (
        f"schema {schema!r} (source.visual.schema_name)"
        if schema
        else "the connection's default schema (source.visual.schema_name is not set)"
    )
    return (
        f"{describe_db_error(exc)}; the infor-visual preset reads VISUAL's tables (LABOR_TICKET, "
        f"WORK_ORDER, OPERATION, PART...) by their upper-case names from {where}. Set "
        "source.visual.schema_name to the schema that holds them; on PostgreSQL the names are "
        "quoted, so a copy with lower-case tables (labor_ticket) is not found: create upper-case "
        'views (CREATE VIEW "LABOR_TICKET" AS SELECT ... FROM labor_ticket) or rename the tables'
    )
