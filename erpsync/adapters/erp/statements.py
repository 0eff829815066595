"""Every statement erpsync runs against the ERP, which job runs it, how often and what it reads.

`erpsync sources sql` prints these, compiled in the configured database's dialect, so a DBA can
review them and decide on indexes (docs/sources.md, "Load on your ERP"). The statements are the
ones the adapters execute (`visual_statements.preset_statements`, the generic-sql mapping, the
write-back sinks), so the listing cannot drift from what runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, Select
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.sql import ClauseElement

from erpsync.adapters.erp.sinks.staging import (
    staging_insert_statement,
    staging_lock_statement,
    staging_update_statement,
)
from erpsync.adapters.erp.sinks.visual_labor_ticket import (
    labor_ticket_table,
    ticket_lock_statement,
    ticket_update_statement,
)
from erpsync.adapters.erp.visual_source import LOOKUP_BATCH
from erpsync.adapters.erp.visual_statements import preset_statements
from erpsync.config import Settings, SourceSettings

SAMPLE: dict[str, Any] = {
    "ids": [101, 102, 103],
    "keys": ["K1", "K2", "K3"],
    "closed_since": datetime(2024, 1, 1),
    "after": 1000,
    "site_id": "MAIN",
    "wo_statuses": ["R", "F"],
    "op_excluded": ["C", "X"],
}


@dataclass(frozen=True, slots=True)
class ErpStatement:
    """One statement: its name, the job that runs it, when, what it reads, and its SQL."""

    name: str
    job: str
    when: str
    reads: str
    sql: str


def dialect_of(url: URL | str) -> Dialect:
    """The SQLAlchemy dialect of a URL, rendering binds as `:name` (no driver needed)."""
    dialect_class: Any = make_url(url).get_dialect()
    dialect: Dialect = dialect_class(paramstyle="named")
    return dialect


def render(statement: ClauseElement | Executable, dialect: Dialect, schema: str | None = None) -> str:
    """The statement as the dialect writes it; expanding IN lists shown with three sample binds."""
    with_params: Any = statement
    if isinstance(statement, Select):  # DML has no expanding binds to fill in
        with_params = statement.params(**{k: v for k, v in SAMPLE.items() if k in _bind_names(statement)})
    if schema is None:
        return str(with_params.compile(dialect=dialect, compile_kwargs={"render_postcompile": True}))
    compiled = with_params.compile(
        dialect=dialect,
        schema_translate_map={None: schema},
        compile_kwargs={"render_postcompile": True, "render_schema_translate": True},
    )
    return str(compiled).replace("__[SCHEMA__none]", dialect.identifier_preparer.quote_schema(schema))


def _bind_names(statement: Any) -> set[str]:
    return set(statement.compile().params)


def erp_statements(
    settings: Settings, generic_statements: Mapping[str, Executable] | None = None
) -> list[ErpStatement]:
    """Every statement of the configured source and write-back sink.

    `generic_statements` are the generic-sql source's (they need the live table to be built:
    the CLI opens the source for them).
    """
    found: list[ErpStatement] = []
    source = settings.source
    if source is not None and source.kind == "infor-visual":
        found += _visual(settings, source)
    elif source is not None and source.kind == "generic-sql" and generic_statements:
        found += _generic(settings, source, generic_statements)
    found += _writeback(settings)
    return found


def _every(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


def _visual(settings: Settings, source: SourceSettings) -> list[ErpStatement]:
    v = source.visual
    statements = preset_statements(v)
    dialect = dialect_of(source.url)
    sync = f"sync job, every {_every(settings.sync.interval_seconds)} (sync.interval_seconds)"
    one_shot = "and every one-shot `erpsync sync`, `plan`, `resync`, `sources check`"
    if v.full_read_interval_minutes == 0:
        full_when = f"{sync}: every cycle (visual.full_read_interval_minutes = 0), {one_shot}"
        between = "never (visual.full_read_interval_minutes = 0)"
    else:
        full_when = (
            f"sync job: the first cycle of the process, then every {v.full_read_interval_minutes} min "
            f"(visual.full_read_interval_minutes), {one_shot}"
        )
        between = (
            f"{sync}, every cycle between full reads (while the known tickets are under 1/10 of the ids)"
        )
    imports = settings.sync.imports
    import_when = (
        f"import job, every {_every(imports.interval_seconds)} (sync.imports.interval_seconds)"
        if imports.enabled
        else "import job: off (sync.imports.enabled = false); `erpsync sources check`"
    )
    rows = [
        (
            "runs",
            full_when,
            "every LABOR_TICKET row: no index VISUAL ships serves CLOCK_OUT, so the whole table is "
            "scanned (the start-up / nightly safety net); OPERATION, WORK_ORDER, PART by primary key",
        ),
        ("latest_id", between, "MAX(TRANSACTION_ID): one probe of the LABOR_TICKET primary key"),
        (
            "known_tickets",
            f"{between}, one statement per {LOOKUP_BATCH} tickets",
            "the tickets the last read returned (open, or closed within "
            f"visual.closed_ticket_lookback_hours = {v.closed_ticket_lookback_hours}), by primary key",
        ),
        (
            "new_tickets",
            between,
            "tickets above the highest TRANSACTION_ID already seen less visual.transaction_id_margin "
            f"({v.transaction_id_margin}): a primary-key range",
        ),
        (
            "lookup",
            f"sync job, only for runs MM still has open that the read did not return (normally none), "
            f"{LOOKUP_BATCH} per statement; `erpsync resync`",
            "tickets by primary key",
        ),
        (
            "operations",
            import_when,
            "operations of active work orders: VISUAL ships no index on WORK_ORDER.STATUS or "
            "OPERATION.STATUS, so WORK_ORDER is scanned and OPERATION read by its key",
        ),
    ]
    return [
        ErpStatement(
            name,
            "import" if name == "operations" else "sync",
            when,
            reads,
            render(statements[name], dialect, v.schema_name),
        )
        for name, when, reads in rows
    ]


def _generic(
    settings: Settings, source: SourceSettings, statements: Mapping[str, Executable]
) -> list[ErpStatement]:
    g = source.generic
    dialect = dialect_of(source.url)
    sync = f"sync job, every {_every(settings.sync.interval_seconds)} (sync.interval_seconds)"
    if g.watermark and g.full_read_interval_minutes:
        full_when = (
            f"sync job: the first cycle of the process, then every {g.full_read_interval_minutes} min "
            "(generic.full_read_interval_minutes), and every one-shot command; import job"
        )
    else:
        full_when = f"{sync}: every cycle, and the import job (no generic.watermark)"
    reads = {
        "rows": (full_when, "every row of the mapped table / view / query"),
        "changed_rows": (
            f"{sync}, every cycle between full reads",
            f"rows whose {g.watermark} is above the highest value seen less generic.watermark_margin; "
            f"an index on {g.watermark} makes this a range read",
        ),
        "lookup": (
            f"{sync}: the open runs of the last read (with a watermark), and runs MM has open that the "
            f"read did not return; {LOOKUP_BATCH} keys per statement",
            "rows by run key (or job): index that column",
        ),
    }
    return [
        ErpStatement(name, "sync", *reads[name], render(statement, dialect))
        for name, statement in statements.items()
    ]


def _writeback(settings: Settings) -> list[ErpStatement]:
    wb = settings.writeback
    database = wb.database or settings.source
    if wb.sink in ("none", "csv") or database is None:
        return []
    dialect = dialect_of(database.url)
    when = (
        f"writeback job, every {_every(wb.interval_seconds)} (writeback.interval_seconds), only when "
        f"counts changed; one transaction per {wb.batch_size} runs (writeback.batch_size)"
    )
    schema = None
    if wb.sink == "visual-labor-ticket":
        schema = settings.source.visual.schema_name if settings.source is not None else None
        table = labor_ticket_table()
        rows: list[tuple[str, str, Any]] = [
            (
                "lock_tickets",
                "LABOR_TICKET by primary key, locked",
                ticket_lock_statement(table, SAMPLE["ids"]),
            ),
            ("update_ticket", "one LABOR_TICKET row by primary key", ticket_update_statement(table)),
        ]
    elif wb.sink == "staging":
        name = wb.staging_table
        rows = [
            (
                "lock_staging_rows",
                f"{name} rows by RUN_ID (its key), locked",
                staging_lock_statement(name, SAMPLE["keys"]),
            ),
            ("insert_staging_row", f"a run with no {name} row yet", staging_insert_statement(name)),
            ("update_staging_row", f"one {name} row by RUN_ID", staging_update_statement(name)),
        ]
    else:
        reads = "writeback.statement, once per run"
        return [ErpStatement("statement", "writeback", when, reads, wb.statement or "")]
    return [ErpStatement(n, "writeback", when, reads, render(st, dialect, schema)) for n, reads, st in rows]
