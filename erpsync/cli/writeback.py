"""`erpsync writeback` (one write-back cycle) and `erpsync erp install-staging`.

Only wiring and display: the cycle is erpsync.service.writeback, the sinks are in
erpsync.adapters.erp.sinks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from erpsync.adapters.erp.sinks.dialects import DDL_DIALECTS
from erpsync.cli.common import (
    JsonOption,
    counted,
    exit_if_not_done,
    handle_errors,
    print_json,
    print_table,
    state_of,
    stderr,
    stdout,
)
from erpsync.cli.exit_codes import ExitCode
from erpsync.domain.errors import ConfigError

if TYPE_CHECKING:
    from erpsync.config import DatabaseSettings, Settings
    from erpsync.service.writeback_report import WritebackRow, WritebackSummary

erp_app = typer.Typer(help="erpsync's own objects inside the ERP database.", no_args_is_help=True)
PrintSqlOption = Annotated[
    bool, typer.Option("--print-sql", help="Print the DDL for a DBA instead of running it.")
]


def register(app: typer.Typer) -> None:
    """Add `writeback` and the `erp` group to the root command."""
    app.command("writeback")(writeback)
    app.add_typer(erp_app, name="erp")


@handle_errors
def writeback(
    ctx: typer.Context,
    run: Annotated[
        str | None, typer.Option("--run", help="Only this MM run id (erpJobOperationRunId).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Read MM and show what would be written; write nothing anywhere."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run one write-back cycle: MM part counts of bound runs into the ERP.

    Exit 1 when a run could not be read from MM, its counts were quarantined as implausible, or a
    write failed (a dry run: would fail); 2 when the configuration or the credentials are wrong."""
    from erpsync import bootstrap  # noqa: PLC0415 - start-up time
    from erpsync.observability.correlation import correlation  # noqa: PLC0415

    settings = state_of(ctx).settings()
    with correlation("cli"):
        summary = bootstrap.writeback(settings, run_id=run, dry_run=dry_run)
    if as_json:
        print_json({"summary": summary.counters(), "rows": [row.__dict__ for row in summary.rows]})
    else:
        _print(summary)
    if summary.sink_ready is False:
        raise typer.Exit(ExitCode.CONFIG if summary.sink_config_error else ExitCode.NOT_DONE)
    exit_if_not_done(not_done_lines(summary))


def not_done_lines(summary: WritebackSummary) -> list[str]:
    """What the cycle could not do, for stderr: runs MM could not be read for, counts quarantined as
    implausible (never written), writes that failed, final counts given up."""
    s = summary
    lines = []
    if s.unreachable:
        # every run without data was unreachable: the last one's note is the last error (with the URL)
        no_data = [row.message for row in s.rows if row.outcome == "no_data"]
        last = no_data[-1] if len(no_data) == s.unreachable else None
        why = f"last error: {last}" if last else "the note of each run says why"
        lines.append(f"could not read {counted(s.unreachable, 'run')} from MachineMetrics; {why}")
    if s.implausible:
        runs = ", ".join(row.mm_run_id for row in s.implausible_runs())
        lines.append(
            f"{counted(s.implausible, 'run')} answered implausible part counts, quarantined and not written: "
            f"{runs} (see `erpsync quarantine list`)"
        )
    if s.failed:
        lines.append(f"{counted(s.failed, 'run')} failed; the note of each run says why")
    if s.final_quarantined:
        lines.append(
            f"final counts of {counted(s.final_quarantined, 'run')} given up (see `erpsync quarantine list`)"
        )
    if s.outcome == "failed" and not lines:
        lines.append("the write-back cycle failed")
    return lines


def _counts(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "-"
    return "{total}/{good}/{scrap}/{nonconform}".format(**counts)


def _print(summary: WritebackSummary) -> None:
    s = summary
    if s.read_only:
        stdout.print("writeback.sink = 'none': read-only mode, counts were read but nothing was written")
    head = "dry run, nothing written" if s.dry_run else f"cycle {s.outcome}"
    parts = [f"{s.read} run(s) read ({s.calls} MM calls)"]
    if s.dry_run and s.sink_ready is False:
        parts.append(f"{s.would_write} to write once the sink is ready")
    elif s.dry_run:
        parts.append(f"{s.would_write} would be written")
    else:
        parts += [f"{s.written} written", f"{s.already_written} already written"]
    parts += [
        f"{s.unchanged} unchanged",
        f"{s.no_data} no data" + (f" ({s.unreachable} MM unreachable)" if s.unreachable else ""),
        f"{s.refused} decrease refused",
        f"{s.conflicts} conflicts",
        f"{s.failed} failed",
        f"{s.implausible} with implausible counts",
        f"{s.skipped} quarantined",
    ]
    if s.drifted:  # MM lost or ended runs erpsync had open: sync.heal_drift says what follows
        parts.append(f"{s.drifted} lost or ended in MM")
    stdout.print(
        f"writeback via sink {s.sink} ({head}): " + ", ".join(parts) + f"; {s.duration:.2f}s", markup=False
    )
    if s.sink_ready is True:
        stdout.print(f"sink {s.sink} is ready: {s.sink_check}", markup=False)
    elif s.sink_ready is False:
        stderr.print(
            f"error: sink {s.sink} is NOT ready, nothing could be written: {s.sink_check}", markup=False
        )
    rows = s.rows if s.dry_run else [r for r in s.rows if r.outcome != "unchanged"]
    if rows:
        _table(rows)


def _table(rows: list[WritebackRow]) -> None:
    print_table(
        ["MM run", "job", "op", "machine", "MM t/g/s/n", "last written", "outcome", "note"],
        [
            [
                row.mm_run_id,
                row.erp_job,
                row.erp_operation,
                row.erp_machine,
                _counts(row.mm_counts),
                _counts(row.last_written),
                row.outcome,
                row.message or "",
            ]
            for row in rows
        ],
    )


@erp_app.command("install-staging")
@handle_errors
def install_staging_command(
    ctx: typer.Context,
    print_sql: PrintSqlOption = False,
    dialect: Annotated[
        str | None,
        typer.Option(
            help=f"SQL dialect for --print-sql ({', '.join(DDL_DIALECTS)}); default: the configured DB."
        ),
    ] = None,
) -> None:
    """Create the write-back staging table (writeback.staging_table) in the ERP database."""
    from erpsync import bootstrap  # noqa: PLC0415
    from erpsync.adapters.erp.sinks.staging import install_staging, staging_ddl  # noqa: PLC0415

    settings = state_of(ctx).settings()
    table = settings.writeback.staging_table
    if print_sql:
        sys_out = typer.get_text_stream("stdout")
        sys_out.write(staging_ddl(dialect or _configured_dialect(settings), table))
        return
    if settings.writeback.sink != "staging":
        stderr.print(
            f"note: writeback.sink is '{settings.writeback.sink}'; only sink 'staging' uses this table",
            markup=False,
        )
    engine = bootstrap.writeback_engine(settings)
    try:
        install_staging(engine, table)
    finally:
        engine.dispose()
    stdout.print(f"staging table {table} is ready in {_database(settings)}", markup=False)


def _configured(settings: Settings) -> DatabaseSettings | None:
    return settings.writeback.database or settings.source


def _configured_dialect(settings: Settings) -> str:
    database = _configured(settings)
    if database is None:
        raise ConfigError(
            "no write-back database configured: pass --dialect "
            f"({', '.join(DDL_DIALECTS)}) or set writeback.database.url"
        )
    return str(database.sqlalchemy_url().get_backend_name())


def _database(settings: Settings) -> str:
    database = _configured(settings)
    return str(database.redacted_url()) if database is not None else "(none)"
