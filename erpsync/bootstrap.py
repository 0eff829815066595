"""The composition root: the only place that picks real adapters and wires them into the service.

`build_service(settings)` returns the long-running `Service` (runtime/service.py). Per leadership
term, the service calls `jobs_factory(fencing)`; every job built there holds that term's
`FencingContext` (a `erpsync.service.fence.Fence`), so work started under a lost term is refused.

A scheduled job's name is its loop and its `erpsync_cycle` kind (sync, writeback, import, purge):
readiness and the heartbeat use it. A job signals failure by raising; returning normally is success.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog

from erpsync.adapters.erp.factory import open_source
from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.state.store import StateStore
from erpsync.config import Settings
from erpsync.domain.errors import ConfigError
from erpsync.runtime.metrics import AUDIT_PURGED
from erpsync.runtime.scheduler import ScheduledJob
from erpsync.runtime.service import FencingContext, Service
from erpsync.service.fence import Fence
from erpsync.service.retention import purge_audit
from erpsync.service.sync import SyncService

log = structlog.get_logger(__name__)


def purge_job(settings: Settings, store: StateStore, fencing: FencingContext) -> ScheduledJob:
    """Audit retention: small batches, each checked against the fencing token in its transaction."""
    svc = settings.service

    def run(stop: threading.Event) -> None:
        result = purge_audit(
            store,
            retention_days=svc.audit_retention_days,
            batch_size=svc.purge_batch_size,
            stop=stop,
            check=fencing.check,
            fencing_token=fencing.token,
        )
        AUDIT_PURGED.inc(result.deleted)
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
    return SyncService(settings, store, source, client, fence, **kwargs)


def open_client(settings: Settings) -> MMClient:
    """The MM client, refusing to start without an API key (the error names the key)."""
    problems = [p for p in settings.missing_for_service() if p.startswith("mm.")]
    if problems:
        raise ConfigError(problems[0])
    return MMClient(settings.mm)


def build_jobs(settings: Settings, store: StateStore, fencing: FencingContext) -> list[ScheduledJob]:
    """Every scheduled job of one leadership term."""
    jobs: list[ScheduledJob] = []
    # --- sync loop (reconcile ERP -> MM and dispatch): add its ScheduledJob here, name "sync",
    #     interval settings.sync.interval_seconds, stale_after_seconds service.max_cycle_age_seconds.
    # --- write-back loop (MM counts -> ERP): name "writeback", interval settings.writeback.interval_seconds.
    # --- job imports: name "import", only when settings.sync.imports.enabled.
    jobs.append(purge_job(settings, store, fencing))
    return jobs


def build_service(settings: Settings, *, migrate_schema: bool = False) -> Service:
    """The service `erpsync serve` runs, wired to real adapters."""
    store = StateStore.from_settings(settings.state)
    return Service(
        settings,
        store,
        jobs_factory=lambda fencing: build_jobs(settings, store, fencing),
        # Start-up recovery (settle in-doubt actions before the first cycle) and the MM circuit
        # breaker's state are wired here together with the sync loop's MM client.
        recovery=None,
        breaker_state=None,
        migrate_schema=migrate_schema,
    )
