"""Session-function shim over the state repositories, for erpsync/service/* until it uses the UnitOfWork.

Temporary (issue #14): the repositories live in actions.py, bindings.py, quarantine_repo.py,
machines.py and audit.py; the integrator deletes this module once the service layer no longer
imports it. Nothing else may import it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from erpsync.adapters.state.actions import SqlActions
from erpsync.adapters.state.audit import SqlAudit
from erpsync.adapters.state.bindings import SqlBindings
from erpsync.adapters.state.machines import SqlMachines
from erpsync.adapters.state.quarantine_repo import SqlQuarantine
from erpsync.domain.lifecycle import Intent, JournaledAction, Outcome
from erpsync.domain.model import BadRecord
from erpsync.domain.reconcile import BoundRun


def load_bindings(session: Session, source: str) -> dict[str, BoundRun]:
    return SqlBindings(session).all_runs(source)


def load_open_bindings(session: Session, source: str) -> dict[str, BoundRun]:
    return SqlBindings(session).open_runs(source)


def load_bindings_by_key(session: Session, source: str, run_keys: Collection[str]) -> dict[str, BoundRun]:
    return SqlBindings(session).by_keys(source, run_keys)


def lock_bindings(session: Session, mm_run_ids: Collection[str]) -> None:
    SqlBindings(session).lock(mm_run_ids)


def flags_audited(session: Session, flags: Collection[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    return SqlAudit(session).flags_audited(flags)


def existing_keys(session: Session, keys: Collection[str]) -> set[str]:
    return SqlActions(session).existing_keys(keys)


def record_intents(
    session: Session,
    intents: Sequence[Intent],
    *,
    fencing_token: int | None,
    correlation_id: str | None,
    trigger: str | None,
    claim_until: datetime,
) -> list[JournaledAction]:
    return SqlActions(session).record(
        intents,
        fencing_token=fencing_token,
        correlation_id=correlation_id,
        trigger=trigger,
        claim_until=claim_until,
    )


def due_entries(session: Session, now: datetime, limit: int = 10_000) -> list[JournaledAction]:
    return SqlActions(session).due(now, limit)


def claim(
    session: Session, entry: JournaledAction, now: datetime, claim_until: datetime
) -> JournaledAction | None:
    return SqlActions(session).claim(entry, now, claim_until)


def settle(session: Session, outcomes: Iterable[Outcome], *, fencing_token: int | None) -> list[Outcome]:
    return SqlActions(session).settle(outcomes, fencing_token=fencing_token)


def upsert_quarantine(
    session: Session, record: BadRecord, now: datetime, action_id: int | None = None
) -> bool:
    return SqlQuarantine(session).upsert(record, now, action_id)


def resolve_retried_quarantine(session: Session, source: str, still_bad: Collection[tuple[str, str]]) -> int:
    return SqlQuarantine(session).resolve_retried(source, still_bad)


def note_machines(session: Session, machines: Mapping[str, tuple[str | None, int]], now: datetime) -> None:
    SqlMachines(session).note(machines, now)


def rejected_machines(session: Session) -> set[str]:
    return SqlMachines(session).rejected()
