"""`erpsync sync | plan | resync | quarantine | machines`: the reconciler, operated by hand."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from erpsync.cli.common import (
    counted,
    exit_if_not_done,
    fail,
    handle_errors,
    print_json,
    print_table,
    state_of,
    stdout,
)
from erpsync.cli.exit_codes import ExitCode
from erpsync.domain.lifecycle import ActionKind, ActionStatus

if TYPE_CHECKING:
    from erpsync.config import Settings
    from erpsync.domain.model import BadRecord
    from erpsync.domain.plan import Plan, RunAction
    from erpsync.domain.snapshot_trust import StopHold
    from erpsync.service.resync import ResyncResult
    from erpsync.service.sync import SyncSummary

# The service layer, SQLAlchemy and httpx are imported inside the commands (start-up time).

quarantine_app = typer.Typer(help="Bad records kept aside: list, retry, discard.", no_args_is_help=True)
# `plan --json`: what it prints is the plan's actions, not a record or table (common.JsonOption)
PlanJsonOption = Annotated[bool, typer.Option("--json", help="A list of actions as JSON.")]

# What an empty plan says. `plan` compares the ERP with erpsync's records and never asks MM, so
# it cannot say MM matches; a resync reads MM, and says so only of the runs it could read.
PLAN_NOTHING_TO_DO = (
    "nothing to do: erpsync's records match the ERP "
    "(MachineMetrics not asked; `erpsync resync --dry-run` reads it)"
)
RESYNC_NOTHING_TO_DO = "nothing to do: MachineMetrics matches the ERP"
RESYNC_NOTHING_READ = "nothing to do for the {read} runs MachineMetrics could be read for"
RESYNC_NONE_READ = "nothing planned: MachineMetrics could not be read"


def plan_rows(
    plan: Plan, bad_rows: Sequence[BadRecord] = (), hold: StopHold | None = None
) -> list[dict[str, Any]]:
    """The plan as a list of actions (the `--json` shape of plan and resync --dry-run); the stops
    a hold keeps back (an untrusted snapshot, a mass vanish) are listed as `held:stop_run`."""
    rows: list[dict[str, Any]] = [_action_row(a, str(a.kind), a.reason) for a in plan.actions]
    rows += [
        {
            "kind": f"flag:{f.kind}",
            "run_id": f.mm_run_id,
            "machine": None,
            "erp_machine": f.erp_machine,
            "job": f.job,
            "operation": f.operation,
            "phase": None,
            "end_at": None,
            "reason": f.message,
        }
        for f in plan.flags
    ]
    rows += [
        {
            "kind": "quarantine",
            "run_id": None,
            "machine": None,
            "erp_machine": None,
            "job": None,
            "operation": None,
            "phase": None,
            "end_at": None,
            "reason": f"{r.location}: {r.reason}",
        }
        for r in [*bad_rows, *plan.quarantined]
    ]
    if hold is not None and not hold.confirmed:
        rows += [
            _action_row(a, f"held:{a.kind}", f"not stopped: {hold.reason} ({a.reason})") for a in hold.stops
        ]
    return rows


def _action_row(a: RunAction, kind: str, reason: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "run_id": a.mm_run_id,
        "machine": a.mm_machine_id,
        "erp_machine": a.erp_machine,
        "job": a.job,
        "operation": a.operation,
        "phase": "setup" if a.in_setup else "production",
        "end_at": a.end_at.isoformat() if a.kind is ActionKind.STOP else None,
        "reason": reason,
    }


def _print_plan(rows: list[dict[str, Any]], nothing: str) -> None:
    if not rows:
        stdout.print(nothing, markup=False)
        return
    print_table(
        ["action", "MM run id", "machine", "job", "op", "reason"],
        [
            [
                row["kind"],
                row["run_id"] or "",
                row["machine"] or row["erp_machine"] or "",
                row["job"] or "",
                row["operation"] or "",
                row["reason"],
            ]
            for row in rows
        ],
    )


@handle_errors
def sync(ctx: typer.Context) -> None:
    """Run one reconcile-and-dispatch cycle now and print what it did."""
    from erpsync import bootstrap  # noqa: PLC0415
    from erpsync.observability.correlation import correlation  # noqa: PLC0415
    from erpsync.service.imports import run_imports  # noqa: PLC0415

    settings = state_of(ctx).settings()
    with correlation("cli"), bootstrap.sync_service(settings, acting=True) as service:
        summary = service.run_cycle()
        imported = run_imports(service) if settings.sync.imports.enabled else None
    if imported is not None:
        summary.imported += int(imported.uploaded)
    stdout.print(summary.line(), markup=False)
    upload = imported.not_done if imported is not None else 0
    not_done = not_done_lines(summary, unsettled(settings) - upload)
    if imported is not None and imported.not_done:
        not_done.append(f"the job list upload was not done: {imported.last_error or 'not sent'}")
    exit_if_not_done(not_done)


def unsettled(settings: Settings) -> int:
    """Actions the journal holds unsettled once a command is done: in doubt, not sent, or waiting
    for their next attempt (a later cycle sends them). Not all done, whichever cycle left them."""
    from erpsync import bootstrap  # noqa: PLC0415

    with bootstrap.state_reader(settings) as reader:
        counts = reader.action_counts()
    return counts.get(ActionStatus.PENDING, 0) + counts.get(ActionStatus.FAILED_RETRYABLE, 0)


def not_done_lines(summary: SyncSummary | None, unsettled: int) -> list[str]:
    """What a cycle could not do, for stderr (empty: everything was done): how many actions, why
    by count, and the last error, which names MM's URL when MM could not be reached; then the
    journal's other unsettled actions (`unsettled` counts them all)."""
    lines = []
    if summary is not None and summary.not_done():
        why = [
            f"{n} {what}"
            for n, what in (
                (summary.retried, "left retrying (a later cycle sends them again)"),
                (summary.not_sent, "not sent"),
                (summary.given_up, "given up (see `erpsync quarantine list`)"),
            )
            if n
        ]
        line = f"{counted(summary.not_done(), 'action')} not done: {', '.join(why)}"
        lines.append(f"{line}; last error: {summary.last_error}" if summary.last_error else line)
    earlier = unsettled - (summary.retried + summary.not_sent if summary is not None else 0)
    if earlier > 0:
        lines.append(
            f"{counted(earlier, 'more action')} unsettled in the journal: in doubt, or waiting for "
            "the next attempt after a failure (see `erpsync status`, `erpsync audit`)"
        )
    return lines


@handle_errors
def plan(ctx: typer.Context, as_json: PlanJsonOption = False) -> None:
    """Show what a sync would do now, without doing anything."""
    from erpsync import bootstrap  # noqa: PLC0415
    from erpsync.observability.correlation import correlation  # noqa: PLC0415

    settings = state_of(ctx).settings()
    with correlation("cli"), bootstrap.sync_service(settings, acting=False) as service:
        planned = service.compute_plan()
    rows = plan_rows(planned.plan, planned.bad_rows, planned.hold)
    if as_json:
        print_json(rows)
    else:
        _print_plan(rows, PLAN_NOTHING_TO_DO)


@handle_errors
def resync(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Option(help="ERP job name, e.g. 1808412/1.")] = None,
    operation: Annotated[str | None, typer.Option(help="Operation (name or sequence).")] = None,
    machine: Annotated[str | None, typer.Option(help="ERP machine / resource id.")] = None,
    run: Annotated[str | None, typer.Option(help="MM run id or ERP run key.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every run erpsync knows.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan, change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    confirm_stops: Annotated[
        bool,
        typer.Option(
            "--confirm-stops",
            help="Stop the runs an untrusted or mass-vanish ERP snapshot held open (see `erpsync plan`); "
            "alone it runs one sync cycle that makes them.",
        ),
    ] = False,
) -> None:
    """Re-establish MachineMetrics state for the selected runs (re-start lost runs, stop stale ones)."""
    from erpsync import bootstrap  # noqa: PLC0415
    from erpsync.observability.correlation import correlation  # noqa: PLC0415
    from erpsync.service.imports import run_imports  # noqa: PLC0415
    from erpsync.service.resync import Selection, run_resync  # noqa: PLC0415

    selection = Selection(job=job, operation=operation, machine=machine, run=run, everything=everything)
    if selection.is_empty():
        if confirm_stops:
            _confirm_stops(ctx, dry_run=dry_run, as_json=as_json)
            return
        what = "--job, --operation, --machine, --run or --all (or --confirm-stops)"
        raise fail(f"say what to resync: {what}", ExitCode.CONFIG)
    acting = bootstrap.sync_service(state_of(ctx).settings(), acting=True)
    with correlation("cli"), acting as service, _progress() as progress:
        result = run_resync(
            service, selection, dry_run=dry_run, progress=progress, confirm_stops=confirm_stops
        )
        reimported = None
        if everything and not dry_run and state_of(ctx).settings().sync.imports.enabled:
            reimported = run_imports(service, force=True)  # --all also re-sends the job list
    rows = plan_rows(result.planned.plan, hold=result.planned.hold)
    if as_json:
        print_json(rows)
    else:
        _print_plan(rows, _resync_nothing(result))
        stdout.print(f"{result.selected} runs selected, MM read for {len(result.mm_state)}", markup=False)
        if result.summary:
            stdout.print(result.summary.line(), markup=False)
        if reimported is not None:
            stdout.print(f"job list re-imported: {reimported.rows} rows ({reimported.import_type})")
        elif dry_run:
            stdout.print("dry run: nothing was sent", markup=False)
    upload = reimported.not_done if reimported is not None else 0
    not_done = _unread_lines(result)
    if not dry_run:
        not_done += not_done_lines(result.summary, unsettled(state_of(ctx).settings()) - upload)
    if reimported is not None and reimported.not_done:
        not_done.append(f"the job list upload was not done: {reimported.last_error or 'not sent'}")
    exit_if_not_done(not_done)


def _resync_nothing(result: ResyncResult) -> str:
    """What an empty resync plan says: MM matches only where it was read."""
    if not result.unreadable:
        return RESYNC_NOTHING_TO_DO
    return RESYNC_NOTHING_READ.format(read=len(result.mm_state)) if result.mm_state else RESYNC_NONE_READ


def _unread_lines(result: ResyncResult) -> list[str]:
    """The runs a resync could not read from MM (left alone, planned for nothing), for stderr."""
    if not result.unreadable:
        return []
    shown = ", ".join(result.unreadable[:5]) + (", ..." if len(result.unreadable) > 5 else "")
    line = (
        f"could not read {counted(len(result.unreadable), 'run')} from MachineMetrics, left alone ({shown})"
    )
    return [f"{line}; last error: {result.read_error}" if result.read_error else line]


def _confirm_stops(ctx: typer.Context, *, dry_run: bool, as_json: bool) -> None:
    """`resync --confirm-stops` alone: one sync cycle whose held vanished-run stops go ahead.

    The audit row (`stops_confirmed`) says who confirmed and when; `--dry-run` shows the plan.
    """
    from erpsync import bootstrap  # noqa: PLC0415
    from erpsync.observability.correlation import correlation  # noqa: PLC0415

    settings = state_of(ctx).settings()
    if dry_run:
        with correlation("cli"), bootstrap.sync_service(settings, acting=False) as service:
            service.confirm_stops = True
            planned = service.compute_plan()
        rows = plan_rows(planned.plan, planned.bad_rows, planned.hold)
        if as_json:
            print_json(rows)
        else:
            _print_plan(rows, PLAN_NOTHING_TO_DO)  # a sync's plan: MM is not asked
            stdout.print("dry run: nothing was sent", markup=False)
        return
    with correlation("cli"), bootstrap.sync_service(settings, acting=True) as service:
        service.confirm_stops = True
        summary = service.run_cycle()
    if as_json:
        print_json(summary.__dict__)
    else:
        if summary.confirmed_stops:
            stdout.print(f"confirmed {summary.confirmed_stops} held stops", markup=False)
        else:
            stdout.print("no stops were held: nothing to confirm", markup=False)
        stdout.print(summary.line(), markup=False)
    exit_if_not_done(not_done_lines(summary, unsettled(settings)))


@handle_errors
def quarantine_list(
    ctx: typer.Context,
    status: Annotated[str, typer.Option(help="open, retry, resolved, discarded or all.")] = "open",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Quarantined records, oldest first."""
    from erpsync import bootstrap  # noqa: PLC0415
    from erpsync.service import quarantine as quarantine_service  # noqa: PLC0415

    with bootstrap.quarantine_admin(state_of(ctx).settings()) as admin:
        entries = quarantine_service.list_entries(admin.uow, status=None if status == "all" else status)
    if as_json:
        print_json([e.__dict__ for e in entries])
        return
    if not entries:
        stdout.print(f"no {status} quarantine entries", markup=False)
        return
    print_table(
        ["id", "source", "record", "where", "error", "message", "status", "seen"],
        [
            [
                str(e.id),
                e.source,
                e.record_key,
                e.location,
                e.error_class,
                e.message,
                e.status,
                str(e.attempts),
            ]
            for e in entries
        ],
    )


@handle_errors
def quarantine_retry(ctx: typer.Context, entry_id: Annotated[int, typer.Argument(help="Entry id.")]) -> None:
    """Put a record back on the normal path, re-planned from the ERP's current row and mapping."""
    from erpsync import bootstrap  # noqa: PLC0415 - start-up time
    from erpsync.domain.machines import MachineMapper  # noqa: PLC0415
    from erpsync.observability.correlation import correlation  # noqa: PLC0415
    from erpsync.service import quarantine as quarantine_service  # noqa: PLC0415

    settings = state_of(ctx).settings()
    mapper = MachineMapper.from_settings(settings.machines)
    with correlation("cli"), bootstrap.quarantine_admin(settings) as admin:
        what = quarantine_service.retry(admin.uow, entry_id, lookup=admin.lookup, mapper=mapper)
    stdout.print(f"entry {entry_id}: {what}", markup=False)


@handle_errors
def quarantine_discard(
    ctx: typer.Context,
    entry_id: Annotated[int, typer.Argument(help="Entry id.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit row).")] = None,
) -> None:
    """Mark a record as needing no action (it stays in the table as discarded)."""
    from erpsync import bootstrap  # noqa: PLC0415
    from erpsync.observability.correlation import correlation  # noqa: PLC0415
    from erpsync.service import quarantine as quarantine_service  # noqa: PLC0415

    with correlation("cli"), bootstrap.quarantine_admin(state_of(ctx).settings()) as admin:
        quarantine_service.discard(admin.uow, entry_id, reason)
    stdout.print(f"entry {entry_id} discarded", markup=False)


@handle_errors
def machines(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """ERP resources seen, their MachineMetrics machine id, and which ones MM rejected."""
    from erpsync import bootstrap  # noqa: PLC0415
    from erpsync.domain.admin_rows import MachineRow  # noqa: PLC0415
    from erpsync.service import quarantine as quarantine_service  # noqa: PLC0415

    with bootstrap.quarantine_admin(state_of(ctx).settings()) as admin:
        views = quarantine_service.list_machines(admin.uow)
    if as_json:  # every column of the row contract, in its order
        print_json([{name: getattr(v, name) for name in MachineRow.__annotations__} for v in views])
        return
    if not views:
        stdout.print("no machines seen yet: run `erpsync sync` first")
        return
    print_table(
        ["ERP resource", "MM erpMachineId", "runs", "last seen", "MM rejected"],
        [
            [
                v.erp_machine,
                v.mm_machine_id or "(ignored)",
                str(v.runs_seen),
                f"{v.last_seen_at:%Y-%m-%d %H:%M}",
                f"{v.rejected_at:%Y-%m-%d %H:%M} {v.reject_reason}" if v.rejected_at else "",
            ]
            for v in views
        ],
    )


def register(app: typer.Typer) -> None:
    app.add_typer(quarantine_app, name="quarantine")
    app.command("sync")(sync)
    app.command("plan")(plan)
    app.command("resync")(resync)
    app.command("machines")(machines)
    quarantine_app.command("list")(quarantine_list)
    quarantine_app.command("retry")(quarantine_retry)
    quarantine_app.command("discard")(quarantine_discard)


@contextmanager
def _progress() -> Iterator[Any]:
    """A rich progress bar on a terminal; plain (nothing) when output is not a TTY."""
    if not sys.stdout.isatty():
        yield None
        return
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(transient=True) as progress:
        task = progress.add_task("reading MachineMetrics", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance
