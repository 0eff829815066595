"""What the service knows about its own health: loop successes, state-database reachability.

Successes, and why nobody has to call the runtime: a loop's last success is the later of
- the last scheduled run of that job in this process that returned normally (a cycle reports failure
  by raising), which also feeds the heartbeat's last_sync_ok_at / last_writeback_ok_at, and
- the newest ``erpsync_cycle`` row with outcome 'ok' whose kind is the job's name (written by
  erpsync.service.cycles.cycle), which survives restarts and shows a standby the leader's progress.
So a scheduled job's name is its cycle kind: sync, writeback, import, purge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import Cycle
from erpsync.config import ServiceSettings
from erpsync.observability.metrics import LAST_SUCCESS, LEASE_EVENTS, STATE_DB_UP
from erpsync.runtime.health import ReadyState
from erpsync.runtime.heartbeat import HeartbeatWriter
from erpsync.runtime.scheduler import ScheduledJob
from erpsync.runtime.term import Term

log = structlog.get_logger(__name__)


class HealthFacts:
    """Collects the facts readiness and the heartbeat report, and turns them into a ReadyState."""

    def __init__(
        self,
        svc: ServiceSettings,
        store: StateStore,
        heartbeat: HeartbeatWriter,
        breaker_state: Callable[[], str] | None = None,
    ) -> None:
        self._svc = svc
        self._store = store
        self._heartbeat = heartbeat
        self._breaker_state = breaker_state
        self._db_ok_at: float | None = None
        self._last_beat = 0.0
        self.jobs: list[ScheduledJob] = []  # the scheduled jobs of the current (or last) term
        self._last_ok: dict[str, datetime] = {}

    def record_success(self, loop: str) -> None:
        """A run of `loop` returned normally."""
        self._last_ok[loop] = datetime.now(UTC)
        LAST_SUCCESS.labels(loop).set(time.time())

    def db_ok(self) -> None:
        """A lease call reached the state database."""
        self._db_ok_at = time.monotonic()
        STATE_DB_UP.set(1)

    def db_failed(self, what: str, exc: SQLAlchemyError) -> None:
        """A lease or heartbeat call failed on the state database."""
        self._db_ok_at = None
        STATE_DB_UP.set(0)
        LEASE_EVENTS.labels("error").inc()
        log.warning("state database call failed", call=what, error_class=type(exc).__name__)

    def write_heartbeat(self, role: str, *, start: bool = False, force: bool = False) -> None:
        """Write the heartbeat row when one is due (every lease renewal period), or now if asked."""
        due = time.monotonic() - self._last_beat >= self._svc.lease_renew_seconds
        if not (start or force or due):
            return
        try:
            if start:
                self._heartbeat.start(role)
            else:
                self._heartbeat.beat(role, dict(self._last_ok))
        except SQLAlchemyError as exc:
            self.db_failed("heartbeat", exc)
            return
        self._last_beat = time.monotonic()

    def readiness(self, term: Term | None, role: str, *, instance: str, holder: str) -> ReadyState:
        """Ready = leader with fresh loops and a reachable database, or standby with a reachable database."""
        now = datetime.now(UTC)
        db_at = self._db_ok_at
        db_ok = db_at is not None and time.monotonic() - db_at < self._svc.lease_ttl_seconds
        jobs = list(self.jobs)
        try:
            recorded = self._cycle_successes([job.name for job in jobs])
        except SQLAlchemyError:
            recorded, db_ok = {}, False
        loops: dict[str, dict[str, Any]] = {}
        for job in jobs:
            seen = [t for t in (self._last_ok.get(job.name), recorded.get(job.name)) if t is not None]
            last = max(seen) if seen else None
            fresh = True
            if role == "leader" and term is not None and job.stale_after_seconds is not None:
                since = max(last, term.started_at) if last else term.started_at
                fresh = (now - since).total_seconds() <= job.stale_after_seconds
            loops[job.name] = {
                "last_success_at": last.isoformat() if last else None,
                "last_success_age_seconds": round((now - last).total_seconds(), 3) if last else None,
                "stale_after_seconds": job.stale_after_seconds,
                "fresh": fresh,
            }
        leader_ok = (
            role == "leader"
            and term is not None
            and term.recovered
            and all(loop["fresh"] for loop in loops.values())
        )
        ready = db_ok and (role == "standby" or leader_ok)
        return ReadyState(
            ready,
            {
                "role": role,
                "instance": instance,
                "holder": holder,
                "fencing_token": term.token if role == "leader" and term is not None else None,
                "recovery": None if term is None else ("done" if term.recovered else "pending"),
                "db_ok": db_ok,
                "loops": loops,
                "circuit_breaker": self._breaker(),
            },
        )

    def _cycle_successes(self, kinds: list[str]) -> dict[str, datetime]:
        """Finish time of the newest 'ok' erpsync_cycle row of each kind."""
        found: dict[str, datetime] = {}
        if not kinds:
            return found
        with self._store.engine.connect() as conn:
            for kind in kinds:
                when = conn.execute(
                    select(Cycle.finished_at)
                    .where(Cycle.kind == kind, Cycle.outcome == "ok")
                    .order_by(Cycle.started_at.desc())
                    .limit(1)
                ).scalar()
                if when is not None:
                    found[kind] = when
        return found

    def _breaker(self) -> str | None:
        if self._breaker_state is None:
            return None
        try:
            return self._breaker_state()
        except Exception:
            return "unknown"
