"""One final outcome per action, even when two settlers race for it (`SqlActions.settle`).

Two settlers meet when a leader term ends with calls in flight and the next term's start-up
recovery settles the same actions, or when a paused former leader wakes up after its successor
settled them. The first settlement stands; the later one writes nothing: no second audit row, no
status moved back. On every state backend, in turn and at the same moment (row locks on the
servers, the write lock on SQLite).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import select

from erpsync.adapters.mm.mapper import request_facts
from erpsync.adapters.state.actions import SqlActions
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, SyncAction, utcnow
from erpsync.domain.lifecycle import (
    ActionKind,
    ActionStatus,
    Answer,
    AuditOutcome,
    Intent,
    JournaledAction,
    JournalStamp,
    MMAnswer,
    Outcome,
    RunRef,
    outcome_of,
)


def one_action(store: StateStore) -> JournaledAction:
    intent = Intent(
        idempotency_key="start_run:erp:LT1:production",
        kind=ActionKind.START,
        source="erp",
        ref=RunRef("erp", "LT1", "erp:LT1", job="W1", operation="10", machine="M1"),
        reason="test",
        payload={"erpJobOperationRunId": "erp:LT1", "erpMachineId": "M1", "jobName": "W1"},
    )
    with store.session() as session:
        stamp = JournalStamp(1, "test", "test", claim_until=utcnow() + timedelta(minutes=5))
        (entry,) = SqlActions(session).record([intent], stamp)
    return entry


def audit_outcomes(store: StateStore, entry: JournaledAction) -> list[tuple[str, int | None]]:
    with store.session() as session:
        query = select(AuditEntry.outcome, AuditEntry.fencing_token).where(AuditEntry.action_id == entry.id)
        return [(outcome, token) for outcome, token in session.execute(query.order_by(AuditEntry.id))]


def status_of(store: StateStore, entry: JournaledAction) -> str:
    with store.session() as session:
        return session.scalars(select(SyncAction.status).where(SyncAction.id == entry.id)).one()


def retrying(entry: JournaledAction) -> Outcome:
    return Outcome(
        entry, ActionStatus.FAILED_RETRYABLE, AuditOutcome.RETRYING, http_status=503, next_attempt_at=utcnow()
    )


def applied(entry: JournaledAction) -> Outcome:
    return outcome_of(
        entry, MMAnswer(Answer.APPLIED), request_facts(entry.payload), max_attempts=5, now=utcnow()
    )


def test_a_later_outcome_for_a_settled_action_writes_nothing(state_store: StateStore) -> None:
    entry = one_action(state_store)
    with state_store.session() as session:
        assert SqlActions(session).settle([retrying(entry)], fencing_token=1) != []  # not final: still due
    with state_store.session() as session:
        assert SqlActions(session).settle([applied(entry)], fencing_token=1) != []
    for late in (applied(entry), retrying(entry)):  # the next term's recovery, a stale sender
        with state_store.session() as session:
            assert SqlActions(session).settle([late], fencing_token=2) == []
    assert audit_outcomes(state_store, entry) == [("retrying", 1), ("succeeded", 1)]
    assert status_of(state_store, entry) == "succeeded"


def test_two_settlers_at_once_leave_one_final_outcome(state_store: StateStore) -> None:
    """The first settler holds its transaction open; the second waits on the lock, then finds it settled."""
    entry = one_action(state_store)
    first_wrote, second_done = threading.Event(), threading.Event()
    results: dict[str, list[Outcome]] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with state_store.session() as session:
                results["first"] = SqlActions(session).settle([applied(entry)], fencing_token=1)
                first_wrote.set()
                time.sleep(0.5)  # the second settler is blocked meanwhile
                assert not second_done.is_set(), "the second settler did not wait for the first to commit"
        except BaseException as exc:
            errors.append(exc)
            first_wrote.set()

    def second() -> None:
        try:
            first_wrote.wait(10)
            with state_store.session() as session:
                results["second"] = SqlActions(session).settle([applied(entry)], fencing_token=2)
            second_done.set()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert [o.action.id for o in results["first"]] == [entry.id]
    assert results["second"] == []
    assert audit_outcomes(state_store, entry) == [("succeeded", 1)]
