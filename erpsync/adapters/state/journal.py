"""The action journal and run bindings: intent before an MM call, outcome after it.

Why this shape (architecture-notes §3): an intent row is committed before the call, carrying the
exact request body, so after a crash the action can be settled by *reading MM first* and re-sent
only if MM does not have it, without re-reading the ERP. `next_attempt_at` doubles as a claim:
whoever sets it into the future owns the action until then, so a crashed dispatcher's actions
become due again by themselves and two dispatchers never send the same action at once.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from erpsync.adapters.state.audit import audit_values
from erpsync.adapters.state.tables import (
    AuditEntry,
    MachineSeen,
    QuarantineEntry,
    RunBinding,
    SyncAction,
    utcnow,
)
from erpsync.domain.lifecycle import (
    DUE_ACTION_STATUSES,
    REASON_MAX,
    RECONCILE_BINDING_STATUSES,
    ActionKind,
    BindingStatus,
    BoundRun,
    Intent,
    JournaledAction,
    Outcome,
    RunRef,
)
from erpsync.domain.model import BadRecord
from erpsync.observability.scrub import scrub

# `erpsync machines` shows when a resource was last seen to this precision (see note_machines)
MACHINE_SEEN_RESOLUTION = timedelta(minutes=10)
CHUNK = 500
_DUE = sorted(DUE_ACTION_STATUSES)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _entry(row: SyncAction) -> JournaledAction:
    ref = None
    if row.mm_run_id:
        ref = RunRef(
            source=row.source or "",
            run_key=row.run_key or "",
            mm_run_id=row.mm_run_id,
            job=row.erp_job or "",
            operation=row.erp_operation or "",
            machine=row.erp_machine or "",
        )
    return JournaledAction(
        id=row.id,
        idempotency_key=row.idempotency_key,
        kind=ActionKind(row.kind),
        source=row.source,
        ref=ref,
        reason=row.reason or "",
        payload=json.loads(row.payload) if row.payload else {},
        attempts=row.attempts,
        fencing_token=row.fencing_token,
    )


def _audit_keys(action: JournaledAction) -> dict[str, Any]:
    """The plain audit columns that locate an action."""
    ref = action.ref
    return {
        "source": action.source,
        "erp_job": ref.job if ref else None,
        "erp_operation": ref.operation if ref else None,
        "erp_machine": ref.machine if ref else None,
        "mm_run_id": ref.mm_run_id if ref else None,
        "action_id": action.id,
    }


# Bindings a sync cycle always needs: runs MM may still have open (live, stop in flight, vanished).
# Finished bindings (stopped, failed) are read only for run keys the ERP snapshot holds.

_BOUND_COLUMNS = (
    RunBinding.run_key,
    RunBinding.mm_run_id,
    RunBinding.erp_machine,
    RunBinding.mm_machine_id,
    RunBinding.status,
    RunBinding.in_setup,
    RunBinding.payload_hash,
    RunBinding.erp_start_at,
    RunBinding.erp_end_at,
    RunBinding.erp_job,
    RunBinding.erp_operation,
    RunBinding.key_generation,
)


def load_bindings(session: Session, source: str) -> dict[str, BoundRun]:
    """Every binding of `source`, keyed by run key (resync: an explicit, whole-history request)."""
    return _bound_runs(session.execute(select(*_BOUND_COLUMNS).where(RunBinding.source == source)))


def load_open_bindings(session: Session, source: str) -> dict[str, BoundRun]:
    """The bindings of runs MM may still have open, through the (source, status) index.

    What a sync cycle always needs: the vanished scan and one-run-per-machine look at these only.
    Finished bindings stay out, so the cost does not grow with history (`load_bindings_by_key`).
    """
    query = select(*_BOUND_COLUMNS).where(
        RunBinding.source == source, RunBinding.status.in_(sorted(RECONCILE_BINDING_STATUSES))
    )
    return _bound_runs(session.execute(query))


def load_bindings_by_key(session: Session, source: str, run_keys: Collection[str]) -> dict[str, BoundRun]:
    """The bindings of these run keys (any status), through the (source, run_key) unique index.

    A run the ERP still reports whose binding is finished must be recognised, never started twice.
    """
    found: dict[str, BoundRun] = {}
    for chunk in _chunks(sorted(run_keys)):
        query = select(*_BOUND_COLUMNS).where(RunBinding.source == source, RunBinding.run_key.in_(chunk))
        found.update(_bound_runs(session.execute(query)))
    return found


def _bound_runs(result: Iterable[Any]) -> dict[str, BoundRun]:
    # positional unpacking: a no-change cycle loads every open binding, ~25% faster than Row attributes
    return {
        run_key: BoundRun(
            run_key=run_key,
            mm_run_id=mm_run_id,
            erp_machine=erp_machine,
            mm_machine_id=mm_machine_id,
            status=BindingStatus(status),
            in_setup=bool(in_setup),
            payload_hash=payload_hash,
            erp_start_at=erp_start_at,
            erp_end_at=erp_end_at,
            job=job,
            operation=operation,
            generation=generation or "",
        )
        for (
            run_key,
            mm_run_id,
            erp_machine,
            mm_machine_id,
            status,
            in_setup,
            payload_hash,
            erp_start_at,
            erp_end_at,
            job,
            operation,
            generation,
        ) in result
    }


def lock_bindings(session: Session, mm_run_ids: Collection[str]) -> None:
    """Lock these bindings now, in mm_run_id order, before a transaction updates them in steps.

    Every flow that updates several bindings in one transaction takes their row locks in the same
    order (mm_run_id), so two of them (a sync settling outcomes, a write-back committing counts)
    can wait for each other but never deadlock. A transaction that updates bindings in more than
    one statement calls this first; its later statements then find the rows already locked.
    SQLite has no row locks (one writer at a time): nothing is sent there.
    """
    if not mm_run_ids or session.get_bind().dialect.name == "sqlite":
        return
    for chunk in _chunks(sorted(set(mm_run_ids))):
        session.execute(
            select(RunBinding.id)
            .where(RunBinding.mm_run_id.in_(chunk))
            .order_by(RunBinding.mm_run_id)
            .with_for_update()
        ).all()


def flags_audited(session: Session, flags: Collection[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """(kind, mm_run_id, detail) of the audit rows already written for these (kind, job, run) flags.

    A flag that changes no binding (a run not started because another one holds its machine, a
    run moved back to setup) would otherwise be audited again every cycle while the ERP keeps it
    so; the (erp_job, occurred_at) index finds the earlier rows.
    """
    found: set[tuple[str, str, str]] = set()
    if not flags:
        return found
    kinds = sorted({kind for kind, _, _ in flags})
    wanted = sorted({(job, run) for _, job, run in flags})
    for chunk in _chunks(wanted):
        query = select(AuditEntry.action, AuditEntry.mm_run_id, AuditEntry.detail).where(
            AuditEntry.erp_job.in_(sorted({job for job, _ in chunk})),
            AuditEntry.mm_run_id.in_(sorted({run for _, run in chunk})),
            AuditEntry.action.in_(kinds),
        )
        found.update((action, run or "", detail or "") for action, run, detail in session.execute(query))
    return found


def existing_keys(session: Session, keys: Collection[str]) -> set[str]:
    """Which of these idempotency keys the journal already holds (any status)."""
    found: set[str] = set()
    ordered = sorted(keys)
    for chunk in _chunks(ordered):
        found.update(
            session.scalars(select(SyncAction.idempotency_key).where(SyncAction.idempotency_key.in_(chunk)))
        )
    return found


def record_intents(
    session: Session,
    intents: Sequence[Intent],
    *,
    fencing_token: int | None,
    correlation_id: str | None,
    trigger: str | None,
    claim_until: datetime,
) -> list[JournaledAction]:
    """Journal the intents (claimed until `claim_until`) and the binding rows they imply."""
    if not intents:
        return []
    now = utcnow()
    rows = [
        {
            "idempotency_key": i.idempotency_key,
            "kind": str(i.kind),
            "status": "pending",
            "source": i.source,
            "run_key": i.ref.run_key if i.ref else None,
            "mm_run_id": i.ref.mm_run_id if i.ref else None,
            "erp_job": i.ref.job if i.ref else None,
            "erp_operation": i.ref.operation if i.ref else None,
            "erp_machine": i.ref.machine if i.ref else None,
            "reason": i.reason[:REASON_MAX],
            "payload": json.dumps(i.payload, sort_keys=True, default=str),
            "attempts": 1,
            "next_attempt_at": claim_until,
            "last_attempt_at": now,
            "fencing_token": fencing_token,
            "correlation_id": correlation_id,
            "triggered_by": trigger,
            "created_at": now,
        }
        for i in intents
    ]
    for chunk in _chunks(rows):
        session.execute(insert(SyncAction), list(chunk))
    new_bindings = [{**i.new_binding, "created_at": now, "updated_at": now} for i in intents if i.new_binding]
    for chunk in _chunks(new_bindings):
        session.execute(insert(RunBinding), list(chunk))
    for intent in sorted(intents, key=lambda i: i.mm_run_id or ""):  # lock order: see `settle`
        if intent.new_binding or not intent.mm_run_id:
            continue
        values: dict[str, Any] = dict(intent.binding_values or {})
        if intent.binding_status:
            values["status"] = str(intent.binding_status)
        if intent.generation:
            values["key_generation"] = intent.generation
        if values:
            session.execute(
                update(RunBinding)
                .where(RunBinding.mm_run_id == intent.mm_run_id)
                .values(**values, updated_at=now, version=RunBinding.version + 1)
                .execution_options(synchronize_session=False)
            )
    keys = [i.idempotency_key for i in intents]
    by_key: dict[str, JournaledAction] = {}
    for chunk in _chunks(keys):
        for row in session.scalars(select(SyncAction).where(SyncAction.idempotency_key.in_(chunk))):
            by_key[row.idempotency_key] = _entry(row)
    return [by_key[k] for k in keys]


def due_entries(session: Session, now: datetime, limit: int = 10_000) -> list[JournaledAction]:
    """Pending or retryable actions whose claim/backoff has run out: in doubt or due for retry."""
    query = (
        select(SyncAction)
        .where(
            SyncAction.status.in_(_DUE),
            or_(SyncAction.next_attempt_at.is_(None), SyncAction.next_attempt_at <= now),
        )
        .order_by(SyncAction.id)
        .limit(limit)
    )
    return [_entry(row) for row in session.scalars(query)]


def claim(
    session: Session, entry: JournaledAction, now: datetime, claim_until: datetime
) -> JournaledAction | None:
    """Take an in-doubt/retryable action for one attempt; None when someone else holds it."""
    result = session.execute(
        update(SyncAction)
        .where(
            SyncAction.id == entry.id,
            SyncAction.status.in_(_DUE),
            or_(SyncAction.next_attempt_at.is_(None), SyncAction.next_attempt_at <= now),
        )
        .values(attempts=SyncAction.attempts + 1, last_attempt_at=now, next_attempt_at=claim_until)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return None
    return replace(entry, attempts=entry.attempts + 1)


def settle(session: Session, outcomes: Iterable[Outcome], *, fencing_token: int | None) -> list[Outcome]:
    """Write each outcome: journal status, binding, audit row, quarantine and machine rejections.

    An outcome is written only while its action is still due (pending or retryable): when two
    settlers raced for one action (a leader term that ended with calls in flight and the next
    term's recovery, or a paused former leader and its successor), the first settlement stands
    and the later outcome is dropped, so every action keeps exactly one final outcome and audit
    row. Returns the outcomes written.

    Each journal row is updated on its own (its row count says whether the action was still due);
    the binding updates and audit rows then go out as one executemany each, not as ORM objects per
    outcome: a dispatch round settles thousands of outcomes on the thread that also feeds the
    senders (bench/campaign.py).
    """
    now = utcnow()
    connection = session.connection()
    written = [
        o for o in outcomes if _rowcount(connection.execute(_SETTLE_ACTION, _action_values(o, now))) == 1
    ]
    if not written:
        return written
    # rows locked in mm_run_id order, as every flow that updates several bindings does: a sync
    # settling outcomes and a write-back recording counts never wait for each other in a cycle
    bindings = sorted((values for o in written if (values := _binding_values(o))), key=_by_run_id)
    if bindings:
        session.execute(_SETTLE_BINDING, [{**values, "b_now": now} for values in bindings])
    audits = []
    for outcome in written:
        entry = outcome.action
        if outcome.rejected_machine:
            reject_machine(session, outcome.rejected_machine, outcome.error_message or "refused by MM", now)
        if outcome.quarantine:
            quarantine_action(session, outcome, now)
        audits.append(
            audit_values(
                action=entry.kind,
                outcome=outcome.audit,
                fencing_token=fencing_token,
                http_status=outcome.http_status,
                error=outcome.error_message,
                error_class=outcome.error_class,
                after=outcome.after,
                detail=outcome.detail or entry.reason,
                **_audit_keys(entry),
            )
        )
    session.execute(insert(AuditEntry), audits)
    return written


def _by_run_id(values: dict[str, Any]) -> str:
    return str(values["b_run_id"])


def _rowcount(result: Any) -> int:
    return cast("CursorResult[Any]", result).rowcount


_ACTION_TABLE, _BINDING_TABLE = cast(Table, SyncAction.__table__), cast(Table, RunBinding.__table__)
_actions, _bindings = _ACTION_TABLE.c, _BINDING_TABLE.c
_SETTLE_ACTION = (
    update(_ACTION_TABLE)
    .where(_actions.id == bindparam("a_id"), _actions.status.in_(_DUE))
    .values(
        status=bindparam("a_status"),
        http_status=bindparam("a_http_status"),
        error_class=bindparam("a_error_class"),
        error_message=bindparam("a_error_message"),
        next_attempt_at=bindparam("a_next_attempt_at"),
        settled_at=bindparam("a_settled_at"),
    )
)
# NULL parameters keep the column: an outcome only sets the binding fields it knows.
_SETTLE_BINDING = (
    update(_BINDING_TABLE)
    .where(_bindings.mm_run_id == bindparam("b_run_id"))
    .values(
        status=func.coalesce(bindparam("b_status", type_=_bindings.status.type), _bindings.status),
        mm_start_at=func.coalesce(
            bindparam("b_mm_start_at", type_=_bindings.mm_start_at.type), _bindings.mm_start_at
        ),
        mm_end_at=func.coalesce(
            bindparam("b_mm_end_at", type_=_bindings.mm_end_at.type), _bindings.mm_end_at
        ),
        in_setup=func.coalesce(bindparam("b_in_setup", type_=_bindings.in_setup.type), _bindings.in_setup),
        updated_at=bindparam("b_now", type_=_bindings.updated_at.type),
        version=_bindings.version + 1,
    )
)


def _action_values(outcome: Outcome, now: datetime) -> dict[str, Any]:
    final = outcome.final
    return {
        "a_id": outcome.action.id,
        "a_status": outcome.status,
        "a_http_status": outcome.http_status,
        "a_error_class": outcome.error_class,
        "a_error_message": scrub(outcome.error_message) if outcome.error_message else None,
        "a_next_attempt_at": outcome.next_attempt_at,
        "a_settled_at": now if final else None,
    }


def _binding_values(outcome: Outcome) -> dict[str, Any] | None:
    """The binding change an outcome implies, or None when it changes nothing."""
    values = {
        "b_status": outcome.binding_status or None,
        "b_mm_start_at": outcome.mm_start_at,
        "b_mm_end_at": outcome.mm_end_at,
        "b_in_setup": outcome.in_setup,
    }
    if not outcome.action.mm_run_id or all(v is None for v in values.values()):
        return None
    return {**values, "b_run_id": outcome.action.mm_run_id}


def quarantine_action(session: Session, outcome: Outcome, now: datetime) -> None:
    entry = outcome.action
    upsert_quarantine(
        session,
        BadRecord(
            source=entry.source or "mm",
            record_key=entry.mm_run_id or entry.idempotency_key,
            reason=outcome.error_message or "refused by MachineMetrics",
            error_class=f"mm_{entry.kind}",
            raw=entry.payload,
        ),
        now,
        action_id=entry.id,
    )


def upsert_quarantine(
    session: Session, record: BadRecord, now: datetime, action_id: int | None = None
) -> bool:
    """Quarantine a bad record; a record seen again bumps attempts instead of a new row.

    Returns True when the entry is new (or re-opened), so callers audit it once, not every cycle.
    """
    record_key = record.record_key[:255]
    existing = session.scalars(
        select(QuarantineEntry).where(
            QuarantineEntry.source == record.source,
            QuarantineEntry.record_key == record_key,
            QuarantineEntry.error_class == record.error_class,
        )
    ).first()
    raw = (
        record.raw
        if isinstance(record.raw, str) or record.raw is None
        else json.dumps(record.raw, default=str)
    )
    raw = scrub(raw) if raw else raw
    if existing is None:
        session.add(
            QuarantineEntry(
                source=record.source,
                record_key=record_key,
                file_name=record.file,
                line_number=record.line,
                field=record.field,
                raw_payload=raw,
                error_class=record.error_class,
                message=scrub(record.reason),
                action_id=action_id,
                first_seen_at=now,
                last_seen_at=now,
                attempts=1,
                status="open",
            )
        )
        return True
    reopened = existing.status != "open"
    existing.last_seen_at = now
    existing.attempts += 1
    existing.message = scrub(record.reason)
    existing.line_number = record.line
    existing.raw_payload = raw
    if existing.status != "discarded":
        existing.status = "open"
    return reopened and existing.status == "open"


def resolve_retried_quarantine(session: Session, source: str, still_bad: Collection[tuple[str, str]]) -> int:
    """ERP rows a person marked for retry that the full read did not find bad again are resolved.

    Only entries about source rows: refused MM actions (they have an action id) and write-back
    conflicts are settled by their own flows.
    """
    resolved = 0
    for entry in session.scalars(
        select(QuarantineEntry).where(
            QuarantineEntry.source == source,
            QuarantineEntry.status == "retry",
            QuarantineEntry.action_id.is_(None),
            QuarantineEntry.error_class.not_like("writeback%"),
        )
    ):
        if (entry.record_key, entry.error_class) not in still_bad:
            entry.status = "resolved"
            resolved += 1
    return resolved


def note_machines(session: Session, machines: dict[str, tuple[str | None, int]], now: datetime) -> None:
    """Remember every ERP resource seen, its MM machine id and how many runs used it.

    MM's refusal (`rejected_at`) belongs to the MM machine id: when the mapping sends a resource to
    another id, the refusal is cleared (the new id has not been refused).

    `last_seen_at` is refreshed at most every `MACHINE_SEEN_RESOLUTION` for a machine whose mapping
    and run count did not change: at 100,000 machines, rewriting every row each cycle cost more
    than the rest of a no-change cycle's state work (bench/). Core statements, not ORM objects.
    """
    if not machines:
        return
    wanted = {erp_machine[:64]: seen for erp_machine, seen in machines.items()}
    table = _MACHINE_TABLE.c
    known: dict[str, tuple[str | None, int, datetime]] = {
        erp_machine: (mm_machine_id, runs_seen, last_seen_at)
        for erp_machine, mm_machine_id, runs_seen, last_seen_at in session.execute(
            select(table.erp_machine, table.mm_machine_id, table.runs_seen, table.last_seen_at)
        )
    }
    stale = now - MACHINE_SEEN_RESOLUTION
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    seen_again: list[str] = []
    remapped: list[str] = []
    for machine, (mm_machine_id, runs) in wanted.items():
        found = known.get(machine)
        if found is None:
            new.append(
                {
                    "erp_machine": machine,
                    "mm_machine_id": mm_machine_id,
                    "first_seen_at": now,
                    "last_seen_at": now,
                    "runs_seen": runs,
                }
            )
        elif found[:2] != (mm_machine_id, runs):
            changed.append({"m_machine": machine, "m_mm": mm_machine_id, "m_runs": runs})
            if found[0] != mm_machine_id:
                remapped.append(machine)
        elif found[2] <= stale:
            seen_again.append(machine)
    for chunk in _chunks(new):
        session.execute(insert(_MACHINE_TABLE), list(chunk))
    if changed:
        session.execute(
            update(_MACHINE_TABLE)
            .where(table.erp_machine == bindparam("m_machine"))
            .values(mm_machine_id=bindparam("m_mm"), runs_seen=bindparam("m_runs"), last_seen_at=now),
            changed,
        )
        # MM's refusal was of the old MM id: a resource mapped to another id is asked about again
        for chunk in _chunks(sorted(remapped)):
            session.execute(
                update(_MACHINE_TABLE)
                .where(table.erp_machine.in_(chunk), table.rejected_at.is_not(None))
                .values(rejected_at=None, reject_reason=None)
            )
    for chunk in _chunks(sorted(seen_again)):
        session.execute(update(_MACHINE_TABLE).where(table.erp_machine.in_(chunk)).values(last_seen_at=now))


_MACHINE_TABLE = cast(Table, MachineSeen.__table__)


def reject_machine(session: Session, mm_machine_id: str, reason: str, now: datetime) -> None:
    """MM refused this machine id: remember it so runs on it are quarantined, not re-sent."""
    session.execute(
        update(MachineSeen)
        .where(MachineSeen.mm_machine_id == mm_machine_id)
        .values(rejected_at=now, reject_reason=scrub(reason)[:2000])
        .execution_options(synchronize_session=False)
    )


def rejected_machines(session: Session) -> set[str]:
    rows = session.scalars(
        select(MachineSeen.mm_machine_id).where(
            and_(MachineSeen.rejected_at.is_not(None), MachineSeen.mm_machine_id.is_not(None))
        )
    )
    return {machine for machine in rows if machine}
