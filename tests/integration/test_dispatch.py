"""Dispatcher.run: sender threads, batched settling, and how a round ends (done, stopped, crashed).

Journal entries are real (SQLite state, `SqlActions.record`), the fence is the real leader
lease, MM is the simulator over HTTP; tests that need a particular sender pass one through
`run(..., sender=...)`, the seam recovery uses too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.simulator import Fault, MMSimulator
from erpsync.adapters.state import migrate
from erpsync.adapters.state.actions import SqlActions
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, SyncAction, utcnow
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.config import ServiceSettings, Settings, StateSettings
from erpsync.domain.lifecycle import (
    ActionKind,
    Answer,
    Intent,
    JournaledAction,
    JournalStamp,
    MMAnswer,
    Outcome,
    RunRef,
)
from erpsync.runtime.cli_lease import held_lease
from erpsync.runtime.term import FencingContext
from erpsync.service.dispatch import SETTLE_BATCH, Dispatcher
from tests.fixtures_mm import fast_mm_settings


class Boom(BaseException):
    """What a sender thread dies of (not an Exception: `send` turns those into outcomes)."""


@pytest.fixture
def store(sqlite_url: str) -> Iterator[StateStore]:
    state = StateStore(create_db_engine(sqlite_url))
    migrate.upgrade(state.engine)
    yield state
    state.dispose()


@pytest.fixture
def settings(sqlite_url: str, mm_simulator: MMSimulator) -> Settings:
    return Settings(
        state=StateSettings(url=sqlite_url),
        mm=fast_mm_settings(mm_simulator.base_url, mm_simulator.api_key, max_concurrency=8),
        service=ServiceSettings(lease_ttl_seconds=5, lease_renew_seconds=1, lease_retry_seconds=0.5),
    )


@pytest.fixture
def fence(settings: Settings, store: StateStore) -> Iterator[FencingContext]:
    with held_lease(settings, store) as fencing:
        yield fencing


@pytest.fixture
def client(settings: Settings) -> Iterator[MMClient]:
    with MMClient(settings.mm) as mm:
        yield mm


def _intent(kind: str, n: int, payload: dict[str, str]) -> Intent:
    """The `kind` action of run R<n> on machine M<n>."""
    run_id = f"R{n}"
    return Intent(
        idempotency_key=f"{kind.removesuffix('_run')}:{run_id}",
        kind=ActionKind(kind),
        source="erp",
        ref=RunRef("erp", f"LT{n}", run_id, job="W1", operation="10", machine=f"M{n}"),
        reason="test",
        payload=payload,
    )


def journaled(
    store: StateStore, fence: FencingContext, machines: int, *, stop_too: bool = False
) -> list[list[JournaledAction]]:
    """One group per machine: a start, and (`stop_too`) the stop of the same run after it."""
    intents = []
    for n in range(machines):
        run_id, machine = f"R{n}", f"M{n}"
        intents.append(
            _intent(
                "start_run", n, {"erpJobOperationRunId": run_id, "erpMachineId": machine, "jobName": "W1"}
            )
        )
        if stop_too:
            intents.append(_intent("stop_run", n, {"erpJobOperationRunId": run_id}))
    with store.session() as session:
        stamp = JournalStamp(fence.token, "test", "test", claim_until=utcnow() + timedelta(minutes=5))
        entries = SqlActions(session).record(intents, stamp)
    groups: dict[str, list[JournaledAction]] = {}
    for entry in entries:
        groups.setdefault(entry.ref.machine if entry.ref else "", []).append(entry)
    return list(groups.values())


def settled(store: StateStore) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).where(SyncAction.settled_at.is_not(None))) or 0


def dispatch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("dispatch_")]


def test_groups_run_concurrently_each_in_order_and_every_outcome_is_settled(
    store: StateStore, fence: FencingContext, client: MMClient, mm_simulator: MMSimulator
) -> None:
    groups = journaled(store, fence, 150, stop_too=True)  # 300 actions: several settle batches
    mm_simulator.set_faults(Fault("latency", latency_ms=5))
    result = Dispatcher(SqlUnitOfWorkFactory(store), client, fence, max_concurrency=8, max_attempts=3).run(
        groups
    )

    assert (result.succeeded, result.by_kind) == (300, {"start_run": 150, "stop_run": 150})
    assert (result.retrying, result.quarantined, result.failed, result.not_sent) == (0, 0, 0, 0)
    runs = mm_simulator.runs()
    assert len(runs) == 150
    assert all(run["end_at"] is not None for run in runs.values())  # each stop came after its start
    assert 2 <= mm_simulator.stats()["peak_in_flight"] <= 8
    with store.session() as session:
        statuses = session.scalars(select(SyncAction.status)).all()
        audits = session.scalar(select(func.count()).select_from(AuditEntry))
    assert statuses == ["succeeded"] * 300
    assert audits == 300
    assert dispatch_threads() == []


def test_outcomes_are_committed_while_the_round_still_runs(
    store: StateStore, fence: FencingContext, client: MMClient
) -> None:
    groups = journaled(store, fence, SETTLE_BATCH + 50)
    dispatcher = Dispatcher(SqlUnitOfWorkFactory(store), client, fence, max_concurrency=4, max_attempts=3)
    first = groups[0][0].id
    seen_mid_round: list[int] = []

    def sender(entry: JournaledAction) -> Outcome:
        if entry.id == first:  # holds one sender thread until a batch of the others is committed
            deadline = time.monotonic() + 10
            while settled(store) < SETTLE_BATCH and time.monotonic() < deadline:
                time.sleep(0.01)
            seen_mid_round.append(settled(store))
        return dispatcher.answered(entry, MMAnswer(Answer.APPLIED))

    result = dispatcher.run(groups, sender=sender)

    assert seen_mid_round and seen_mid_round[0] >= SETTLE_BATCH
    assert result.succeeded == SETTLE_BATCH + 50
    assert settled(store) == SETTLE_BATCH + 50


def test_a_crashed_sender_fails_the_round_and_nothing_more_is_sent(
    store: StateStore, fence: FencingContext, client: MMClient
) -> None:
    groups = journaled(store, fence, 60)
    dispatcher = Dispatcher(SqlUnitOfWorkFactory(store), client, fence, max_concurrency=3, max_attempts=3)
    sent: list[int] = []
    lock = threading.Lock()

    def sender(entry: JournaledAction) -> Outcome:
        with lock:
            sent.append(entry.id)
            crash = len(sent) == 10
        if crash:
            raise Boom
        time.sleep(0.005)
        return dispatcher.answered(entry, MMAnswer(Answer.APPLIED))

    with pytest.raises(Boom):
        dispatcher.run(groups, sender=sender)

    assert 10 <= len(sent) <= 10 + 2  # the other two threads finish the group they were in
    assert dispatch_threads() == []
    with store.session() as session:  # nothing settled as failed: the rest stays pending, in doubt
        statuses = set(session.scalars(select(SyncAction.status)).all())
    assert statuses <= {"pending", "succeeded"}


def test_a_stop_mid_round_releases_what_was_not_sent(
    store: StateStore, fence: FencingContext, client: MMClient
) -> None:
    groups = journaled(store, fence, 40)
    stop = threading.Event()
    dispatcher = Dispatcher(
        SqlUnitOfWorkFactory(store), client, fence, max_concurrency=2, max_attempts=3, stop_event=stop
    )
    calls: list[int] = []
    lock = threading.Lock()

    def sender(entry: JournaledAction) -> Outcome:
        with lock:
            calls.append(entry.id)
            if len(calls) == 5:
                stop.set()
        return dispatcher.answered(entry, MMAnswer(Answer.APPLIED))

    result = dispatcher.run(groups, sender=sender)

    assert result.succeeded + result.not_sent == 40
    assert 5 <= result.succeeded <= 6 and result.not_sent >= 34
    with store.session() as session:
        released = session.scalars(
            select(SyncAction.status).where(
                SyncAction.status == "pending", SyncAction.next_attempt_at.is_(None)
            )
        ).all()
    assert len(released) == result.not_sent  # due again at once for the next cycle
