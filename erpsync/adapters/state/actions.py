"""The action journal (``erpsync_action``): intent before an MM call, outcome after it.

Why this shape (docs/architecture.md, "Exactly once, across crashes"): an intent row is committed
before the call, carrying the exact request body, so after a crash the action can be settled by
*reading MM first* and re-sent only if MM does not have it, without re-reading the ERP.
`next_attempt_at` doubles as a claim: whoever sets it into the future owns the action until then,
so a crashed dispatcher's actions become due again by themselves and two dispatchers never send
the same action at once.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from erpsync.adapters.state.bindings import SqlBindings
from erpsync.adapters.state.machines import SqlMachines
from erpsync.adapters.state.quarantine_repo import SqlQuarantine
from erpsync.adapters.state.rows import (
    action_values,
    binding_values,
    by_run_id,
    chunks,
    intent_row,
    journaled_action,
    latest_bodies,
    refused_record,
    settle_audit,
    with_origins,
)
from erpsync.adapters.state.tables import AuditEntry, SyncAction, utcnow
from erpsync.domain.lifecycle import (
    DUE_ACTION_STATUSES,
    ActionKind,
    Intent,
    JournaledAction,
    JournalStamp,
    Outcome,
)

_DUE = sorted(DUE_ACTION_STATUSES)
_TABLE = cast(Table, SyncAction.__table__)
_c = _TABLE.c
# ORM attributes, not table columns: the session flushes pending rows before such a statement
_ROW = tuple(getattr(SyncAction, column.key) for column in _c)
_SETTLE_ACTION = (
    update(_TABLE)
    .where(_c.id == bindparam("a_id"), _c.status.in_(_DUE))
    .values(
        status=bindparam("a_status"),
        http_status=bindparam("a_http_status"),
        error_class=bindparam("a_error_class"),
        error_message=bindparam("a_error_message"),
        next_attempt_at=bindparam("a_next_attempt_at"),
        settled_at=bindparam("a_settled_at"),
    )
)


def _rowcount(result: Any) -> int:
    return cast("CursorResult[Any]", result).rowcount


class SqlActions:
    """`ActionRepository` on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def existing_keys(self, keys: Collection[str]) -> set[str]:
        """Which of these idempotency keys the journal already holds (any status)."""
        found: set[str] = set()
        for chunk in chunks(sorted(keys)):
            found.update(
                self.session.scalars(
                    select(SyncAction.idempotency_key).where(SyncAction.idempotency_key.in_(chunk))
                )
            )
        return found

    def record(self, intents: Sequence[Intent], stamp: JournalStamp) -> list[JournaledAction]:
        """Journal the intents (claimed until `claim_until`) and the binding rows they imply."""
        if not intents:
            return []
        now = utcnow()
        rows = [intent_row(i, now=now, stamp=stamp) for i in intents]
        for chunk in chunks(rows):
            self.session.execute(insert(SyncAction), list(chunk))
        bindings = SqlBindings(self.session)
        bindings.insert([i.new_binding for i in intents if i.new_binding], now)
        bindings.apply_intents(intents, now)
        keys = [i.idempotency_key for i in intents]
        by_key: dict[str, JournaledAction] = {}
        for chunk in chunks(keys):
            query = select(*_ROW).where(SyncAction.idempotency_key.in_(chunk))
            for row in self.session.execute(query).mappings():
                by_key[row["idempotency_key"]] = journaled_action(row)
        return with_origins([by_key[k] for k in keys], intents)

    def due(self, now: datetime, limit: int = 10_000) -> list[JournaledAction]:
        """Pending or retryable actions whose claim/backoff has run out: in doubt or due for retry."""
        query = (
            select(*_ROW)
            .where(
                SyncAction.status.in_(_DUE),
                or_(SyncAction.next_attempt_at.is_(None), SyncAction.next_attempt_at <= now),
            )
            .order_by(SyncAction.id)
            .limit(limit)
        )
        return [journaled_action(row) for row in self.session.execute(query).mappings()]

    def claim(self, action: JournaledAction, now: datetime, claim_until: datetime) -> JournaledAction | None:
        """Take an in-doubt/retryable action for one attempt; None when someone else holds it."""
        result = self.session.execute(
            update(SyncAction)
            .where(
                SyncAction.id == action.id,
                SyncAction.status.in_(_DUE),
                or_(SyncAction.next_attempt_at.is_(None), SyncAction.next_attempt_at <= now),
            )
            .values(attempts=SyncAction.attempts + 1, last_attempt_at=now, next_attempt_at=claim_until)
            .execution_options(synchronize_session=False)
        )
        if _rowcount(result) != 1:
            return None
        return replace(action, attempts=action.attempts + 1)

    def settle(self, outcomes: Iterable[Outcome], *, fencing_token: int | None) -> list[Outcome]:
        """Write each outcome: journal status, binding, audit row, quarantine and machine rejections.

        An outcome is written only while its action is still due (pending or retryable): when two
        settlers raced for one action (a leader term that ended with calls in flight and the next
        term's recovery, or a paused former leader and its successor), the first settlement stands
        and the later outcome is dropped, so every action keeps exactly one final outcome and audit
        row. Returns the outcomes written.

        Each journal row is updated on its own (its row count says whether the action was still
        due); the binding updates and audit rows then go out as one executemany each, not as ORM
        objects per outcome: a dispatch round settles thousands of outcomes on the thread that
        also feeds the senders (bench/campaign.py).
        """
        now = utcnow()
        connection = self.session.connection()
        written = [
            o for o in outcomes if _rowcount(connection.execute(_SETTLE_ACTION, action_values(o, now))) == 1
        ]
        if not written:
            return written
        # rows locked in mm_run_id order, as every flow that updates several bindings does: a sync
        # settling outcomes and a write-back recording counts never wait for each other in a cycle
        changes = sorted((values for o in written if (values := binding_values(o))), key=by_run_id)
        SqlBindings(self.session).settle(changes, now)
        machines, quarantine = SqlMachines(self.session), SqlQuarantine(self.session)
        audits = []
        for outcome in written:
            if outcome.rejected_machine:
                machines.reject(outcome.rejected_machine, outcome.error_message or "refused by MM", now)
            if outcome.quarantine:
                quarantine.upsert(refused_record(outcome), now, action_id=outcome.action.id)
            audits.append(settle_audit(outcome, fencing_token))
        self.session.execute(insert(AuditEntry), audits)
        return written

    def release(self, action_ids: Collection[int]) -> None:
        """Hand back claims on actions that were not sent, so the next cycle sends them."""
        if action_ids:
            self.session.execute(
                update(SyncAction)
                .where(SyncAction.id.in_(sorted(action_ids)), SyncAction.status == "pending")
                .values(next_attempt_at=None)
                .execution_options(synchronize_session=False)
            )

    def started_bodies(self, mm_run_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """The body of the latest succeeded start per run id (the `mm_run_id` index finds them)."""
        rows: list[tuple[str | None, str | None]] = []
        for chunk in chunks(sorted(mm_run_ids)):
            query = (
                select(SyncAction.mm_run_id, SyncAction.payload)
                .where(
                    SyncAction.mm_run_id.in_(chunk),
                    SyncAction.kind == str(ActionKind.START),
                    SyncAction.status == "succeeded",
                )
                .order_by(SyncAction.id)
            )
            rows.extend((r.mm_run_id, r.payload) for r in self.session.execute(query))
        return latest_bodies(rows)
