"""A minimal in-memory unit of work for the write-back service tests.

MemoryTables + MemoryCounts (the write-back repository) + simple stand-ins for the bindings,
quarantine and audit repositories. The `state` helper's MemoryUnitOfWork replaces it once merged:
switch the `uow` fixture to it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from erpsync.adapters.state.memory_counts import MemoryCounts
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.model import BadRecord
from erpsync.service.ports import AuditRecord
from tests.service.fakes import FakeMM, MemorySink

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


class _Bindings:
    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def exists(self, mm_run_id: str) -> bool:
        return mm_run_id in self.tables.bindings

    def lock(self, mm_run_ids: Collection[str]) -> None:
        """One unit of work at a time holds the tables' lock already."""


class _Quarantine:
    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def upsert(self, record: BadRecord, now: datetime, action_id: int | None = None) -> bool:
        for row in self.tables.quarantine.values():
            if (row["source"], row["record_key"], row["error_class"]) == (
                record.source,
                record.record_key,
                record.error_class,
            ):
                reopened = row["status"] != "open"
                row.update(status="open", last_seen_at=now, attempts=row["attempts"] + 1)
                return reopened
        row_id = self.tables.next_id()
        self.tables.quarantine[row_id] = {
            "id": row_id,
            "source": record.source,
            "record_key": record.record_key,
            "error_class": record.error_class,
            "message": record.reason,
            "raw_payload": json.dumps(record.raw, default=str),
            "status": "open",
            "attempts": 1,
            "first_seen_at": now,
            "last_seen_at": now,
        }
        return True

    def open_count(self) -> int:
        return sum(1 for row in self.tables.quarantine.values() if row["status"] == "open")


class _Audit:
    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def record(self, entry: AuditRecord) -> None:
        def as_json(value: Any) -> str | None:
            return json.dumps(value, default=str, sort_keys=True) if value is not None else None

        self.tables.audit.append(
            {
                "id": self.tables.next_id(),
                "action": entry.action,
                "outcome": entry.outcome,
                "source": entry.source,
                "erp_job": entry.erp_job,
                "mm_run_id": entry.mm_run_id,
                "error_class": entry.error_class,
                "error_message": entry.error,
                "before_json": as_json(entry.before),
                "after_json": as_json(entry.after),
                "detail": entry.detail,
            }
        )


class MemoryUnitOfWork:
    def __init__(self, tables: MemoryTables) -> None:
        self.counts = MemoryCounts(tables)
        self.bindings = _Bindings(tables)
        self.quarantine = _Quarantine(tables)
        self.audit = _Audit(tables)


class MemoryUnitOfWorkFactory:
    """One unit of work at a time; one that fails leaves the tables as they were."""

    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    @contextmanager
    def __call__(self, fence: Any = None) -> Iterator[MemoryUnitOfWork]:
        with self.tables.lock:
            snapshot = self.tables.snapshot()
            try:
                if fence is not None:
                    fence.check(self.tables)
                yield MemoryUnitOfWork(self.tables)
            except BaseException:
                self.tables.restore(snapshot)
                raise


def bind(tables: MemoryTables, mm_run_id: str, status: str = "running", **columns: Any) -> None:
    """A binding row as the sync loop leaves it (column names of erpsync_run_binding)."""
    tables.bindings[mm_run_id] = {
        "id": tables.next_id(),
        "source": "erp",
        "run_key": f"key-{mm_run_id}",
        "mm_run_id": mm_run_id,
        "erp_job": f"J-{mm_run_id}",
        "erp_operation": "10",
        "erp_machine": "MILL-1",
        "status": status,
        "updated_at": NOW,
        "mm_end_at": None,
        "erp_end_at": None,
        "last_total_parts": None,
        "last_good_parts": None,
        "last_scrap_parts": None,
        "last_nonconform_parts": None,
        "counts_written_at": None,
        "counts_in_doubt": None,
        **columns,
    }


@pytest.fixture
def tables() -> MemoryTables:
    return MemoryTables()


@pytest.fixture
def uow(tables: MemoryTables) -> MemoryUnitOfWorkFactory:
    return MemoryUnitOfWorkFactory(tables)


@pytest.fixture
def mm() -> FakeMM:
    return FakeMM()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()
