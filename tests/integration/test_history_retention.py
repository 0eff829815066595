"""History retention on SQLite, PostgreSQL and MariaDB: what goes, what must stay, one audit row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import (
    AuditEntry,
    Cycle,
    Heartbeat,
    QuarantineEntry,
    RunBinding,
    SyncAction,
)
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.config import load_settings
from erpsync.domain.errors import ConfigError
from erpsync.service.retention import HISTORY_PURGE_ACTION, PurgeRequest, purge_history

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
OLD, RECENT = NOW - timedelta(days=400), NOW - timedelta(days=10)


def binding(key: str, status: str, updated_at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "source": "erp",
        "run_key": key,
        "mm_run_id": f"erp:{key}",
        "erp_job": "W1/1",
        "erp_operation": "10",
        "erp_machine": "M1",
        "mm_machine_id": "M1",
        "status": status,
        "in_setup": False,
        "key_generation": "",
        "created_at": updated_at,
        "updated_at": updated_at,
        "version": 1,
        **extra,
    }


def action(key: str, run: str, status: str, settled_at: datetime | None) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "kind": "start_run",
        "status": status,
        "source": "erp",
        "run_key": run,
        "mm_run_id": f"erp:{run}",
        "attempts": 1,
        "created_at": settled_at or OLD,
        "settled_at": settled_at,
    }


def quarantine(key: str, status: str, seen: datetime, action_id: int | None = None) -> dict[str, Any]:
    return {
        "source": "erp",
        "record_key": key,
        "error_class": "blank_machine",
        "message": "no machine",
        "first_seen_at": seen,
        "last_seen_at": seen,
        "attempts": 1,
        "status": status,
        "action_id": action_id,
    }


def seed(store: StateStore) -> None:
    with store.session() as session:
        session.execute(
            insert(RunBinding),
            [
                binding("LT1", "stopped", OLD),  # finished long ago: goes
                binding("LT2", "failed", OLD),  # goes
                binding("LT3", "stopped", RECENT),  # finished recently: stays
                binding("LT4", "running", OLD),  # open in MM, however old: stays
                binding("LT5", "vanished", OLD),  # left open in MM: stays
                binding("LT6", "stopped", OLD, counts_in_doubt="[[1,1,0,0]]"),  # a write in doubt: stays
            ],
        )
        session.execute(
            insert(SyncAction),
            [
                action("start_run:erp:LT1:production", "LT1", "succeeded", OLD),  # goes
                action("stop_run:erp:LT1", "LT1", "succeeded", OLD),  # goes
                action("start_run:erp:LT3:production", "LT3", "succeeded", RECENT),  # recent: stays
                action("start_run:erp:LT4:production", "LT4", "succeeded", OLD),  # run still open: stays
                action("stop_run:erp:LT9", "LT9", "pending", None),  # not settled: stays
                action("start_run:erp:LT8:production", "LT8", "quarantined", OLD),  # open quarantine: stays
            ],
        )
        refused = session.scalar(
            select(SyncAction.id).where(SyncAction.idempotency_key == "start_run:erp:LT8:production")
        )
        session.execute(
            insert(QuarantineEntry),
            [
                quarantine("LT20", "resolved", OLD),  # goes
                quarantine("LT21", "discarded", OLD),  # not seen for the retention: goes
                quarantine("LT22", "discarded", RECENT),  # still seen: stays (else it would come back)
                quarantine("LT23", "open", OLD),  # stays
                quarantine("erp:LT8", "open", OLD, action_id=refused),
            ],
        )
        session.execute(
            insert(Cycle),
            [
                {"correlation_id": "c1", "kind": "sync", "started_at": OLD, "outcome": "ok"},  # goes
                {"correlation_id": "c2", "kind": "sync", "started_at": RECENT, "outcome": "ok"},
                {"correlation_id": "c3", "kind": "import", "started_at": OLD - timedelta(days=1)},  # goes
                {"correlation_id": "c4", "kind": "import", "started_at": OLD, "outcome": "ok"},  # newest
            ],
        )
        session.execute(
            insert(Heartbeat),
            [
                {"instance": "host-1", "role": "stopped", "started_at": OLD, "beat_at": OLD},  # goes
                {"instance": "host-2", "role": "leader", "started_at": OLD, "beat_at": RECENT},
            ],
        )


def left(store: StateStore) -> dict[str, list[str]]:
    with store.session() as session:
        return {
            "bindings": sorted(session.scalars(select(RunBinding.run_key))),
            "actions": sorted(session.scalars(select(SyncAction.idempotency_key))),
            "quarantine": sorted(session.scalars(select(QuarantineEntry.record_key))),
            "cycles": sorted(session.scalars(select(Cycle.correlation_id))),
            "heartbeats": sorted(session.scalars(select(Heartbeat.instance))),
        }


def purge_audits(store: StateStore) -> list[dict[str, Any]]:
    with store.session() as session:
        details = session.scalars(select(AuditEntry.detail).where(AuditEntry.action == HISTORY_PURGE_ACTION))
        return [json.loads(d or "{}") for d in details]


def test_history_past_retention_goes_and_what_can_still_matter_stays(state_store: StateStore) -> None:
    seed(state_store)
    counted = purge_history(
        SqlUnitOfWorkFactory(state_store),
        PurgeRequest(retention_days=395, batch_size=2, now=NOW, dry_run=True),
    )
    assert counted.total == 9
    assert purge_audits(state_store) == [], "a dry run writes nothing"

    done = purge_history(
        SqlUnitOfWorkFactory(state_store), PurgeRequest(retention_days=395, batch_size=2, now=NOW)
    )
    assert done.complete
    assert done.deleted == {
        "erpsync_action": 2,
        "erpsync_run_binding": 2,
        "erpsync_cycle": 2,
        "erpsync_quarantine": 2,
        "erpsync_heartbeat": 1,
    }
    assert left(state_store) == {
        "bindings": ["LT3", "LT4", "LT5", "LT6"],
        "actions": [
            "start_run:erp:LT3:production",
            "start_run:erp:LT4:production",
            "start_run:erp:LT8:production",
            "stop_run:erp:LT9",
        ],
        "quarantine": ["LT22", "LT23", "erp:LT8"],
        "cycles": ["c2", "c4"],
        "heartbeats": ["host-2"],
    }
    (audited,) = purge_audits(state_store)
    assert audited["deleted"] == done.deleted
    assert audited["retention_days"] == 395

    again = purge_history(
        SqlUnitOfWorkFactory(state_store), PurgeRequest(retention_days=395, batch_size=2, now=NOW)
    )
    assert again.total == 0
    assert len(purge_audits(state_store)) == 1, "a purge that finds nothing writes no audit row"
    with state_store.session() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 1


def test_history_retention_must_outlive_the_closed_ticket_lookback(tmp_path: Path) -> None:
    config = tmp_path / "erpsync.toml"
    config.write_text(
        '[source]\nkind = "infor-visual"\n[source.visual]\nclosed_ticket_lookback_hours = 96\n'
        "[service]\nhistory_retention_days = 4\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"history_retention_days \(4\) must be longer than"):
        load_settings(config)
    config.write_text(config.read_text(encoding="utf-8").replace("= 4", "= 5"), encoding="utf-8")
    assert load_settings(config).service.history_retention_days == 5
