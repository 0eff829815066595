"""The `staging` sink (default): absolute per-run totals upserted into an erpsync-owned ERP table.

The table lives in the ERP database but belongs to erpsync; the ERP's own import reads it. One row
per MM job run (RUN_ID = the MM run id), holding the run's latest absolute totals, so reading it
twice or a replayed write changes nothing. The import may delete rows it has consumed: erpsync
then inserts the run's current totals again when they change. `MM_END_AT` is filled when the run
ends even if its counts did not change (the service sends a stopped run's final read here: this
sink `carries_end_at`); such an end-time-only write never brings a consumed row back. If a person
edits the counts in a row, erpsync sees a value it did not write and leaves the row alone (a
conflict, quarantined).

The table is created by `erpsync erp install-staging` (or by a DBA from `--print-sql`), never by
erpsync's own migrations: the ERP database is not erpsync's to migrate. Times are naive UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Insert,
    MetaData,
    PrimaryKeyConstraint,
    Select,
    Table,
    Unicode,
    Update,
    inspect,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.schema import CreateIndex, CreateTable, ExecutableDDLElement

from erpsync.adapters.erp.sinks._db import (
    CheckedTarget,
    erp_transaction,
    guarded_update,
    locked_rows,
    update_guarded,
)
from erpsync.adapters.erp.sinks.base import COUNT_COLUMNS, RUN_COUNT_COLUMNS, CountWrite, WriteResult
from erpsync.adapters.erp.sinks.dialects import DDL_DIALECTS
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import PartCounts
from erpsync.domain.writeback_rules import CountValues, describe_values, erp_verdict, same_counts

_SET_COLUMNS = (*COUNT_COLUMNS, "MM_START_AT", "MM_END_AT", "UPDATED_AT")

_Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def staging_table(table_name: str, metadata: MetaData | None = None) -> Table:
    """The staging table's definition; `table_name` may be schema-qualified (``dbo.NAME``)."""
    schema, _, name = table_name.rpartition(".")
    return Table(
        name,
        metadata if metadata is not None else MetaData(),
        Column("RUN_ID", Unicode(255), nullable=False),
        Column("SOURCE", Unicode(64), nullable=False),
        Column("RUN_KEY", Unicode(255), nullable=False),
        Column("ERP_JOB", Unicode(255), nullable=False),
        Column("ERP_OPERATION", Unicode(64), nullable=False),
        Column("ERP_MACHINE", Unicode(64), nullable=False),
        Column("TOTAL_QTY", BigInteger, nullable=False),
        Column("GOOD_QTY", BigInteger, nullable=False),
        Column("SCRAP_QTY", BigInteger, nullable=False),
        Column("NONCONFORM_QTY", BigInteger, nullable=False),
        Column("MM_START_AT", _Timestamp, nullable=True),
        Column("MM_END_AT", _Timestamp, nullable=True),
        Column("UPDATED_AT", _Timestamp, nullable=False),
        PrimaryKeyConstraint("RUN_ID", name=f"PK_{name}"[:60]),
        Index(f"IX_{name}_UPDATED_AT"[:60], "UPDATED_AT"),
        schema=schema or None,
    )


def _dialect(dialect_name: str) -> Dialect:
    try:
        return make_url(f"{dialect_name}://").get_dialect()()
    except (NoSuchModuleError, ArgumentError):
        raise ConfigError(
            f"unknown SQL dialect {dialect_name!r}; expected one of {', '.join(DDL_DIALECTS)}"
        ) from None


def staging_ddl(dialect_name: str, table_name: str) -> str:
    """The CREATE TABLE / CREATE INDEX statements for a DBA to review and run by hand."""
    dialect = _dialect(dialect_name)
    table = staging_table(table_name)
    statements: list[ExecutableDDLElement] = [CreateTable(table)]
    statements += [CreateIndex(index) for index in sorted(table.indexes, key=lambda i: str(i.name))]
    return (
        "".join(f"{str(stmt.compile(dialect=dialect)).strip()};\n\n" for stmt in statements).rstrip() + "\n"
    )


def missing_columns(engine: Engine, table_name: str) -> list[str] | None:
    """None when the table does not exist, else the required columns it lacks."""
    schema, _, name = table_name.rpartition(".")
    inspector = inspect(engine)
    if not inspector.has_table(name, schema=schema or None):
        return None
    present = {str(col["name"]).upper() for col in inspector.get_columns(name, schema=schema or None)}
    return [col for col in RUN_COUNT_COLUMNS if col not in present]


def install_staging(engine: Engine, table_name: str) -> None:
    """Create the staging table if absent; refuse a same-named table of another shape."""
    table = staging_table(table_name)
    with engine.begin() as conn:
        table.create(conn, checkfirst=True)
    missing = missing_columns(engine, table_name)
    if missing:
        raise ConfigError(
            f"table {table_name} exists but lacks column(s) {', '.join(missing)}; "
            "rename it or set writeback.staging_table to another name"
        )


def _values(counts: PartCounts) -> dict[str, int]:
    return dict(zip(COUNT_COLUMNS, (counts.total, counts.good, counts.scrap, counts.nonconform), strict=True))


def _lock_statement(t: Table, run_ids: list[str]) -> Select[Any]:
    return locked_rows(t.c.RUN_ID, (*(t.c[c] for c in COUNT_COLUMNS), t.c.MM_END_AT), run_ids)


def _update_statement(t: Table) -> Update:
    """Guarded UPDATE by RUN_ID: only while the counts are still as read."""
    guards = {c: f"x_{c}" for c in ("RUN_ID", *COUNT_COLUMNS)}
    return guarded_update(t, guards, {c: c for c in _SET_COLUMNS})


def staging_lock_statement(table_name: str, run_ids: list[str]) -> Select[Any]:
    """The rows' current counts, row-locked, by RUN_ID (what a write-back batch reads first)."""
    return _lock_statement(staging_table(table_name), run_ids)


def staging_update_statement(table_name: str) -> Update:
    return _update_statement(staging_table(table_name))


def staging_insert_statement(table_name: str) -> Insert:
    return staging_table(table_name).insert()


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _end_result(
    w: CountWrite, before: CountValues, new: CountValues, old_end: datetime | None, new_end: datetime
) -> WriteResult:
    """An end-time write: the counts stay, MM_END_AT is set (audited as before -> after)."""
    was = old_end.isoformat() if old_end is not None else None
    return WriteResult(
        w.mm_run_id,
        "written",
        {**before, "MM_END_AT": was},
        {**new, "MM_END_AT": new_end.isoformat()},
        f"MM_END_AT set to {new_end.isoformat()} (run ended; counts unchanged)",
    )


class StagingSink(CheckedTarget):
    """Upserts absolute totals into the staging table, one ERP transaction per batch."""

    name = "staging"
    carries_end_at = True  # MM_END_AT: a stopped run's final read comes here even if unchanged

    def __init__(self, engine: Engine, table_name: str, *, batch_size: int = 500) -> None:
        self.engine = engine
        self.table_name = table_name
        self.batch_size: int | None = batch_size
        self.table = staging_table(table_name)

    def _require_target(self) -> None:
        missing = missing_columns(self.engine, self.table_name)
        if missing is None:
            raise ConfigError(
                f"staging table {self.table_name} does not exist in the write-back database; "
                "run `erpsync erp install-staging` (or `--print-sql` for your DBA)"
            )
        if missing:
            raise ConfigError(
                f"staging table {self.table_name} lacks column(s) {', '.join(missing)}; "
                "compare it with `erpsync erp install-staging --print-sql`"
            )

    def check(self) -> str:
        self._check_now(f"staging table {self.table_name}")
        return f"staging table {self.table_name} is in the write-back database"

    def write(self, batch: Sequence[CountWrite]) -> list[WriteResult]:
        if not batch:
            return []
        self._check_table()
        t = self.table
        now = datetime.now(UTC).replace(tzinfo=None)
        results: list[WriteResult] = []
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        with erp_transaction(self.engine, f"staging table {self.table_name}") as conn:
            locked = conn.execute(_lock_statement(t, [w.mm_run_id for w in batch])).all()
            current: dict[str, CountValues] = {
                row.RUN_ID: {c: int(row._mapping[c]) for c in COUNT_COLUMNS} for row in locked
            }
            ends: dict[str, datetime | None] = {row.RUN_ID: _naive_utc(row.MM_END_AT) for row in locked}
            for w in batch:
                new = _values(w.counts)
                row = {
                    **w.run_columns(),
                    **new,
                    "MM_START_AT": _naive_utc(w.counts.start_at),
                    "MM_END_AT": _naive_utc(w.counts.end_at),
                    "UPDATED_AT": now,
                }
                before = current.get(w.mm_run_id)
                end_only = w.previous is not None and same_counts(w.counts, w.previous)
                if before is None and end_only:
                    message = "no staging row (consumed by the ERP import): an end time alone adds none"
                    results.append(WriteResult(w.mm_run_id, "unchanged", None, new, message))
                    continue
                if before is None:
                    # no row: never written, or consumed (deleted) by the ERP import: totals again
                    inserts.append(row)
                    results.append(WriteResult(w.mm_run_id, "written", None, new))
                    continue
                expected = _values(w.previous) if w.previous is not None else None
                in_doubt = [_values(c) for c in w.in_doubt]
                verdict = erp_verdict(current=before, expected=expected, new=new, in_doubt=in_doubt)
                old_end, new_end = ends.get(w.mm_run_id), _naive_utc(w.counts.end_at)
                if verdict in ("unchanged", "already_written") and new_end is not None and old_end != new_end:
                    verdict = "write"  # the counts are there; the run's end time is not yet
                    results.append(_end_result(w, before, new, old_end, new_end))
                else:
                    results.append(self._result(w, verdict, before, new, expected))
                if verdict == "write":
                    updates.append(
                        {c: row[c] for c in _SET_COLUMNS}
                        | {f"x_{c}": before[c] for c in COUNT_COLUMNS}
                        | {"x_RUN_ID": w.mm_run_id}
                    )
            if inserts:
                conn.execute(t.insert(), inserts)
            if updates:
                update_guarded(
                    conn, _update_statement(t), updates, f"staging table {self.table_name}", "row(s)"
                )
        return results

    @staticmethod
    def _result(
        w: CountWrite,
        verdict: str,
        before: Mapping[str, Any],
        new: Mapping[str, Any],
        expected: Mapping[str, Any] | None,
    ) -> WriteResult:
        if verdict == "write":
            return WriteResult(w.mm_run_id, "written", before, new)
        if verdict == "unchanged":
            return WriteResult(w.mm_run_id, "unchanged", before, new)
        if verdict == "already_written":
            return WriteResult(w.mm_run_id, "already_written", before, new)
        held, last = describe_values(before), describe_values(expected or {})
        message = f"staging row holds {held}; erpsync last wrote {last}: edited outside erpsync"
        return WriteResult(w.mm_run_id, "conflict", before, new, message)

    def close(self) -> None:
        self.engine.dispose()
