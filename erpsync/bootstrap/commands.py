"""What the `erpsync` commands run on: the state database, MM, the ERP, wired here and only here.

Each function picks the real adapter and closes what it opened; a test passes its own (`store`,
`mm`, `uow`, `source`, `sink`) and keeps ownership of it. Everything is imported inside the
functions: `erpsync status` and `erpsync --help` should answer at once (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from erpsync.adapters.erp.port import JobSource
    from erpsync.adapters.erp.sinks.base import CountSink
    from erpsync.adapters.mm.client import MMClient
    from erpsync.adapters.state.status_reads import CoreStateReader
    from erpsync.adapters.state.store import StateStore
    from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
    from erpsync.config import Settings, SourceSettings
    from erpsync.domain.model import BadRecord, JobOperationRun
    from erpsync.runtime.leader import LeaseStatus
    from erpsync.service.ports import AdminUnitOfWork, AdminUnitOfWorkFactory
    from erpsync.service.quarantine import RunLookup
    from erpsync.service.sync import SyncService
    from erpsync.service.writeback_report import WritebackSummary

# ruff: noqa: PLC0415 - the imports below are inside the functions on purpose (start-up time)


@contextmanager
def state_store(settings: Settings) -> Iterator[StateStore]:
    """erpsync's state database (`state.url`), disposed at the end."""
    from erpsync.adapters.state.store import StateStore

    store = StateStore.from_settings(settings.state)
    try:
        yield store
    finally:
        store.dispose()


@contextmanager
def _store(settings: Settings, store: StateStore | None) -> Iterator[StateStore]:
    """`store` as given (its owner disposes it), else the configured one."""
    if store is not None:
        yield store
        return
    with state_store(settings) as opened:
        yield opened


@contextmanager
def state(settings: Settings, *, store: StateStore | None = None) -> Iterator[SqlUnitOfWorkFactory]:
    """Units of work on the state database (each one transaction)."""
    from erpsync.adapters.state.uow import SqlUnitOfWorkFactory

    with _store(settings, store) as opened:
        yield SqlUnitOfWorkFactory(opened)


@dataclass(frozen=True)
class Schema:
    """erpsync's tables in the state database: their revision, and moving them to another one."""

    engine: Engine

    def current(self) -> str | None:
        from erpsync.adapters.state import migrate

        return migrate.current_revision(self.engine)

    def head(self) -> str | None:
        from erpsync.adapters.state import migrate

        return migrate.head_revision(self.engine)

    def upgrade(self, revision: str = "head") -> None:
        from erpsync.adapters.state import migrate

        migrate.upgrade(self.engine, revision)

    def downgrade(self, revision: str) -> None:
        from erpsync.adapters.state import migrate

        migrate.downgrade(self.engine, revision)


@contextmanager
def schema(settings: Settings) -> Iterator[Schema]:
    with state_store(settings) as store:
        yield Schema(store.engine)


@contextmanager
def state_reader(settings: Settings) -> Iterator[CoreStateReader]:
    """The state database for a read-only command: Core only, no ORM session (start-up time)."""
    from erpsync.adapters.state.db import state_engine
    from erpsync.adapters.state.status_reads import CoreStateReader

    engine = state_engine(settings.state)
    try:
        with engine.connect() as conn:
            yield CoreStateReader(conn)
    finally:
        engine.dispose()


def lease_status(settings: Settings) -> LeaseStatus:
    """The leader lease as the database has it now."""
    from erpsync.runtime.leader import LeaderLease

    with state_store(settings) as store:
        lease = LeaderLease(
            store.engine, holder="erpsync-cli", ttl_seconds=settings.service.lease_ttl_seconds
        )
        return lease.status()


def mm(settings: Settings) -> MMClient:
    """The MM client, refusing to start without an API key (the error names the key)."""
    from erpsync.bootstrap.jobs import open_client

    return open_client(settings)


def erp_source(settings: SourceSettings, store: StateStore | None = None) -> JobSource:
    """The configured ERP source (CSV sources keep their file checkpoints in `store`)."""
    from erpsync.adapters.erp.factory import open_source

    return open_source(settings, store)


def writeback_engine(settings: Settings) -> Engine:
    """A writable engine on the write-back database (the ERP's, unless writeback.database is set)."""
    from erpsync.adapters.erp.sinks.factory import open_writeback_engine

    return open_writeback_engine(settings)


@contextmanager
def sync_service(
    settings: Settings, *, acting: bool, store: StateStore | None = None, mm: MMClient | None = None
) -> Iterator[SyncService]:
    """A SyncService on the configured source; `acting`: with MM and the leader lease held for it.

    Not acting, it can plan but not send (`erpsync plan`).
    """
    from erpsync.bootstrap.jobs import open_client, open_sync
    from erpsync.runtime.cli_lease import held_lease

    with _store(settings, store) as opened:
        if not acting:
            with _closing_source(open_sync(settings, opened, None, None)) as service:
                yield service
            return
        client = mm if mm is not None else open_client(settings)
        try:
            with (
                held_lease(settings, opened) as fencing,
                _closing_source(open_sync(settings, opened, fencing, client)) as service,
            ):
                yield service
        finally:
            if mm is None:
                client.close()


@contextmanager
def _closing_source(service: SyncService) -> Iterator[SyncService]:
    try:
        yield service
    finally:
        service.source.close()


def writeback(
    settings: Settings,
    *,
    run_id: str | None = None,
    dry_run: bool = False,
    store: StateStore | None = None,
    mm: MMClient | None = None,
    sink: CountSink | None = None,
) -> WritebackSummary:
    """One write-back cycle; a real one holds the leader lease, so it never writes beside a service."""
    from erpsync.adapters.erp.sinks.factory import open_sink
    from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
    from erpsync.bootstrap.jobs import open_client
    from erpsync.runtime.cli_lease import held_lease
    from erpsync.service.writeback import WritebackPolicy, run_writeback

    with (
        _store(settings, store) as opened,
        nullcontext(mm) if mm is not None else open_client(settings) as client,
    ):
        counts = sink or open_sink(settings)
        try:
            lease = nullcontext(None) if dry_run else held_lease(settings, opened)
            with lease as fencing:
                return run_writeback(
                    SqlUnitOfWorkFactory(opened),
                    client,
                    counts,
                    WritebackPolicy.from_settings(settings),
                    run_id=run_id,
                    dry_run=dry_run,
                    fence=fencing,
                )
        finally:
            if sink is None:
                counts.close()


@dataclass(frozen=True)
class QuarantineWork:
    """One transaction of `erpsync quarantine` or `machines`, and the ERP's current rows."""

    uow: AdminUnitOfWork
    lookup: RunLookup | None  # None without a [source]; the source is opened on first use


@contextmanager
def quarantine_admin(
    settings: Settings,
    *,
    uow: AdminUnitOfWorkFactory | None = None,
    source: JobSource | None = None,
) -> Iterator[QuarantineWork]:
    """The quarantine and machine tables in one transaction (committed at the end)."""
    if uow is not None:
        with uow() as work:
            yield QuarantineWork(work, _lookup(source) if source is not None else None)
        return
    with (
        state(settings) as factory,
        _run_lookup(settings, factory.store, source) as lookup,
        factory() as work,
    ):
        yield QuarantineWork(work, lookup)


def _lookup(source: JobSource) -> RunLookup:
    def lookup(run_key: str) -> JobOperationRun | BadRecord | None:
        return next(iter(source.lookup_runs([run_key])), None)

    return lookup


@contextmanager
def _run_lookup(
    settings: Settings, store: StateStore, source: JobSource | None
) -> Iterator[RunLookup | None]:
    """The ERP's current row of one run; the source is opened only when a retry needs it."""
    if source is not None:
        yield _lookup(source)
        return
    if settings.source is None:
        yield None
        return
    source_settings = settings.source
    opened: list[JobSource] = []

    def lookup(run_key: str) -> JobOperationRun | BadRecord | None:
        if not opened:
            opened.append(erp_source(source_settings, store))
        return _lookup(opened[0])(run_key)

    try:
        yield lookup
    finally:
        for each in opened:
            each.close()
