"""The state unit of work on SQLAlchemy: one session, one transaction, the repositories over it.

It implements `erpsync.service.ports.UnitOfWork` (structurally: adapters never import the
service layer). Entered with a fence, the fencing token is checked first, inside the
transaction, so a claim commits under the term it checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from erpsync.adapters.state.actions import SqlActions
from erpsync.adapters.state.audit import SqlAudit
from erpsync.adapters.state.bindings import SqlBindings
from erpsync.adapters.state.counts import SqlCounts
from erpsync.adapters.state.machines import SqlMachines
from erpsync.adapters.state.purge import SqlHistory
from erpsync.adapters.state.quarantine_admin import SqlQuarantineAdmin
from erpsync.adapters.state.quarantine_repo import SqlQuarantine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import Cycle, SourceCheckpoint
from erpsync.domain.columns import MESSAGE_MAX_BYTES, fit_bytes, fit_id, fit_optional_bytes
from erpsync.domain.lifecycle import SOURCE_MAX


class _Fence(Protocol):
    def check(self, transaction: Any) -> None: ...


class SqlCycles:
    def __init__(self, session: Session) -> None:
        self.session = session

    def start(self, kind: str, *, correlation_id: str, trigger: str | None, started_at: datetime) -> int:
        row = Cycle(correlation_id=correlation_id, kind=kind, triggered_by=trigger, started_at=started_at)
        self.session.add(row)
        self.session.flush()
        return row.id

    def finish(
        self, cycle_id: int, *, finished_at: datetime, outcome: str, summary: str, error: str | None
    ) -> None:
        self.session.execute(
            update(Cycle)
            .where(Cycle.id == cycle_id)
            .values(
                finished_at=finished_at,
                outcome=outcome,
                summary=fit_bytes(summary),
                error_message=fit_optional_bytes(error, MESSAGE_MAX_BYTES),
            )
        )


class SqlCheckpoints:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _row(self, source: str, stream: str) -> SourceCheckpoint | None:
        source, stream = fit_id(source, SOURCE_MAX), fit_id(stream, 255)
        query = select(SourceCheckpoint).where(
            SourceCheckpoint.source == source, SourceCheckpoint.stream == stream
        )
        return self.session.scalars(query).first()

    def digest(self, source: str, stream: str) -> str | None:
        row = self._row(source, stream)
        return row.file_sha256 if row is not None else None

    def remember_digest(self, source: str, stream: str, digest: str, rows: int) -> None:
        row = self._row(source, stream)
        if row is None:
            self.session.add(
                SourceCheckpoint(
                    source=fit_id(source, SOURCE_MAX),
                    stream=fit_id(stream, 255),
                    file_sha256=digest,
                    rows_read=rows,
                )
            )
        else:
            row.file_sha256 = digest
            row.rows_read = rows


class SqlUnitOfWork:
    """The repositories over one session (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.actions = SqlActions(session)
        self.bindings = SqlBindings(session)
        self.quarantine = SqlQuarantine(session)
        self.audit = SqlAudit(session)
        self.machines = SqlMachines(session)
        self.cycles = SqlCycles(session)
        self.checkpoints = SqlCheckpoints(session)
        self.counts = SqlCounts(session)
        self.quarantine_admin = SqlQuarantineAdmin(session)
        self.history = SqlHistory(session)


class SqlUnitOfWorkFactory:
    """`erpsync.service.ports.UnitOfWorkFactory` on a `StateStore`."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    @contextmanager
    def __call__(self, fence: _Fence | None = None) -> Iterator[SqlUnitOfWork]:
        with self.store.session() as session:
            if fence is not None:
                fence.check(session)
            yield SqlUnitOfWork(session)
