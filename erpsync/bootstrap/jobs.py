"""The long-running service, wired to real adapters (part of the composition root, see __init__.py).

`build_service(settings)` returns the long-running `Service` (runtime/service.py). Per leadership
term, the service calls `jobs_factory(fencing)`; every job built there holds that term's
`FencingContext` (a `erpsync.service.ports.Fence`), so work started under a lost term is refused.

A scheduled job's name is its loop and its `erpsync_cycle` kind (sync, writeback, import, purge):
readiness and the heartbeat use it. A job signals failure by raising; returning normally is success.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog

from erpsync.adapters.erp.factory import open_source
from erpsync.adapters.erp.sinks.base import CountSink
from erpsync.adapters.erp.sinks.factory import open_sink
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.config import Settings
from erpsync.domain.errors import ConfigError
from erpsync.observability.metrics import AUDIT_PURGED
from erpsync.runtime.scheduler import ScheduledJob
from erpsync.runtime.service import Service
from erpsync.runtime.term import FencingContext
from erpsync.service.cycles import cycle
from erpsync.service.dispatch import Dispatcher
from erpsync.service.imports import run_imports
from erpsync.service.policy import SyncPolicy
from erpsync.service.ports import Fence
from erpsync.service.recovery import settle_in_doubt
from erpsync.service.retention import PurgeRequest, purge_audit, purge_history
from erpsync.service.sync import SyncService
from erpsync.service.writeback import WritebackPolicy, run_writeback

log = structlog.get_logger(__name__)


def purge_job(settings: Settings, store: StateStore, fencing: FencingContext) -> ScheduledJob:
    """Retention (audit, then history): small batches, each checked against the fencing token."""
    svc = settings.service
    uow = SqlUnitOfWorkFactory(store)

    def run(stop: threading.Event) -> None:
        with cycle(SqlUnitOfWorkFactory(store), "purge") as record:
            audit = PurgeRequest(svc.audit_retention_days, svc.purge_batch_size, stop=stop, fence=fencing)
            result = purge_audit(uow, audit)
            history = purge_history(uow, replace(audit, retention_days=svc.history_retention_days))
            record.summary = {
                "deleted": result.deleted,
                "cutoff": result.cutoff,
                "complete": result.complete and history.complete,
                "history_deleted": history.deleted,
                "history_cutoff": history.cutoff,
            }
        AUDIT_PURGED.inc(result.deleted)
        if history.total:
            log.info("history past retention purged", cutoff=history.cutoff.isoformat(), **history.deleted)
        if result.deleted:
            log.info(
                "audit rows past retention purged",
                deleted=result.deleted,
                cutoff=result.cutoff.isoformat(),
                complete=result.complete,
            )

    return ScheduledJob(
        name="purge",
        func=run,
        interval_seconds=svc.purge_interval_seconds,
        timeout_seconds=svc.job_timeout_seconds,
        run_at_start=True,
    )


def open_sync(
    settings: Settings, store: StateStore, fence: Fence | None, client: MMClient | None, **kwargs: Any
) -> SyncService:
    """A SyncService on the configured source (`client`/`fence` None: read-only, for `plan`)."""
    if settings.source is None:
        raise ConfigError("source: required; add a [source] section (see erpsync.example.toml)")
    source = open_source(settings.source, store)
    policy = SyncPolicy.from_settings(settings)
    return SyncService(SqlUnitOfWorkFactory(store), source, client, fence, policy, **kwargs)


def open_client(settings: Settings) -> MMClient:
    """The MM client, refusing to start without an API key (the error names the key)."""
    problems = [p for p in settings.missing_for_service() if p.startswith("mm.")]
    if problems:
        raise ConfigError(problems[0])
    return MMClient(settings.mm)


def _sync_service_job(
    name: str,
    interval: float,
    body: Callable[[SyncService], object],
    settings: Settings,
    store: StateStore,
    client: MMClient,
    fencing: FencingContext,
    stale_after: float | None = None,
) -> ScheduledJob:
    """A job that opens the source, runs `body` on a SyncService, and always closes the source."""

    def run(stop: threading.Event) -> None:
        service = open_sync(settings, store, fencing, client, stop_event=stop)
        try:
            body(service)
        finally:
            service.source.close()

    return ScheduledJob(
        name=name,
        func=run,
        interval_seconds=interval,
        timeout_seconds=settings.service.job_timeout_seconds,
        stale_after_seconds=stale_after,
    )


def sync_job(
    settings: Settings, store: StateStore, client: MMClient, fencing: FencingContext
) -> ScheduledJob:
    """The reconcile-and-dispatch loop."""
    return _sync_service_job(
        "sync",
        settings.sync.interval_seconds,
        SyncService.run_cycle,
        settings,
        store,
        client,
        fencing,
        stale_after=settings.service.max_cycle_age_seconds,
    )


def import_job(
    settings: Settings, store: StateStore, client: MMClient, fencing: FencingContext
) -> ScheduledJob:
    """Job imports, uploaded only when the job file changed."""
    return _sync_service_job(
        "import", settings.sync.imports.interval_seconds, run_imports, settings, store, client, fencing
    )


def writeback_job(
    settings: Settings, store: StateStore, client: MMClient, fencing: FencingContext
) -> ScheduledJob:
    """Part counts from MM into the ERP.

    The sink (and its ERP engine) is opened once and kept for the leadership term, not opened per
    cycle: a new engine each cycle is a new SQLAlchemy dialect, and the dialects' reflection caches
    (module-level, keyed by dialect) kept every one of them, so a long-running service grew by
    every cycle. A cycle that fails closes the sink; the next one opens a fresh one.
    """
    kept: list[CountSink] = []

    def run(stop: threading.Event) -> None:
        if not kept:
            kept.append(open_sink(settings))
        try:
            run_writeback(
                SqlUnitOfWorkFactory(store),
                client,
                kept[0],
                WritebackPolicy.from_settings(settings),
                fence=fencing,
                stop=stop,
            )
        except BaseException:
            close()
            raise

    def close() -> None:
        while kept:
            kept.pop().close()

    return ScheduledJob(
        name="writeback",
        func=run,
        interval_seconds=settings.writeback.interval_seconds,
        timeout_seconds=settings.service.job_timeout_seconds,
        stale_after_seconds=settings.service.max_cycle_age_seconds,
        close=close,
    )


def build_jobs(
    settings: Settings, store: StateStore, client: MMClient, fencing: FencingContext
) -> list[ScheduledJob]:
    """Every scheduled job of one leadership term."""
    jobs = [sync_job(settings, store, client, fencing), writeback_job(settings, store, client, fencing)]
    if settings.sync.imports.enabled:
        jobs.append(import_job(settings, store, client, fencing))
    jobs.append(purge_job(settings, store, fencing))
    return jobs


def recover(settings: Settings, store: StateStore, client: MMClient, fencing: FencingContext) -> None:
    """Start-up recovery: settle every action a previous leader left in doubt, reading MM first."""
    dispatcher = Dispatcher(
        SqlUnitOfWorkFactory(store),
        client,
        fencing,
        max_concurrency=settings.mm.max_concurrency,
        max_attempts=settings.sync.max_action_attempts,
        stop_event=fencing.stop,
    )
    settle_in_doubt(dispatcher, settings.sync.in_doubt_after_seconds, due_now=True)


def build_service(settings: Settings, *, migrate_schema: bool = False) -> Service:
    """The service `erpsync serve` runs, wired to real adapters. Raises ConfigError when incomplete."""
    problems = settings.missing_for_service()
    if problems:
        raise ConfigError("; ".join(problems))
    store = StateStore.from_settings(settings.state)
    client = open_client(settings)
    return Service(
        settings,
        store,
        jobs_factory=lambda fencing: build_jobs(settings, store, client, fencing),
        recovery=lambda fencing: recover(settings, store, client, fencing),
        breaker_state=lambda: client.breaker_state,
        migrate_schema=migrate_schema,
    )
