"""The leader lease on SQLite, PostgreSQL and MariaDB: one leader, expiry, takeover, fencing."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from erpsync.adapters.state.store import StateStore
from erpsync.domain.errors import FencedError
from erpsync.runtime.leader import LeaderLease, db_now

TTL = 0.6


def lease(store: StateStore, holder: str, ttl: float = TTL) -> LeaderLease:
    return LeaderLease(store.engine, holder=holder, ttl_seconds=ttl)


def wait_until_expired(first: LeaderLease) -> None:
    deadline = time.monotonic() + 10
    while first.status().held:
        assert time.monotonic() < deadline, "lease never expired"
        time.sleep(0.05)


def test_one_holder_at_a_time_then_takeover_bumps_the_token(state_store: StateStore) -> None:
    a, b = lease(state_store, "a"), lease(state_store, "b")

    assert a.try_acquire() == 1
    assert b.try_acquire() is None
    assert a.renew() is True
    assert a.try_acquire() == 1, "re-acquiring a live lease is a renewal, not a new term"
    status = a.status()
    assert (status.holder, status.token, status.held) == ("a", 1, True)
    assert status.expires_at is not None and status.acquired_at is not None
    assert status.expires_at > status.db_now

    wait_until_expired(a)
    assert b.try_acquire() == 2
    assert a.renew() is False, "the old holder cannot renew once another took over"
    assert a.try_acquire() is None
    assert b.status().holder == "b"

    wait_until_expired(b)
    assert b.renew() is False, "a lapsed lease is re-acquired, never silently renewed"
    assert b.try_acquire() == 3, "even its old holder starts a new term"


def test_stale_token_is_fenced_inside_the_claiming_transaction(state_store: StateStore) -> None:
    a, b = lease(state_store, "a"), lease(state_store, "b")
    token_a = a.try_acquire()
    assert token_a is not None
    with state_store.session() as session:
        a.check_token(session, token_a)  # the live term passes

    wait_until_expired(a)
    with state_store.engine.begin() as conn, pytest.raises(FencedError, match="expired"):
        a.check_token(conn, token_a)  # lapsed, even though nobody took over yet

    token_b = b.try_acquire()
    assert token_b == token_a + 1
    with state_store.session() as session, pytest.raises(FencedError, match="stale"):
        a.check_token(session, token_a)
    with state_store.session() as session:
        b.check_token(session, token_b)


def test_release_expires_at_once_and_keeps_the_token(state_store: StateStore) -> None:
    a, b = lease(state_store, "a", ttl=60), lease(state_store, "b", ttl=60)
    assert a.try_acquire() == 1
    a.release()
    status = a.status()
    assert status.token == 1
    assert not status.held
    assert b.try_acquire() == 2, "the standby does not have to wait for the TTL after a release"
    with state_store.engine.begin() as conn, pytest.raises(FencedError):
        a.check_token(conn, 1)


def test_first_use_is_race_safe(state_store: StateStore) -> None:
    holders = [lease(state_store, f"h{i}", ttl=60) for i in range(6)]
    results: dict[str, int | None] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(holders))

    def contend(holder: LeaderLease) -> None:
        try:
            barrier.wait()
            results[holder.holder] = holder.try_acquire()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(h,)) for h in holders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    winners = {name: token for name, token in results.items() if token is not None}
    assert len(winners) == 1
    assert list(winners.values()) == [1]
    with state_store.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM erpsync_leader")).scalar() == 1


def test_status_of_a_never_taken_lease_and_the_database_clock(state_store: StateStore) -> None:
    status = lease(state_store, "reader").status()
    assert (status.holder, status.token, status.held) == (None, 0, False)
    with state_store.engine.begin() as conn, pytest.raises(FencedError, match="never been taken"):
        lease(state_store, "x").check_token(conn, 1)
    with state_store.engine.connect() as conn:
        now = db_now(conn)
    assert now.tzinfo is not None
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_takeover_waits_for_a_claim_in_progress(state_store: StateStore) -> None:
    """A claim that passed `check_token` commits before a takeover can bump the token."""
    a, b = lease(state_store, "a"), lease(state_store, "b")
    token = a.try_acquire()
    assert token is not None
    taken: list[int | None] = []
    with state_store.engine.connect() as claim:
        claim.begin()
        a.check_token(claim, token)
        wait_until_expired(a)  # a's lease lapses while its claim transaction is still open
        thief = threading.Thread(target=lambda: taken.append(b.try_acquire()))
        thief.start()
        thief.join(1.0)
        assert thief.is_alive(), "the takeover must wait for the claiming transaction"
        assert taken == []
        claim.commit()
    thief.join(30)
    assert taken == [token + 1]
