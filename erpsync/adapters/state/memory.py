"""The state unit of work in memory: the fake of adapters/state/uow.py, for fast service tests.

A unit of work holds `MemoryTables.lock` from start to end (SQLite's one writer), checks the
fence before anything else, and restores the snapshot it started from when its block raises, so
a failed unit of work leaves nothing behind, as a rolled-back transaction does. The repositories
mirror their SQL twins (tests/contract/test_state_repositories.py runs the same scenarios on both).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from erpsync.adapters.state.memory_counts import MemoryCounts
from erpsync.adapters.state.memory_journal import MemoryActions, MemoryBindings
from erpsync.adapters.state.memory_records import MemoryAudit, MemoryMachines, MemoryQuarantine
from erpsync.adapters.state.memory_tables import MemoryTables, new_row
from erpsync.adapters.state.tables import Cycle, SourceCheckpoint, utcnow
from erpsync.domain.errors import FencedError


class _Fence(Protocol):
    def check(self, transaction: Any) -> None: ...


class MemoryFence:
    """A fence on `MemoryTables.lease_token`: current while the tables' token is this one's."""

    def __init__(self, tables: MemoryTables, token: int | None) -> None:
        self.tables = tables
        self._token = token

    @property
    def token(self) -> int | None:
        return self._token

    def is_current(self) -> bool:
        return self._token is not None and self.tables.lease_token == self._token

    def check(self, transaction: Any) -> None:
        if not self.is_current():
            raise FencedError(
                f"fencing token {self._token} is stale: the lease is at token {self.tables.lease_token}; "
                "another instance leads now"
            )


class MemoryCycles:
    """`CycleRepository` over `MemoryTables.cycles`."""

    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def start(self, kind: str, *, correlation_id: str, trigger: str | None, started_at: datetime) -> int:
        values = {
            "correlation_id": correlation_id,
            "kind": kind,
            "triggered_by": trigger,
            "started_at": started_at,
        }
        row = new_row(Cycle, {**values, "id": self.tables.next_id()})
        self.tables.cycles[row["id"]] = row
        return int(row["id"])

    def finish(
        self, cycle_id: int, *, finished_at: datetime, outcome: str, summary: str, error: str | None
    ) -> None:
        row = self.tables.cycles.get(cycle_id)
        if row is not None:
            row.update(finished_at=finished_at, outcome=outcome, summary=summary, error_message=error)


class MemoryCheckpoints:
    """`CheckpointRepository` over `MemoryTables.checkpoints` (by source and stream)."""

    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables

    def digest(self, source: str, stream: str) -> str | None:
        row = self.tables.checkpoints.get((source, stream))
        return row["file_sha256"] if row is not None else None

    def remember_digest(self, source: str, stream: str, digest: str, rows: int) -> None:
        row = self.tables.checkpoints.get((source, stream))
        values = {"file_sha256": digest, "rows_read": rows}
        if row is None:
            values.update(id=self.tables.next_id(), source=source, stream=stream)
            self.tables.checkpoints[(source, stream)] = new_row(SourceCheckpoint, values)
        elif any(row[name] != value for name, value in values.items()):
            row.update(values, updated_at=utcnow())  # the column's onupdate: only when a value changed


class MemoryUnitOfWork:
    """The repositories over the tables (see the module docstring)."""

    def __init__(self, tables: MemoryTables) -> None:
        self.tables = tables
        self.actions = MemoryActions(tables)
        self.bindings = MemoryBindings(tables)
        self.quarantine = MemoryQuarantine(tables)
        self.audit = MemoryAudit(tables)
        self.machines = MemoryMachines(tables)
        self.cycles = MemoryCycles(tables)
        self.checkpoints = MemoryCheckpoints(tables)
        self.counts = MemoryCounts(tables)


class MemoryUnitOfWorkFactory:
    """`erpsync.service.ports.UnitOfWorkFactory` on `MemoryTables` (fresh ones unless given)."""

    def __init__(self, tables: MemoryTables | None = None) -> None:
        self.tables = tables if tables is not None else MemoryTables()

    @contextmanager
    def __call__(self, fence: _Fence | None = None) -> Iterator[MemoryUnitOfWork]:
        with self.tables.lock:
            snapshot = self.tables.snapshot()
            try:
                uow = MemoryUnitOfWork(self.tables)
                if fence is not None:
                    fence.check(uow)
                yield uow
            except BaseException:
                self.tables.restore(snapshot)
                raise
