"""`erpsync`: the entry point. Sub-command groups live in their own modules and are added here."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from erpsync.cli.common import (
    CliState,
    JsonOption,
    handle_errors,
    plain,
    print_json,
    print_table,
    state_of,
    stderr,
    stdout,
)
from erpsync.cli.demo import register as register_demo
from erpsync.cli.exit_codes import ExitCode
from erpsync.cli.service import register as register_service
from erpsync.cli.simulator import simulator
from erpsync.cli.sources import register as register_sources
from erpsync.cli.sync import register as register_sync
from erpsync.cli.writeback import register as register_writeback

app = typer.Typer(
    name="erpsync",
    help="Keep the ERP and MachineMetrics job runs in step, exactly once, with an audit trail.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="erpsync's own state database: create, upgrade, inspect.", no_args_is_help=True)
config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)
CheckOption = Annotated[bool, typer.Option("--check", help="Exit 1 unless the schema is at head.")]
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
register_service(app)
register_writeback(app)
register_sync(app)
register_sources(app)
app.command("simulator")(simulator)
register_demo(app)

# read-only commands that should answer at once: logging set up on first use (cli/common.py)
QUICK_COMMANDS = frozenset({"status", "audit"})

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML config file (default: $ERPSYNC_CONFIG, else built-in defaults)."
    ),
]


def _version(value: bool) -> None:
    if value:
        from erpsync import __version__  # noqa: PLC0415 - start-up time

        stdout.print(f"erpsync {__version__}")
        raise typer.Exit


@app.callback()
def root(
    ctx: typer.Context,
    config: ConfigOption = None,
    log_level: Annotated[str | None, typer.Option(help="Override logging.level.")] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    # erpsync's pipeline before any command runs (structlog's default would render tracebacks with
    # locals); a command that loads the configuration re-applies it with its level and format.
    # Not for a help page, which logs nothing and should answer at once; set up at the first record
    # for the read-only commands, which usually log nothing and should answer at once too.
    state = CliState(config_file=config, log_level=log_level)
    state.logging_on_first_use = ctx.invoked_subcommand in QUICK_COMMANDS
    if "--help" not in sys.argv[1:]:
        state.configure_logging()
    ctx.obj = state


@db_app.command("upgrade")
@handle_errors
def db_upgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision.")] = "head"
) -> None:
    """Create or upgrade erpsync's tables (never ERP tables)."""
    from erpsync import bootstrap  # noqa: PLC0415 - start-up time

    settings = state_of(ctx).settings()
    with bootstrap.schema(settings) as schema:
        before = schema.current()
        schema.upgrade(revision)
        after = schema.current()
    stdout.print(f"state database {settings.state.redacted_url()}: {before or 'empty'} -> {after}")


@db_app.command("downgrade")
@handle_errors
def db_downgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")]
) -> None:
    """Downgrade erpsync's tables to an older revision (base drops them all)."""
    from erpsync import bootstrap  # noqa: PLC0415 - start-up time

    with bootstrap.schema(state_of(ctx).settings()) as schema:
        schema.downgrade(revision)
        after = schema.current()
    stdout.print(f"state database now at {after or 'base (empty)'}")


@db_app.command("current")
@handle_errors
def db_current(ctx: typer.Context, check: CheckOption = False) -> None:
    """Show the schema revision of the state database and the newest one this version knows."""
    from erpsync import bootstrap  # noqa: PLC0415 - start-up time

    settings = state_of(ctx).settings()
    with bootstrap.schema(settings) as schema:
        current = schema.current()
        head = schema.head()
    at_head = current == head
    stdout.print(
        f"state database {settings.state.redacted_url()}: revision {current or 'none'} "
        f"(head {head}){'' if at_head else ' - run `erpsync db upgrade`'}"
    )
    if check and not at_head:
        raise typer.Exit(ExitCode.NOT_DONE)


@config_app.command("check")
@handle_errors
def config_check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the configuration as JSON.")] = False,
    service: Annotated[
        bool, typer.Option("--service/--no-service", help="Also require what the sync service needs.")
    ] = True,
) -> None:
    """Validate the configuration and print it with secrets redacted."""
    settings = state_of(ctx).settings()
    problems = settings.missing_for_service() if service else []
    if as_json:
        print_json(settings.redacted())
    else:
        stdout.print(_toml_like(settings.redacted()), markup=False)
    if problems:
        for problem in problems:
            stderr.print(f"error: {problem}", markup=False)
        raise typer.Exit(ExitCode.CONFIG)
    stderr.print("configuration is valid", markup=False)


def _toml_like(data: dict[str, object], prefix: str = "") -> str:
    """Render nested settings as TOML-looking sections (display only)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and scalars else []
    lines += [
        f"{key} = {json.dumps(value)}" if value is not None else f"# {key} = (not set)"
        for key, value in scalars.items()
    ]
    for key, value in tables.items():
        assert isinstance(value, dict)
        sub = _toml_like(value, f"{prefix}.{key}" if prefix else key)
        if sub:
            lines += ["", sub] if lines else [sub]
    return "\n".join(lines)


@app.command("status")
@handle_errors
def status(
    ctx: typer.Context,
    as_json: JsonOption = False,
) -> None:
    """Bindings by status, pending actions, open quarantine, last cycles, leader."""
    from erpsync import bootstrap  # noqa: PLC0415 - start-up time
    from erpsync.service.status import status_report  # noqa: PLC0415

    with bootstrap.state_reader(state_of(ctx).settings()) as reader:
        report = status_report(reader)
    if as_json:
        print_json(report.__dict__ | {"cycles": [c.__dict__ for c in report.cycles]})
        return
    stdout.print(f"runs by status:    {plain(report.bindings) or 'none yet'}", markup=False)
    stdout.print(f"actions by status: {plain(report.actions) or 'none yet'}", markup=False)
    stdout.print(f"open quarantine:   {report.open_quarantine}")
    expires = report.leader_expires_at
    held = expires is not None and expires > datetime.now(UTC)
    state = f"until {_when(expires)}" if held else f"free since {_when(expires)}"
    leader = f"{report.leader} (token {report.fencing_token}, {state})"
    stdout.print(f"leader:            {leader if report.leader else 'none'}", markup=False)
    if not report.cycles:
        stdout.print("cycles:            none yet")
        return
    rows = [
        [
            cycle.kind,
            _when(cycle.started_at),
            _when(cycle.finished_at),
            cycle.outcome or "running",
            _when(cycle.last_ok_at),
        ]
        for cycle in report.cycles
    ]
    print_table(["cycle", "last started (UTC)", "last finished", "outcome", "last ok"], rows)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "-"


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("expected an ISO timestamp or an age like 30m, 12h, 7d") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command("audit")
@handle_errors
def audit(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option(help="ERP job (as in erp_job).")] = None,
    machine: Annotated[str | None, typer.Option(help="ERP machine / resource id.")] = None,
    run: Annotated[str | None, typer.Option(help="MM run id (erpJobOperationRunId).")] = None,
    outcome: Annotated[str | None, typer.Option(help="succeeded, failed, quarantined, ...")] = None,
    action: Annotated[str | None, typer.Option(help="start_run, stop_run, write_counts, ...")] = None,
    since: Annotated[str | None, typer.Option(help="ISO timestamp or age (30m, 12h, 7d).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Read the audit trail, newest first."""
    from erpsync import bootstrap  # noqa: PLC0415 - start-up time

    since_at = _parse_since(since)
    with bootstrap.state_reader(state_of(ctx).settings()) as reader:
        rows = reader.audit(
            job=job, machine=machine, run=run, outcome=outcome, action=action, since=since_at, limit=limit
        )
    columns = [
        "id",
        "occurred_at",
        "triggered_by",
        "action",
        "outcome",
        "erp_job",
        "erp_operation",
        "erp_machine",
        "mm_run_id",
        "http_status",
        "error_class",
        "error_message",
        "before_json",
        "after_json",
        "changed_fields",
        "detail",
        "source",
        "correlation_id",
    ]
    records = [{c: row[c] for c in columns} for row in rows]
    if as_json:
        print_json(records)
        return
    if not records:
        stdout.print("no audit rows match")
        return
    lines = []
    for r in records:
        # ids, the why and the error are printed whole (wrapped on a terminal, never cut): they are
        # what a person reads the audit for
        why = r["detail"] or ""
        if r["changed_fields"]:
            why = f"{why} (changed: {r['changed_fields']})".strip()
        lines.append(
            [
                f"{r['occurred_at']:%Y-%m-%d %H:%M:%S}",
                r["action"],
                r["outcome"],
                r["erp_job"] or "",
                r["erp_operation"] or "",
                r["erp_machine"] or "",
                r["mm_run_id"] or "",
                why,
                r["error_message"] or "",
            ]
        )
    print_table(["when (UTC)", "action", "outcome", "job", "op", "machine", "MM run", "why", "error"], lines)


def main() -> None:
    app()
