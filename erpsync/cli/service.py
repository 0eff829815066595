"""`erpsync serve`, `erpsync health`, `erpsync leader status`, `erpsync retention purge`.

`health` is Docker's HEALTHCHECK: it asks the running service's own endpoint (/healthz, or /readyz
with --ready) on the configured port. It deliberately has no fallback to the heartbeat row: the
HTTP endpoint is part of the service, so an instance whose endpoint is down is unhealthy, and the
check needs no database credentials or round trip. It exits 0 (healthy) or 1 (unhealthy), never 2,
which Docker reserves.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated

import typer

from erpsync.cli.common import (
    JsonOption,
    fail,
    handle_errors,
    print_json,
    state_of,
    stderr,
    stdout,
)
from erpsync.cli.exit_codes import ExitCode
from erpsync.domain.errors import ErpsyncError

# The runtime, SQLAlchemy and APScheduler are imported inside the commands (start-up time).

leader_app = typer.Typer(help="The leader lease: which instance is active.", no_args_is_help=True)
retention_app = typer.Typer(help="Retention of the audit trail and history.", no_args_is_help=True)

MigrateOption = Annotated[
    bool, typer.Option("--migrate", help="Upgrade the state database schema first if it is behind.")
]
ReadyOption = Annotated[
    bool, typer.Option("--ready", help="Ask /readyz (leader fresh or standby) not /healthz.")
]


def register(app: typer.Typer) -> None:
    """Add the service commands to the root `erpsync` app."""
    app.command("serve")(serve)
    app.command("health")(health)
    app.add_typer(leader_app, name="leader")
    app.add_typer(retention_app, name="retention")


@handle_errors
def serve(ctx: typer.Context, migrate: MigrateOption = False) -> None:
    """Run the service: lead (or stand by), sync on schedule, serve /healthz /readyz /metrics."""
    from erpsync.bootstrap import build_service  # noqa: PLC0415

    settings = state_of(ctx).settings()
    problems = settings.missing_for_service()
    if problems:
        for problem in problems:
            stderr.print(f"error: {problem}", markup=False)
        raise typer.Exit(ExitCode.CONFIG)
    code = build_service(settings, migrate_schema=migrate).run()
    raise typer.Exit(code)


def _local_host(host: str) -> str:
    """Where to reach a server bound to `host` from this machine (any-address binds → loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104


@handle_errors
def health(
    ctx: typer.Context,
    ready: ReadyOption = False,
    timeout: Annotated[float, typer.Option(min=0.1, max=60, help="Seconds to wait for an answer.")] = 3.0,
) -> None:
    """Exit 0 when the local service answers healthy (or ready with --ready), else 1."""
    import urllib.error  # noqa: PLC0415 - start-up time
    import urllib.request  # noqa: PLC0415

    try:
        svc = state_of(ctx).settings().service
    except ErpsyncError as exc:
        raise fail(str(exc)) from None
    if svc.health_port == 0:
        raise fail("service.health_port is 0 (a random port); give the service a fixed port to check it")
    host = _local_host(svc.health_host)
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{svc.health_port}/{'readyz' if ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise fail(f"{url} did not answer: {reason}") from None
    if not ready:
        if status != 200:
            raise fail(f"{url} answered {status}")
        stdout.print(f"healthy ({url})", markup=False)
        return
    try:
        detail = json.loads(body)
    except ValueError:
        detail = {}
    summary = (
        f"role {detail.get('role', '?')}, token {detail.get('fencing_token')}, db_ok {detail.get('db_ok')}"
    )
    if status != 200:
        stale = [name for name, loop in (detail.get("loops") or {}).items() if not loop.get("fresh", True)]
        raise fail(f"not ready ({summary}{', stale: ' + ', '.join(stale) if stale else ''})")
    stdout.print(f"ready ({summary})", markup=False)


@leader_app.command("status")
@handle_errors
def leader_status(
    ctx: typer.Context,
    as_json: JsonOption = False,
) -> None:
    """Who holds the leader lease, its fencing token, and when it expires (database clock)."""
    from erpsync import bootstrap  # noqa: PLC0415

    status = bootstrap.lease_status(state_of(ctx).settings())
    if as_json:
        print_json(
            {
                "name": status.name,
                "holder": status.holder,
                "fencing_token": status.token,
                "held": status.held,
                "acquired_at": status.acquired_at,
                "renewed_at": status.renewed_at,
                "expires_at": status.expires_at,
                "db_now": status.db_now,
                "remaining_seconds": round(status.remaining.total_seconds(), 3),
            }
        )
        return
    if status.holder is None:
        stdout.print(f"lease {status.name}: never taken (fencing token {status.token})", markup=False)
        return
    state = "held" if status.held else "free (expired or released)"
    stdout.print(f"lease {status.name}: {state}", markup=False)
    stdout.print(f"holder:        {status.holder}", markup=False)
    stdout.print(f"fencing token: {status.token}", markup=False)
    stdout.print(f"acquired at:   {status.acquired_at}", markup=False)
    stdout.print(f"renewed at:    {status.renewed_at}", markup=False)
    remaining = f"{status.remaining.total_seconds():+.1f} s; db now {status.db_now}"
    stdout.print(f"expires at:    {status.expires_at} ({remaining})", markup=False)


@retention_app.command("purge")
@handle_errors
def retention_purge(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be purged.")] = False,
    days: Annotated[
        int | None, typer.Option(min=1, help="Keep this many days (default: service.audit_retention_days).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Rows per transaction (default: service.purge_batch_size).")
    ] = None,
) -> None:
    """Delete audit rows, then finished history (bindings, actions, cycles...), past retention."""
    from erpsync import bootstrap  # noqa: PLC0415
    from erpsync.service.retention import PurgeRequest, purge_audit, purge_history  # noqa: PLC0415

    settings = state_of(ctx).settings()
    retention_days = days or settings.service.audit_retention_days
    with bootstrap.state(settings) as uow:
        audit = PurgeRequest(retention_days, batch_size or settings.service.purge_batch_size, dry_run=dry_run)
        result = purge_audit(uow, audit)
        history = purge_history(uow, replace(audit, retention_days=settings.service.history_retention_days))
    cutoff = f"{result.cutoff:%Y-%m-%d %H:%M:%S} UTC"
    if result.dry_run:
        stdout.print(f"would purge {result.deleted} audit rows older than {cutoff} ({retention_days} days)")
    else:
        stdout.print(
            f"purged {result.deleted} audit rows older than {cutoff} ({retention_days} days) "
            f"in {result.batches} batches"
        )
    rows = ", ".join(f"{count} {table}" for table, count in history.deleted.items())
    verb = "would purge" if history.dry_run else "purged"
    stdout.print(
        f"{verb} {rows} rows finished before {history.cutoff:%Y-%m-%d %H:%M:%S} UTC "
        f"(service.history_retention_days = {settings.service.history_retention_days})"
    )
