"""The state unit of work on SQLAlchemy: one session, one transaction, the repositories over it.

It implements `erpsync.service.ports.UnitOfWork` (structurally: adapters never import the
service layer). Entered with a fence, the fencing token is checked first, inside the
transaction, so a claim commits under the term it checked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from erpsync.adapters.state import journal
from erpsync.adapters.state.audit import record_audit
from erpsync.adapters.state.counts import SqlCounts
from erpsync.adapters.state.purge import SqlHistory
from erpsync.adapters.state.quarantine_admin import SqlQuarantineAdmin
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import (
    Cycle,
    QuarantineEntry,
    RunBinding,
    SourceCheckpoint,
    SyncAction,
    utcnow,
)
from erpsync.domain.lifecycle import BindingStatus, BoundRun, JournaledAction, Outcome
from erpsync.domain.model import BadRecord


class _Fence(Protocol):
    def check(self, transaction: Any) -> None: ...


class SqlActions:
    def __init__(self, session: Session) -> None:
        self.session = session

    def existing_keys(self, keys: Collection[str]) -> set[str]:
        return journal.existing_keys(self.session, keys)

    def record(
        self,
        intents: Sequence[Any],
        *,
        fencing_token: int | None,
        correlation_id: str | None,
        trigger: str | None,
        claim_until: datetime,
    ) -> list[JournaledAction]:
        return journal.record_intents(
            self.session,
            intents,
            fencing_token=fencing_token,
            correlation_id=correlation_id,
            trigger=trigger,
            claim_until=claim_until,
        )

    def due(self, now: datetime, limit: int = 10_000) -> list[JournaledAction]:
        return journal.due_entries(self.session, now, limit)

    def claim(self, action: JournaledAction, now: datetime, claim_until: datetime) -> JournaledAction | None:
        return journal.claim(self.session, action, now, claim_until)

    def settle(self, outcomes: Sequence[Outcome], *, fencing_token: int | None) -> list[Outcome]:
        return journal.settle(self.session, outcomes, fencing_token=fencing_token)

    def release(self, action_ids: Collection[int]) -> None:
        if action_ids:
            self.session.execute(
                update(SyncAction)
                .where(SyncAction.id.in_(sorted(action_ids)), SyncAction.status == "pending")
                .values(next_attempt_at=None)
                .execution_options(synchronize_session=False)
            )


class SqlBindings:
    def __init__(self, session: Session) -> None:
        self.session = session

    def open_runs(self, source: str) -> dict[str, BoundRun]:
        return journal.load_open_bindings(self.session, source)

    def by_keys(self, source: str, run_keys: Collection[str]) -> dict[str, BoundRun]:
        return journal.load_bindings_by_key(self.session, source, run_keys)

    def all_runs(self, source: str) -> dict[str, BoundRun]:
        return journal.load_bindings(self.session, source)

    def exists(self, mm_run_id: str) -> bool:
        return self.session.scalar(select(RunBinding.id).where(RunBinding.mm_run_id == mm_run_id)) is not None

    def lock(self, mm_run_ids: Collection[str]) -> None:
        journal.lock_bindings(self.session, mm_run_ids)

    def remember_flag(
        self,
        mm_run_id: str,
        *,
        status: BindingStatus | None = None,
        payload_hash: str | None = None,
        generation: str | None = None,
    ) -> None:
        values: dict[str, Any] = {}
        if status:
            values["status"] = str(status)
        if payload_hash:
            values["payload_hash"] = payload_hash
        if generation:
            values["key_generation"] = generation
        if values:
            self.session.execute(
                update(RunBinding)
                .where(RunBinding.mm_run_id == mm_run_id)
                .values(**values, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )


class SqlQuarantine:
    def __init__(self, session: Session) -> None:
        self.session = session

    def upsert(self, record: BadRecord, now: datetime, action_id: int | None = None) -> bool:
        return journal.upsert_quarantine(self.session, record, now, action_id)

    def resolve_retried(self, source: str, still_bad: Collection[tuple[str, str]]) -> int:
        return journal.resolve_retried_quarantine(self.session, source, still_bad)

    def open_count(self) -> int:
        self.session.flush()
        query = select(func.count()).select_from(QuarantineEntry).where(QuarantineEntry.status == "open")
        return int(self.session.scalar(query) or 0)


class SqlAudit:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(self, entry: Any) -> None:
        record_audit(
            self.session,
            action=entry.action,
            outcome=entry.outcome,
            source=entry.source,
            erp_job=entry.erp_job,
            erp_operation=entry.erp_operation,
            erp_machine=entry.erp_machine,
            mm_run_id=entry.mm_run_id,
            action_id=entry.action_id,
            fencing_token=entry.fencing_token,
            http_status=entry.http_status,
            error=entry.error,
            error_class=entry.error_class,
            before=entry.before,
            after=entry.after,
            detail=entry.detail,
        )

    def flags_audited(self, flags: Collection[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        return journal.flags_audited(self.session, flags)


class SqlMachines:
    def __init__(self, session: Session) -> None:
        self.session = session

    def note(self, machines: Mapping[str, tuple[str | None, int]], now: datetime) -> None:
        journal.note_machines(self.session, dict(machines), now)

    def rejected(self) -> set[str]:
        return journal.rejected_machines(self.session)


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
            .values(finished_at=finished_at, outcome=outcome, summary=summary, error_message=error)
        )


class SqlCheckpoints:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _row(self, source: str, stream: str) -> SourceCheckpoint | None:
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
                SourceCheckpoint(source=source, stream=stream, file_sha256=digest, rows_read=rows)
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
