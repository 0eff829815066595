"""The `generic-sql` mapping checked and turned into statements: which columns hold which field.

Identifiers are never pasted into SQL: a table is reflected and every mapped column must exist in it
(a missing one is a ConfigError naming `source.generic.columns.<field>`); a query is wrapped as a
subquery whose columns are checked the same way; values (lookup keys, the watermark) are always
bound parameters. Rows are selected ordered by run key (or job, operation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Engine,
    MetaData,
    Row,
    Select,
    Table,
    bindparam,
    column,
    false,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, NoSuchTableError
from sqlalchemy.sql import ColumnElement, FromClause

from erpsync.adapters.erp.readonly_sql import without_trailing_semicolon
from erpsync.adapters.erp.sql_engine import is_statement_refusal
from erpsync.config import GenericMappingSettings
from erpsync.domain.errors import ConfigError

REQUIRED_FIELDS = ("job", "operation", "machine")
OPTIONAL_FIELDS = (
    "run_key",
    "part",
    "lot",
    "description",
    "quantity",
    "setup_time",
    "run_time",
    "run_unit",
    "due_at",
    "start_at",
    "end_at",
    "in_setup",
    "status",
)
FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
WATERMARK = "erpsync_watermark"  # label of the watermark column in the statement


def check_mapping(generic: GenericMappingSettings) -> None:
    """Refuse a mapping that could never read a run, before any connection is made."""
    if not generic.table and not generic.query:
        raise ConfigError(
            "source.generic: set table (a table or view name) or query (a SELECT) for kind generic-sql"
        )
    for key in generic.columns:
        if key not in FIELDS:
            raise ConfigError(
                f"source.generic.columns.{key}: unknown field; expected one of {', '.join(FIELDS)}"
            )
    for key in REQUIRED_FIELDS:
        if not generic.columns.get(key):
            raise ConfigError(f"source.generic.columns.{key}: required; name the column that holds it")
    if "status" in generic.columns and not generic.status_map:
        raise ConfigError(
            "source.generic.status_map: required when columns.status is mapped "
            "(value -> not_started, setup, production, ended or skip)"
        )


class GenericStatements:
    """The mapped table or query, resolved once against the database, and the SELECTs over it."""

    def __init__(self, generic: GenericMappingSettings, engine: Engine) -> None:
        self.generic = generic
        self.engine = engine
        self._source: FromClause | None = None
        self._columns: dict[str, ColumnElement[Any]] = {}
        self._watermark: ColumnElement[Any] | None = None

    @property
    def has_watermark(self) -> bool:
        """A watermark column is mapped (and found); call after `statement`."""
        return self._watermark is not None

    def statement(self) -> Select[Any]:
        """SELECT of the mapped columns labelled by field, ordered by run key (or job, operation)."""
        source = self._resolve()
        selected = [col.label(key) for key, col in self._columns.items()]
        if self._watermark is not None:
            selected.append(self._watermark.label(WATERMARK))
        stmt = select(*selected).select_from(source)
        order = (
            [self._columns["run_key"]]
            if "run_key" in self._columns
            else [
                self._columns["job"],
                self._columns["operation"],
            ]
        )
        return stmt.order_by(*order)

    def changed_statement(self) -> Select[Any]:
        """`statement` restricted to rows whose watermark is above `:after` (needs `watermark`)."""
        statement = self.statement()
        assert self._watermark is not None
        return statement.where(self._watermark > bindparam("after"))

    def lookup_statement(self) -> tuple[Select[Any], bool]:
        """`statement` restricted to `:keys` (expanding), and whether the keys are run keys (else jobs)."""
        base = self.statement()
        by_run_key = "run_key" in self._columns
        column_ = self._columns["run_key"] if by_run_key else self._columns["job"]
        return base.where(column_.in_(bindparam("keys", expanding=True))), by_run_key

    def _resolve(self) -> FromClause:
        """Reflect the table (or probe the query) once and check every mapped column exists."""
        if self._source is not None:
            return self._source
        g = self.generic
        if g.table:
            schema, _, name = g.table.rpartition(".")
            try:
                source: FromClause = Table(
                    name, MetaData(), schema=schema or g.schema_name or None, autoload_with=self.engine
                )
            except NoSuchTableError:
                raise ConfigError(f"source.generic.table: table or view {g.table!r} not found") from None
            available = [c.name for c in source.columns]
            where = f"table {g.table!r}"
        else:
            assert g.query is not None
            # new lines around the query: a trailing "-- comment" must not swallow the closing ")"
            query = f"\n{without_trailing_semicolon(g.query)}\n"
            probe: Select[Any] = (
                select(literal_column("*")).select_from(text(f"({query}) erpsync_probe")).where(false())
            )
            with _refusal_names_the_query(), self.engine.connect() as conn:
                available = list(conn.execute(probe).keys())
            source = text(query).columns(*(column(name) for name in available)).subquery("erpsync_src")
            where = "the query's result"
        for key, wanted in g.columns.items():
            self._columns[key] = source.c[_column_named(wanted, available, where, f"columns.{key}")]
        if g.watermark:
            self._watermark = source.c[_column_named(g.watermark, available, where, "watermark")]
        self._source = source
        return source


def query_rows(rows: Iterator[Row[Any]]) -> Iterator[Row[Any]]:
    """Rows of the mapped query, a refusal by the database reported as the query's config error."""
    with _refusal_names_the_query():
        yield from rows


@contextmanager
def _refusal_names_the_query() -> Iterator[None]:
    """A statement the database refuses (a write in the read-only session, a second statement, bad
    SQL) is a configuration error of `source.generic.query`; a connection failure stays what it is."""
    try:
        yield
    except DBAPIError as exc:
        if not is_statement_refusal(exc):
            raise
        raise ConfigError(
            f"source.generic.query: the ERP database refused it: {_first_line(exc)}; "
            "fix the query (exactly one SELECT that only reads; see docs/security.md)"
        ) from None


def _first_line(exc: DBAPIError) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _column_named(wanted: str, available: list[str], where: str, key: str) -> str:
    """The column as the database spells it: exact, else the single case-insensitive match."""
    if wanted in available:
        return wanted
    folded = [name for name in available if name.casefold() == wanted.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise ConfigError(
        f"source.generic.{key}: column {wanted!r} not found in {where}; columns are: {', '.join(available)}"
    )
