"""The long-running service: schema check, leader lease with hot standby, jobs, heartbeat, health, signals.

Threads, and who owns what:
- main thread: start-up, then waits for a stop request (SIGTERM/SIGINT or `request_stop`);
- ``erpsync-lease``: acquires / renews the lease and writes the heartbeat; begins and ends terms;
- ``erpsync-term``: per leadership term, runs the recovery hook, then starts the scheduler;
- APScheduler's pool and the job bodies (see scheduler.py); ``erpsync-health``: the HTTP endpoint.

A *term* is one continuous leadership with one fencing token. Jobs are built per term by
`jobs_factory(fencing)`, so every job holds the `FencingContext` of the term it belongs to. Its
`is_leader()` is False whenever the local safe window (last renewal + TTL - margin) has passed, and
for good once the term is revoked: at once when a renewal fails, or, on a clean stop, after running
jobs had their grace period to finish. `check()` also re-checks the token in the database inside the
caller's transaction, which catches what no local clock can (e.g. a process paused past its lease).

Successes, and why nobody has to call the runtime: a loop's last success is the later of
- the last scheduled run of that job in this process that returned normally (a cycle reports failure
  by raising), which also feeds the heartbeat's last_sync_ok_at / last_writeback_ok_at, and
- the newest ``erpsync_cycle`` row with outcome 'ok' whose kind is the job's name (written by
  erpsync.service.cycles.cycle), which survives restarts and shows a standby the leader's progress.
So a scheduled job's name is its cycle kind: sync, writeback, import, purge.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import side_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import Cycle
from erpsync.config import Settings
from erpsync.domain.errors import ConfigError, FencedError
from erpsync.observability.metrics import FENCING_TOKEN, LAST_SUCCESS, LEADER, LEASE_EVENTS, STATE_DB_UP
from erpsync.runtime.health import HealthServer, ReadyState
from erpsync.runtime.heartbeat import HeartbeatWriter, default_instance_name
from erpsync.runtime.leader import DEFAULT_LEASE_NAME, LeaderLease
from erpsync.runtime.scheduler import JobRunner, JobScheduler, ScheduledJob, build_scheduler
from erpsync.runtime.signals import install_stop_handlers

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2
RECOVERY_LOOP = "startup_recovery"


class FencingContext:
    """What a job of one leadership term needs to act safely: its token and two checks.

    It satisfies erpsync.service.ports.Fence, so the service layer depends only on that protocol.
    """

    def __init__(self, lease: LeaderLease, token: int, leads: Callable[[], bool], stop: threading.Event):
        self._lease = lease
        self._token = token
        self._leads = leads
        self.stop = stop  # set when this term ends

    @property
    def token(self) -> int:
        """The fencing token of this term; stamp it on what you write (e.g. erpsync_action)."""
        return self._token

    def is_leader(self) -> bool:
        """Cheap, local: this term is still the live one and its lease is within its safe window."""
        return not self.stop.is_set() and self._leads()

    def is_current(self) -> bool:
        """The same as `is_leader` (the name erpsync.service.ports.Fence uses)."""
        return self.is_leader()

    def check(self, conn_or_session: Connection | Session) -> None:
        """Raise FencedError unless this term still leads; call inside the claiming transaction."""
        if not self.is_leader():
            raise FencedError(f"fencing token {self._token} refused: this instance no longer leads")
        self._lease.check_token(conn_or_session, self._token)


JobsFactory = Callable[[FencingContext], list[ScheduledJob]]
Recovery = Callable[[FencingContext], None]


@dataclass(eq=False)
class _Term:
    """One leadership term. `closing`: start no new work. `stop`: revoked, the fence refuses."""

    token: int
    fencing: FencingContext
    stop: threading.Event
    started_at: datetime
    closing: threading.Event = field(default_factory=threading.Event)
    hard_stop: threading.Event = field(default_factory=threading.Event)
    recovered: bool = False
    scheduler: JobScheduler | None = None
    recovery_runner: JobRunner | None = None
    thread: threading.Thread | None = None
    jobs: list[ScheduledJob] = field(default_factory=list)


class Service:
    """`erpsync serve`: run() blocks until stopped and returns the process exit code."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        jobs_factory: JobsFactory,
        recovery: Recovery | None = None,
        breaker_state: Callable[[], str] | None = None,
        *,
        migrate_schema: bool = False,
        lease_name: str = DEFAULT_LEASE_NAME,
    ) -> None:
        self.settings = settings
        self.store = store
        self._jobs_factory = jobs_factory
        self._recovery = recovery
        self._breaker_state = breaker_state
        self._migrate_schema = migrate_schema
        svc = settings.service
        self.instance = svc.instance_name or default_instance_name()
        # Unique per process even when instance_name is fixed: a restarted container is a new holder.
        self.holder = f"{self.instance}#{uuid.uuid4().hex[:8]}"
        # The lease and the heartbeat get connections of their own, each wait bounded, so a renewal
        # never queues behind the jobs' pool or hangs on a lock (it is retried inside the safe window).
        self._lease_engine = side_engine(
            store.engine, min(svc.lease_renew_seconds, (svc.lease_ttl_seconds - svc.lease_renew_seconds) / 3)
        )
        self.lease = LeaderLease(
            self._lease_engine, lease_name, holder=self.holder, ttl_seconds=svc.lease_ttl_seconds
        )
        self.heartbeat = HeartbeatWriter(self._lease_engine, self.instance)
        self.health = HealthServer(svc.health_host, svc.health_port, self.readiness)
        # Stop acting this long before the lease's TTL runs out, and always after the next renewal is due.
        self.safety_margin = min(
            0.2 * svc.lease_ttl_seconds, (svc.lease_ttl_seconds - svc.lease_renew_seconds) / 2
        )
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._term: _Term | None = None
        self._standing_by_for: tuple[str | None, int] | None = None  # the leader last logged
        self._valid_until = 0.0  # monotonic deadline of the current term's safe window
        self._renewed_at = 0.0  # monotonic start of the last renewal (or acquisition) that succeeded
        self._started = False
        self._db_ok_at: float | None = None
        self._last_beat = 0.0
        self._jobs: list[ScheduledJob] = []
        self._last_ok: dict[str, datetime] = {}
        self._exit_code = EXIT_OK

    # --- lifecycle -------------------------------------------------------------------------------

    def run(self) -> int:
        """Check the schema, serve health, lead or stand by until stopped; the exit code."""
        self._check_schema()
        restore_signals = install_stop_handlers(self.request_stop)
        lease_thread = threading.Thread(target=self._lease_loop, name="erpsync-lease", daemon=True)
        try:
            try:
                self.health.start()
            except OSError as exc:
                svc = self.settings.service
                raise ConfigError(
                    f"service.health_port: cannot listen on {svc.health_host}:{svc.health_port} "
                    f"({exc.strerror or exc}); free the port or choose another one (0 = any free port)"
                ) from None
            log.info(
                "erpsync service starting", instance=self.instance, holder=self.holder, port=self.health.port
            )
            self._write_heartbeat("standby", start=True)
            lease_thread.start()
            while not self._stop.wait(0.5):
                pass
            lease_thread.join(self.settings.service.stop_grace_seconds + 2)
            if lease_thread.is_alive():
                log.error("shutdown did not finish in time; exiting without releasing the lease")
                self._abandon_jobs()
            log.info("erpsync service stopped", instance=self.instance, exit_code=self._exit_code)
            return self._exit_code
        finally:
            self.health.stop()
            restore_signals()
            LEADER.set(0)
            FENCING_TOKEN.set(0)
            self.store.dispose()
            if self._lease_engine is not self.store.engine:
                self._lease_engine.dispose()

    def request_stop(self, reason: str = "requested") -> None:
        """Begin a clean stop: no new work, running jobs get the grace period, the lease is released."""
        if not self._stop.is_set():
            log.info("stopping", reason=reason)
        self._stop.set()

    def _check_schema(self) -> None:
        engine = self.store.engine
        if migrate.is_at_head(engine):
            return
        if self._migrate_schema:
            log.info("upgrading the state database schema", before=migrate.current_revision(engine))
            migrate.upgrade(engine)
            return
        raise ConfigError(
            f"the state database schema is at revision {migrate.current_revision(engine) or 'none'} but "
            f"this erpsync needs {migrate.head_revision(engine)}: run `erpsync db upgrade` "
            "(or start with `erpsync serve --migrate`)"
        )

    # --- the lease loop ---------------------------------------------------------------------------

    def _lease_loop(self) -> None:
        svc = self.settings.service
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                pause = self._keep_lead() if self._term is not None else self._try_lead()
                self._started = True  # "starting" until the first lease attempt has an answer
                self._write_heartbeat(self.role())
                # the next attempt is due `pause` after this one began, whatever the heartbeat took
                self._stop.wait(max(0.0, began + pause - time.monotonic()))
        except Exception:
            log.exception("the lease loop failed; stopping")
            self._exit_code = EXIT_ERROR
            self._stop.set()
        finally:
            self._end_term(release=True, grace=svc.stop_grace_seconds)
            self._write_heartbeat("stopped", force=True)

    def _try_lead(self) -> float:
        svc = self.settings.service
        began = time.monotonic()
        try:
            token = self.lease.try_acquire()
        except SQLAlchemyError as exc:
            self._db_failed("acquire", exc)
            return svc.lease_retry_seconds
        self._db_ok()
        if token is None:
            self._note_standby()
            return svc.lease_retry_seconds
        self._standing_by_for = None
        self._valid_until = began + svc.lease_ttl_seconds - self.safety_margin
        self._renewed_at = began
        self._begin_term(token)
        return svc.lease_renew_seconds

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
            instance=self.holder,
            leader=lease.holder,
            fencing=lease.token,
            leader_expires_at=lease.expires_at.isoformat() if lease.expires_at else None,
        )

    def _keep_lead(self) -> float:
        """Renew the lease; a database error is retried while the term is inside its safe window."""
        svc = self.settings.service
        began = time.monotonic()
        late = began - (self._renewed_at + svc.lease_renew_seconds)
        try:
            renewed = self.lease.renew()
        except SQLAlchemyError as exc:
            self._db_failed("renew", exc)
            if began < self._valid_until:
                return min(svc.lease_retry_seconds, max(0.05, self._valid_until - began))
            renewed, why = False, f"the state database did not answer in time ({type(exc).__name__})"
        else:
            self._db_ok()
            why = "" if renewed else self._why_lost()
        if renewed:
            if late > svc.lease_renew_seconds:
                log.warning("leader lease renewal was late", late_seconds=round(late, 3))
            self._valid_until = began + svc.lease_ttl_seconds - self.safety_margin
            self._renewed_at = began
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
        self._end_term(release=False, grace=svc.stop_grace_seconds)
        return svc.lease_retry_seconds

    def _why_lost(self) -> str:
        """Why a renewal found the lease no longer ours, as the lease row says (for the log)."""
        try:
            status = self.lease.status()
        except SQLAlchemyError as exc:
            return f"the lease row could not be read ({type(exc).__name__})"
        if status.token != self.lease.token or status.holder != self.holder:
            return f"another instance took the lease (holder {status.holder}, token {status.token})"
        return f"the lease expired at {status.expires_at} (database time) before this renewal reached it"

    # --- terms ------------------------------------------------------------------------------------

    def _leads(self, term_stop: threading.Event) -> bool:
        """The term identified by `term_stop` is the current one and inside its safe window."""
        term = self._term
        return (
            term is not None
            and term.stop is term_stop
            and not term_stop.is_set()
            and time.monotonic() < self._valid_until
        )

    def is_leader(self) -> bool:
        """True while this instance holds a live term within the lease's safe window."""
        term = self._term
        return term is not None and self._leads(term.stop)

    def _begin_term(self, token: int) -> None:
        stop = threading.Event()
        fencing = FencingContext(self.lease, token, lambda: self._leads(stop), stop)
        term = _Term(token=token, fencing=fencing, stop=stop, started_at=datetime.now(UTC))
        with self._lock:
            self._term = term
        LEADER.set(1)
        FENCING_TOKEN.set(token)
        LEASE_EVENTS.labels("acquired").inc()
        log.info("became leader", fencing=token, holder=self.holder)
        term.thread = threading.Thread(target=self._run_term, args=(term,), name="erpsync-term", daemon=True)
        term.thread.start()

    def _run_term(self, term: _Term) -> None:
        """Recovery first (retried until it works or the term ends), then the scheduled jobs."""
        svc = self.settings.service
        try:
            if self._recovery is not None:
                recovery = self._recovery
                job = ScheduledJob(
                    RECOVERY_LOOP,
                    lambda _flag: recovery(term.fencing),
                    interval_seconds=svc.lease_retry_seconds,
                    timeout_seconds=svc.job_timeout_seconds,
                )
                runner = JobRunner(
                    job,
                    may_run=term.fencing.is_leader,
                    on_success=self._record_success,
                    closing=term.closing,
                    hard_stop=term.hard_stop,
                    max_abandoned=1,
                    trigger="startup_recovery",
                )
                term.recovery_runner = runner
                while not term.closing.is_set():
                    outcome, error = runner.run()
                    if outcome == "ok":
                        break
                    log.error(
                        "start-up recovery did not complete; retrying", outcome=outcome, error=str(error)
                    )
                    term.closing.wait(svc.lease_retry_seconds)
            if term.closing.is_set():
                return
            term.recovered = True
            jobs = self._jobs_factory(term.fencing)
            scheduler = build_scheduler(jobs, may_run=term.fencing.is_leader, on_success=self._record_success)
            with self._lock:
                if term.closing.is_set():
                    return
                self._jobs = list(jobs)
                term.jobs = list(jobs)
                term.scheduler = scheduler
                scheduler.start()
            log.info("jobs scheduled", fencing=term.token, jobs=[j.name for j in jobs])
        except ConfigError as exc:
            log.error("cannot build the service's jobs", error=str(exc))  # noqa: TRY400 - message says it all
            self._exit_code = EXIT_CONFIG
            self.request_stop("configuration error")
        except Exception:
            log.exception("cannot start the service's jobs")
            self._exit_code = EXIT_ERROR
            self.request_stop("internal error")

    def _end_term(self, *, release: bool, grace: float) -> None:
        """End the current term: no new work, running jobs get `grace`, then revoke (and release).

        Lost lease (`release` False): the fence is revoked first, so running jobs are refused at
        their next check. Clean stop (`release` True): the term stays current while running jobs
        finish (the lease is renewed meanwhile), so they can still commit what they are doing; it
        is revoked when they are done or abandoned, and the lease is handed back.
        """
        with self._lock:
            term = self._term
            if term is None:
                return
            if not release:
                self._revoke(term)
            term.closing.set()
            scheduler, recovery = term.scheduler, term.recovery_runner
        if scheduler is not None:
            scheduler.begin_shutdown()
        if recovery is not None:
            recovery.interrupt()
        running = (scheduler.running() if scheduler else []) + (recovery.running() if recovery else [])
        deadline = time.monotonic() + grace
        next_renewal = time.monotonic() + self.settings.service.lease_renew_seconds
        while any(w.is_alive() for w in running) and time.monotonic() < deadline:
            time.sleep(0.05)
            if release and not term.stop.is_set() and time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + self.settings.service.lease_renew_seconds
                self._renew_while_stopping(term)
        if any(w.is_alive() for w in running):
            log.warning(
                "jobs still running at the end of the grace period were abandoned", grace_seconds=grace
            )
        term.hard_stop.set()
        if scheduler is not None:
            scheduler.abandon()
        if term.thread is not None:
            term.thread.join(max(0.0, deadline - time.monotonic()) + 1)
        with self._lock:
            self._revoke(term)
        self._close_jobs(term)
        if release:
            try:
                self.lease.release()
            except SQLAlchemyError as exc:
                log.warning("could not release the lease; it expires by itself", error=type(exc).__name__)
            else:
                LEASE_EVENTS.labels("released").inc()
                log.info("leader lease released", fencing=term.token)
        log.info("leadership term ended", fencing=term.token)

    @staticmethod
    def _close_jobs(term: _Term) -> None:
        """Release what the term's jobs kept between runs (connections); a failure is only logged."""
        for job in term.jobs:
            if job.close is None:
                continue
            try:
                job.close()
            except Exception as exc:
                log.warning("could not release a job's resources", loop=job.name, error=str(exc))

    def _revoke(self, term: _Term) -> None:
        """From now on the term's fence refuses (call with the lock held)."""
        if self._term is term:
            self._term = None
        term.stop.set()
        LEADER.set(0)
        FENCING_TOKEN.set(0)

    def _renew_while_stopping(self, term: _Term) -> None:
        began = time.monotonic()
        try:
            renewed = self.lease.renew()
        except SQLAlchemyError as exc:
            self._db_failed("renew", exc)
            renewed = False
        if renewed:
            self._valid_until = began + self.settings.service.lease_ttl_seconds - self.safety_margin
            self._renewed_at = began
            return
        log.warning("leader lease lost while stopping", fencing=term.token)
        with self._lock:
            self._revoke(term)

    def _abandon_jobs(self) -> None:
        with self._lock:
            term = self._term
            if term is None:
                return
            self._revoke(term)
        term.closing.set()
        term.hard_stop.set()
        if term.scheduler is not None:
            term.scheduler.abandon()

    # --- facts for readiness and the heartbeat ------------------------------------------------------

    def _record_success(self, loop: str) -> None:
        self._last_ok[loop] = datetime.now(UTC)
        LAST_SUCCESS.labels(loop).set(time.time())

    def _db_ok(self) -> None:
        self._db_ok_at = time.monotonic()
        STATE_DB_UP.set(1)

    def _db_failed(self, what: str, exc: SQLAlchemyError) -> None:
        self._db_ok_at = None
        STATE_DB_UP.set(0)
        LEASE_EVENTS.labels("error").inc()
        log.warning("state database call failed", call=what, error_class=type(exc).__name__)

    def _write_heartbeat(self, role: str, *, start: bool = False, force: bool = False) -> None:
        due = time.monotonic() - self._last_beat >= self.settings.service.lease_renew_seconds
        if not (start or force or due):
            return
        try:
            if start:
                self.heartbeat.start(role)
            else:
                self.heartbeat.beat(role, dict(self._last_ok))
        except SQLAlchemyError as exc:
            self._db_failed("heartbeat", exc)
            return
        self._last_beat = time.monotonic()

    def role(self) -> str:
        """leader, standby, starting or stopping."""
        if self._stop.is_set():
            return "stopping"
        if self.is_leader():
            return "leader"
        return "standby" if self._started else "starting"

    def readiness(self) -> ReadyState:
        """Ready = leader with fresh loops and a reachable database, or standby with a reachable database."""
        now = datetime.now(UTC)
        term = self._term
        role = self.role()
        db_at = self._db_ok_at
        db_ok = db_at is not None and time.monotonic() - db_at < self.settings.service.lease_ttl_seconds
        jobs = list(self._jobs)
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
                "instance": self.instance,
                "holder": self.holder,
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
        with self.store.engine.connect() as conn:
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
