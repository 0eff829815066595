"""The `sql` sink: the customer's own parameterised statement, run once per run in one transaction.

For ERPs without a preset, the statement (config `writeback.statement`) says where counts go, using
named binds only (`:good_parts`, `:run_key`, ...; see `SQL_SINK_BINDS`), never string formatting.
Unknown bind names are a configuration error at start, so a typo cannot bind NULL into the ERP.

Optimistic concurrency is the statement's job, through the `:prev_*` binds (what erpsync last
wrote; NULL before the first write, so write e.g. ``AND QTY = COALESCE(:prev_good_parts, 0)``).
A statement using them that matches no row means the ERP holds something else. The sink then runs
it again with `:prev_*` set to each value erpsync meant to write in a cycle killed before its
state commit (`CountWrite.in_doubt`), then to the new values: a match means the ERP held erpsync's
own write (a replay after a crash), which is not a conflict; otherwise a person edited the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from erpsync.adapters.erp.sinks._db import erp_errors, erp_transaction
from erpsync.adapters.erp.sinks.base import CountWrite, WriteResult
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import PartCounts
from erpsync.domain.writeback_rules import (
    SQL_PREV_BINDS,
    counts_dict,
    sql_bind_names,
    unknown_sql_binds,
)


def count_binds(counts: PartCounts | None, prefix: str = "") -> dict[str, int | None]:
    """`:total_parts` ... `:bad_parts` (scrap + nonconform) for these counts, all NULL for None."""
    names = ("total_parts", "good_parts", "scrap_parts", "nonconform_parts", "bad_parts")
    if counts is None:
        return {f"{prefix}{name}": None for name in names}
    values = (counts.total, counts.good, counts.scrap, counts.nonconform, counts.scrap + counts.nonconform)
    return {f"{prefix}{name}": value for name, value in zip(names, values, strict=True)}


def _naive_utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC).replace(tzinfo=None) if value is not None and value.tzinfo else value


class SqlSink:
    """Runs `writeback.statement` for each run of a batch inside one ERP transaction."""

    name = "sql"

    def __init__(self, engine: Engine, statement: str, *, batch_size: int = 500) -> None:
        unknown = unknown_sql_binds(statement)
        if unknown:
            raise ConfigError(
                f"writeback.statement: unknown bind name(s) {', '.join(':' + u for u in unknown)}"
            )
        self.engine = engine
        self.batch_size: int | None = batch_size
        self.binds = set(sql_bind_names(statement))
        self.guarded = bool(self.binds & SQL_PREV_BINDS)
        self.statement = text(statement)

    def _params(self, w: CountWrite, previous: PartCounts | None, now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {
            **{column.lower(): value for column, value in w.run_columns().items()},
            "start_at": _naive_utc(w.counts.start_at),
            "end_at": _naive_utc(w.counts.end_at),
            "updated_at": now,
            **count_binds(w.counts),
            **count_binds(previous, "prev_"),
        }
        return {name: values[name] for name in self.binds}

    def check(self) -> str:
        with erp_errors("writeback.statement"), self.engine.connect():
            pass
        return "the write-back database answers (writeback.statement itself runs only when writing)"

    def write(self, batch: Sequence[CountWrite]) -> list[WriteResult]:
        if not batch:
            return []
        now = datetime.now(UTC).replace(tzinfo=None)
        with erp_transaction(self.engine, "writeback.statement") as conn:
            return [self._write_one(conn, w, now) for w in batch]

    def _write_one(self, conn: Connection, w: CountWrite, now: datetime) -> WriteResult:
        before = counts_dict(w.previous) if w.previous is not None else None
        after = counts_dict(w.counts)
        if conn.execute(self.statement, self._params(w, w.previous, now)).rowcount > 0:
            return WriteResult(w.mm_run_id, "written", before, after)
        if not self.guarded:
            return WriteResult(w.mm_run_id, "failed", before, after, "writeback.statement matched no row")
        # does the ERP hold a value erpsync meant to write before a crash? (its own write)
        for in_doubt in w.in_doubt:
            if conn.execute(self.statement, self._params(w, in_doubt, now)).rowcount > 0:
                return WriteResult(w.mm_run_id, "written", counts_dict(in_doubt), after)
        # does the ERP already hold the new values? (a write committed before a crash)
        if conn.execute(self.statement, self._params(w, w.counts, now)).rowcount > 0:
            return WriteResult(w.mm_run_id, "already_written", after, after)
        return WriteResult(
            w.mm_run_id,
            "conflict",
            None,
            after,
            f"writeback.statement matched no row holding what erpsync last wrote ({before or 'nothing'}): "
            "edited outside erpsync, or the row is gone",
        )

    def close(self) -> None:
        self.engine.dispose()
