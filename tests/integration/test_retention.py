"""Audit retention on SQLite, PostgreSQL and MariaDB: batches, the purge's own audit rows, the guard."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.cli.app import app
from erpsync.domain.errors import FencedError
from erpsync.observability.correlation import correlation
from erpsync.service.retention import PURGE_ACTION, PurgeRequest, purge_audit

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
runner = CliRunner()


@dataclass
class CheckedFence:
    """A fence with a fencing token, whose check (when given) runs inside each transaction."""

    token: int
    checked: Callable[[Session], None] | None = None

    def is_current(self) -> bool:
        return True

    def check(self, transaction: Session) -> None:
        if self.checked is not None:
            self.checked(transaction)


@pytest.fixture
def store(state_store: StateStore) -> Iterator[StateStore]:
    """The migrated database behind ONE pooled connection, so a leaked session flag would show."""
    engine = create_db_engine(state_store.engine.url, pool_size=1, max_overflow=0)
    single = StateStore(engine)
    yield single
    single.dispose()


def seed(store: StateStore, *, old: int, recent: int, now: datetime = NOW) -> None:
    with store.session() as session:
        for i in range(old):
            row = record_audit(session, action="start_run", outcome="succeeded", mm_run_id=f"old-{i}")
            row.occurred_at = now - timedelta(days=400 + i)
        for i in range(recent):
            row = record_audit(session, action="start_run", outcome="succeeded", mm_run_id=f"new-{i}")
            row.occurred_at = now - timedelta(days=10)


def runs_left(store: StateStore) -> list[str]:
    with store.session() as session:
        query = select(AuditEntry.mm_run_id).where(AuditEntry.action != PURGE_ACTION).order_by(AuditEntry.id)
        return [r for r in session.scalars(query) if r is not None]


def purge_rows(store: StateStore) -> list[AuditEntry]:
    with store.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == PURGE_ACTION)))


def test_purge_in_batches_keeps_recent_rows_and_audits_each_batch(store: StateStore, backend: str) -> None:
    seed(store, old=5, recent=2)

    dry = purge_audit(
        SqlUnitOfWorkFactory(store), PurgeRequest(retention_days=395, batch_size=2, now=NOW, dry_run=True)
    )
    assert (dry.deleted, dry.dry_run) == (5, True)
    assert len(runs_left(store)) == 7, "a dry run deletes nothing"

    with correlation("schedule"):
        result = purge_audit(
            SqlUnitOfWorkFactory(store),
            PurgeRequest(retention_days=395, batch_size=2, now=NOW, fence=CheckedFence(7)),
        )
    assert (result.deleted, result.batches, result.complete) == (5, 3, True)
    assert result.cutoff == NOW - timedelta(days=395)
    assert runs_left(store) == ["new-0", "new-1"]

    audits = purge_rows(store)
    assert [json.loads(a.detail or "{}")["deleted"] for a in audits] == [2, 2, 1]
    assert all(json.loads(a.detail or "{}")["cutoff"] == result.cutoff.isoformat() for a in audits)
    assert {(a.outcome, a.fencing_token, a.triggered_by) for a in audits} == {("succeeded", 7, "schedule")}

    again = purge_audit(SqlUnitOfWorkFactory(store), PurgeRequest(retention_days=395, batch_size=2, now=NOW))
    assert (again.deleted, again.batches) == (0, 0)
    assert len(purge_rows(store)) == 3, "nothing purged, nothing to audit"

    if backend != "sqlite":  # the guard is back on for the (single, pooled) connection
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text("DELETE FROM erpsync_audit"))


def test_a_stale_fence_deletes_nothing(store: StateStore) -> None:
    seed(store, old=3, recent=0)

    def fenced(_: Session) -> None:
        raise FencedError("fencing token 1 is stale")

    with pytest.raises(FencedError):
        purge_audit(
            SqlUnitOfWorkFactory(store),
            PurgeRequest(retention_days=395, batch_size=10, now=NOW, fence=CheckedFence(1, fenced)),
        )
    assert len(runs_left(store)) == 3
    assert purge_rows(store) == []


def test_the_stop_flag_is_honoured_between_batches(store: StateStore) -> None:
    seed(store, old=4, recent=0)
    stop = threading.Event()
    checks = []

    def check(_: Session) -> None:
        checks.append(1)
        stop.set()  # asked to stop while the first batch runs

    result = purge_audit(
        SqlUnitOfWorkFactory(store),
        PurgeRequest(retention_days=395, batch_size=2, now=NOW, stop=stop, fence=CheckedFence(1, check)),
    )
    assert (result.deleted, result.batches, result.complete) == (2, 1, False)
    assert len(runs_left(store)) == 2


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_cli_retention_purge(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("ERPSYNC_STATE__URL", url)
    now = datetime.now(UTC)  # the CLI purges relative to the real clock
    seed(store, old=3, recent=1, now=now)
    with store.session() as session:  # two rows just past a 30-day retention
        for i in range(2):
            row = record_audit(session, action="stop_run", outcome="succeeded", mm_run_id=f"mid-{i}")
            row.occurred_at = now - timedelta(days=31)

    result = runner.invoke(app, ["retention", "purge", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would purge 3 audit rows" in result.output

    result = runner.invoke(app, ["retention", "purge", "--days", "30", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "purged 5 audit rows" in result.output
    assert "in 3 batches" in result.output
    assert runs_left(store) == ["new-0"]
    with store.session() as session:
        assert session.scalar(select(func.count()).where(AuditEntry.action == PURGE_ACTION)) == 3

    result = runner.invoke(app, ["retention", "purge", "--days", "0"])
    assert result.exit_code == 2
