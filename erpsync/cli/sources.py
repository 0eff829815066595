"""`erpsync sources check`: connect to the configured ERP source, read it, say what it saw.
`erpsync sources sql`: every statement erpsync runs against the ERP, in its dialect, and how often.

Read-only and side-effect free: nothing is acknowledged, no CSV file is moved, no checkpoint is
written. Exit codes: 0 the source could be read (bad rows are reported, not fatal), 1 it could not
be connected to or read (or the export file as a whole is unreadable), 2 configuration error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from erpsync.cli.common import (
    JsonOption,
    exit_if_not_done,
    fail,
    handle_errors,
    print_json,
    state_of,
    stdout,
)
from erpsync.cli.exit_codes import ExitCode
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, SourceStats

if TYPE_CHECKING:
    from erpsync.adapters.erp.port import RunSnapshot
    from erpsync.config import Settings, SourceSettings

sources_app = typer.Typer(
    help="The ERP source: check that it can be read, list the SQL run against it.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the `sources` group to the root `erpsync` app."""
    app.add_typer(sources_app, name="sources")


@sources_app.command("check")
@handle_errors
def check(
    ctx: typer.Context,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(min=0, max=10_000, help="Quarantined rows to list.")] = 20,
    operations: Annotated[
        bool, typer.Option("--operations/--no-operations", help="Also read operations (imports).")
    ] = True,
) -> None:
    """Connect, read runs (and operations), print rows read, runs, quarantined rows, machines."""
    settings = state_of(ctx).settings()
    if settings.source is None:
        raise fail("source: required; add a [source] section (see erpsync.example.toml)", ExitCode.CONFIG)
    report = _check(settings, settings.source, limit, operations)
    if as_json:
        print_json(report)
    else:
        _print(report)
    exit_if_not_done([f"cannot read {problem}" for problem in report["unreadable"]])


@sources_app.command("sql")
@handle_errors
def sql(
    ctx: typer.Context,
    as_json: JsonOption = False,
) -> None:
    """Print every statement erpsync runs against the ERP (source and write-back), in the configured
    database's dialect, with the job that runs it, how often, and what it reads. For a DBA's review.
    A generic-sql source connects once to read the mapped table's columns; nothing else connects."""
    from erpsync.adapters.erp.generic_source import GenericSqlSource  # noqa: PLC0415 - start-up time
    from erpsync.adapters.erp.statements import erp_statements  # noqa: PLC0415
    from erpsync.config import SQL_SOURCE_KINDS  # noqa: PLC0415

    settings = state_of(ctx).settings()
    generic = None
    source = settings.source
    if source is not None and source.kind == "generic-sql":
        reader = GenericSqlSource(source)
        try:
            generic = reader.statements()
        finally:
            reader.close()
    found = erp_statements(settings, generic)
    where = _location(source) if source is not None else "no [source]"
    if as_json:
        print_json({"source": where, "statements": [asdict(s) for s in found]})
        return
    out = stdout.print
    kind = source.kind if source is not None else "none"
    out(f"-- statements erpsync runs against the ERP: source {kind} at {where}", markup=False)
    if source is not None and source.kind not in SQL_SOURCE_KINDS:
        out("-- the source reads CSV files: no SQL", markup=False)
    if not found:
        out("-- none (writeback.sink runs no SQL)", markup=False)
    for statement in found:
        out("", markup=False)
        out(f"-- {statement.name} ({statement.job}): {statement.when}", markup=False)
        out(f"-- reads: {statement.reads}", markup=False)
        out(f"{statement.sql.strip()};", markup=False)


def _check(
    settings: Settings, source_settings: SourceSettings, limit: int, operations: bool
) -> dict[str, Any]:
    from erpsync import bootstrap  # noqa: PLC0415 - start-up time
    from erpsync.adapters.erp.csv_source import CsvSource  # noqa: PLC0415

    source = bootstrap.erp_source(source_settings)
    try:
        snapshot: RunSnapshot | None = (
            source.read_current() if isinstance(source, CsvSource) else source.read_runs()
        )
        runs: Counter[str] = Counter()
        bad: list[BadRecord] = []
        unreadable: list[str] = []
        stats = SourceStats()
        if snapshot is not None:
            for item in snapshot:
                if isinstance(item, JobOperationRun):
                    runs[item.state.value] += 1
                else:
                    bad.append(item)
                    if item.error_class == "unreadable_file":
                        unreadable.append(f"{item.location}: {item.reason}")
            stats = snapshot.stats
        op_stats, op_count = SourceStats(), 0
        if operations and not unreadable:
            for op in source.read_operations():
                if isinstance(op, JobOperation):
                    op_count += 1
                else:
                    bad.append(op)
            op_stats = getattr(source, "operation_stats", op_stats)
    finally:
        source.close()
    machines = sorted(stats.machines | op_stats.machines)
    bad = list({(b.record_key, b.field, b.reason): b for b in bad}.values())  # runs and ops see the same rows
    return {
        "source": source_settings.name,
        "kind": source_settings.kind,
        "location": _location(source_settings),
        "snapshot": None if snapshot is None else ("complete" if snapshot.complete else "partial"),
        "rows_read": stats.rows_read,
        "runs": sum(runs.values()),
        "runs_by_state": dict(sorted(runs.items())),
        "skipped": dict(sorted(stats.skipped.items())),
        "operations": op_count if operations else None,
        "operation_rows_read": op_stats.rows_read if operations else None,
        "quarantined": len(bad),
        "quarantined_rows": [
            {"location": _where(b), "field": b.field, "reason": b.reason, "record_key": b.record_key}
            for b in bad[:limit]
        ],
        "machines": _machines(settings, machines),
        "unreadable": unreadable,
    }


def _where(bad: BadRecord) -> str:
    """`file:line (field)` for file rows, `record key (field)` for database rows."""
    if bad.file:
        return bad.location
    return f"{bad.record_key} ({bad.field})" if bad.field else bad.record_key


def _location(source: SourceSettings) -> str:
    from erpsync.config import SQL_SOURCE_KINDS  # noqa: PLC0415

    if source.kind in SQL_SOURCE_KINDS:
        return source.redacted_url()
    return str(source.csv.path or source.csv.inbox)


def _machines(settings: Settings, seen: list[str]) -> dict[str, Any]:
    from erpsync.domain.machines import MachineMapper  # noqa: PLC0415

    mapper = MachineMapper.from_settings(settings.machines)
    overrides = {mapper.key(k) for k in settings.machines.overrides}
    mapped, ignored, unmapped = {}, [], []
    for machine in seen:
        target = mapper.map(machine)
        if target is None:
            ignored.append(machine)
        elif mapper.key(machine) in overrides:
            mapped[machine] = target
        else:
            unmapped.append(machine)
    return {"seen": seen, "overridden": mapped, "ignored": ignored, "unmapped": unmapped}


def _print(report: dict[str, Any]) -> None:
    out = stdout.print
    out(f"source {report['source']} ({report['kind']}) at {report['location']}", markup=False)
    if report["snapshot"] is None:
        out("runs:        no export file to read yet", markup=False)
    else:
        states = ", ".join(f"{k} {v}" for k, v in report["runs_by_state"].items()) or "none"
        skipped = ", ".join(f"{k} {v}" for k, v in report["skipped"].items()) or "none"
        out(f"snapshot:    {report['snapshot']}", markup=False)
        out(f"rows read:   {report['rows_read']}", markup=False)
        out(f"runs found:  {report['runs']} ({states})", markup=False)
        out(f"skipped:     {skipped}", markup=False)
    if report["operations"] is not None:
        out(f"operations:  {report['operations']} (from {report['operation_rows_read']} rows)", markup=False)
    out(f"quarantined: {report['quarantined']}", markup=False)
    for row in report["quarantined_rows"]:
        out(f"  {row['location']}: {row['reason']}", markup=False)
    if report["quarantined"] > len(report["quarantined_rows"]):
        out(f"  ... {report['quarantined'] - len(report['quarantined_rows'])} more (--limit)", markup=False)
    machines = report["machines"]
    out(f"machines seen ({len(machines['seen'])}): {', '.join(machines['seen']) or 'none'}", markup=False)
    for erp_id, mm_id in machines["overridden"].items():
        out(f"  {erp_id} -> {mm_id} (machines.overrides)", markup=False)
    if machines["ignored"]:
        out(f"  ignored (machines.ignore): {', '.join(machines['ignored'])}", markup=False)
    if machines["unmapped"]:
        out(
            "  unmapped, sent as is (each must be an ERP Machine ID in MM): "
            + ", ".join(machines["unmapped"]),
            markup=False,
        )
