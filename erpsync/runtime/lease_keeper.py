"""The leader lease as this process holds it: acquire, renew, and the local safe window.

The safe window ends at the last successful renewal (or acquisition) + TTL - a safety margin: past
it this process must stop acting even if the database has not yet noticed, because another
instance may take the lease as soon as the TTL runs out by the database's clock. A renewal that
fails on a database error is retried while the window lasts; one that finds the lease no longer
ours loses it at once.
"""

from __future__ import annotations

import time

import structlog
from sqlalchemy.exc import SQLAlchemyError

from erpsync.config import ServiceSettings
from erpsync.observability.metrics import LEASE_EVENTS
from erpsync.runtime.health_facts import HealthFacts
from erpsync.runtime.leader import LeaderLease

log = structlog.get_logger(__name__)


class LeaseKeeper:
    """Acquires and renews the lease for one holder; logs standby, late renewals and losses."""

    def __init__(self, lease: LeaderLease, holder: str, svc: ServiceSettings, facts: HealthFacts) -> None:
        self.lease = lease
        self._holder = holder
        self._svc = svc
        self._facts = facts
        # Stop acting this long before the lease's TTL runs out, and always after the next renewal is due.
        self.safety_margin = min(
            0.2 * svc.lease_ttl_seconds, (svc.lease_ttl_seconds - svc.lease_renew_seconds) / 2
        )
        self._standing_by_for: tuple[str | None, int] | None = None  # the leader last logged
        self._valid_until = 0.0  # monotonic end of the safe window
        self._renewed_at = 0.0  # monotonic start of the last renewal (or acquisition) that succeeded

    def within_safe_window(self) -> bool:
        """The lease, as last renewed, is still safely ours by the local clock."""
        return time.monotonic() < self._valid_until

    def try_acquire(self) -> int | None:
        """The fencing token of a new term, or None (another instance leads, or the database failed)."""
        began = time.monotonic()
        try:
            token = self.lease.try_acquire()
        except SQLAlchemyError as exc:
            self._facts.db_failed("acquire", exc)
            return None
        self._facts.db_ok()
        if token is None:
            self._note_standby()
            return None
        self._standing_by_for = None
        self._held_since(began)
        return token

    def keep(self) -> float | None:
        """Renew the lease: the pause until the next attempt, or None when the lease is lost.

        A database error is retried while the term is inside its safe window.
        """
        svc = self._svc
        began = time.monotonic()
        late = began - (self._renewed_at + svc.lease_renew_seconds)
        try:
            renewed = self.lease.renew()
        except SQLAlchemyError as exc:
            self._facts.db_failed("renew", exc)
            if began < self._valid_until:
                return min(svc.lease_retry_seconds, max(0.05, self._valid_until - began))
            renewed, why = False, f"the state database did not answer in time ({type(exc).__name__})"
        else:
            self._facts.db_ok()
            why = "" if renewed else self._why_lost()
        if renewed:
            if late > svc.lease_renew_seconds:
                log.warning("leader lease renewal was late", late_seconds=round(late, 3))
            self._held_since(began)
            return svc.lease_renew_seconds
        log.warning(
            "leader lease lost: renewal failed; stepping down",
            fencing=self.lease.token,
            reason=why,
            late_seconds=round(late, 3),
            seconds_since_last_renewal=round(began - self._renewed_at, 3),
            ttl_seconds=svc.lease_ttl_seconds,
        )
        LEASE_EVENTS.labels("lost").inc()
        return None

    def renew_while_stopping(self, token: int) -> bool:
        """Renew once while running jobs finish their grace period; False (logged) if it is lost."""
        began = time.monotonic()
        try:
            renewed = self.lease.renew()
        except SQLAlchemyError as exc:
            self._facts.db_failed("renew", exc)
            renewed = False
        if renewed:
            self._held_since(began)
            return True
        log.warning("leader lease lost while stopping", fencing=token)
        return False

    def _held_since(self, began: float) -> None:
        """The acquisition or renewal that started at `began` succeeded: the safe window restarts."""
        self._valid_until = began + self._svc.lease_ttl_seconds - self.safety_margin
        self._renewed_at = began

    def _note_standby(self) -> None:
        """Log that this instance stands by, and who leads: once, then only when the leader changes.

        Read after a failed acquire; a failed read is skipped (the next poll reads again).
        """
        try:
            lease = self.lease.status()
        except SQLAlchemyError:
            return
        leader = (lease.holder, lease.token)
        if leader == self._standing_by_for:
            return
        event = "standing by" if self._standing_by_for is None else "leader changed; standing by"
        self._standing_by_for = leader
        log.info(
            event,
            instance=self._holder,
            leader=lease.holder,
            fencing=lease.token,
            leader_expires_at=lease.expires_at.isoformat() if lease.expires_at else None,
        )

    def _why_lost(self) -> str:
        """Why a renewal found the lease no longer ours, as the lease row says (for the log)."""
        try:
            status = self.lease.status()
        except SQLAlchemyError as exc:
            return f"the lease row could not be read ({type(exc).__name__})"
        if status.token != self.lease.token or status.holder != self._holder:
            return f"another instance took the lease (holder {status.holder}, token {status.token})"
        return f"the lease expired at {status.expires_at} (database time) before this renewal reached it"
