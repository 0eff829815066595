"""The long-running service: schema check, leader lease with hot standby, jobs, heartbeat, health, signals.

Threads, and who owns what:
- main thread: start-up, then waits for a stop request (SIGTERM/SIGINT or `request_stop`);
- ``erpsync-lease``: acquires / renews the lease (lease_keeper.py) and writes the heartbeat
  (health_facts.py); begins and ends terms;
- ``erpsync-term``: per leadership term (term.py), runs the recovery hook, then starts the scheduler;
- APScheduler's pool and the job bodies (see scheduler.py); ``erpsync-health``: the HTTP endpoint.

A term's `FencingContext.is_leader()` is False whenever the local safe window (last renewal + TTL -
margin) has passed, and for good once the term is revoked: at once when a renewal fails, or, on a
clean stop, after running jobs had their grace period to finish. `check()` also re-checks the token
in the database inside the caller's transaction, which catches what no local clock can (e.g. a
process paused past its lease).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from sqlalchemy.exc import SQLAlchemyError

from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import side_engine
from erpsync.adapters.state.store import StateStore
from erpsync.config import Settings
from erpsync.domain.errors import ConfigError
from erpsync.observability.metrics import FENCING_TOKEN, LEADER, LEASE_EVENTS
from erpsync.runtime.health import HealthServer, ReadyState
from erpsync.runtime.health_facts import HealthFacts
from erpsync.runtime.heartbeat import HeartbeatWriter, default_instance_name
from erpsync.runtime.leader import DEFAULT_LEASE_NAME, LeaderLease
from erpsync.runtime.lease_keeper import LeaseKeeper
from erpsync.runtime.scheduler import build_scheduler
from erpsync.runtime.signals import install_stop_handlers
from erpsync.runtime.term import FencingContext, JobsFactory, Recovery, Term

log = structlog.get_logger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2


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
        self.facts = HealthFacts(
            svc, store, HeartbeatWriter(self._lease_engine, self.instance), breaker_state
        )
        self.keeper = LeaseKeeper(self.lease, self.holder, svc, self.facts)
        self.health = HealthServer(svc.health_host, svc.health_port, self.readiness)
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._term: Term | None = None
        self._started = False
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
            self.facts.write_heartbeat("standby", start=True)
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
                self.facts.write_heartbeat(self.role())
                # the next attempt is due `pause` after this one began, whatever the heartbeat took
                self._stop.wait(max(0.0, began + pause - time.monotonic()))
        except Exception:
            log.exception("the lease loop failed; stopping")
            self._exit_code = EXIT_ERROR
            self._stop.set()
        finally:
            self._end_term(release=True, grace=svc.stop_grace_seconds)
            self.facts.write_heartbeat("stopped", force=True)

    def _try_lead(self) -> float:
        svc = self.settings.service
        token = self.keeper.try_acquire()
        if token is None:
            return svc.lease_retry_seconds
        self._begin_term(token)
        return svc.lease_renew_seconds

    def _keep_lead(self) -> float:
        """Renew the lease; when it is lost, end the term at once (its fence refuses first)."""
        svc = self.settings.service
        pause = self.keeper.keep()
        if pause is not None:
            return pause
        self._end_term(release=False, grace=svc.stop_grace_seconds)
        return svc.lease_retry_seconds

    # --- terms ------------------------------------------------------------------------------------

    def _leads(self, term_stop: threading.Event) -> bool:
        """The term identified by `term_stop` is the current one and inside its safe window."""
        term = self._term
        return (
            term is not None
            and term.stop is term_stop
            and not term_stop.is_set()
            and self.keeper.within_safe_window()
        )

    def is_leader(self) -> bool:
        """True while this instance holds a live term within the lease's safe window."""
        term = self._term
        return term is not None and self._leads(term.stop)

    def _begin_term(self, token: int) -> None:
        stop = threading.Event()
        fencing = FencingContext(self.lease, token, lambda: self._leads(stop), stop)
        term = Term(token=token, fencing=fencing, stop=stop, started_at=datetime.now(UTC))
        with self._lock:
            self._term = term
        LEADER.set(1)
        FENCING_TOKEN.set(token)
        LEASE_EVENTS.labels("acquired").inc()
        log.info("became leader", fencing=token, holder=self.holder)
        term.thread = threading.Thread(target=self._run_term, args=(term,), name="erpsync-term", daemon=True)
        term.thread.start()

    def _run_term(self, term: Term) -> None:
        """Recovery first (retried until it works or the term ends), then the scheduled jobs."""
        try:
            if self._recovery is not None:
                term.recover(self._recovery, self.settings.service, self.facts.record_success)
            if term.closing.is_set():
                return
            term.recovered = True
            jobs = self._jobs_factory(term.fencing)
            scheduler = build_scheduler(
                jobs, may_run=term.fencing.is_leader, on_success=self.facts.record_success
            )
            with self._lock:
                if term.closing.is_set():
                    return
                self.facts.jobs = list(jobs)
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
        term.close_jobs()
        if release:
            try:
                self.lease.release()
            except SQLAlchemyError as exc:
                log.warning("could not release the lease; it expires by itself", error=type(exc).__name__)
            else:
                LEASE_EVENTS.labels("released").inc()
                log.info("leader lease released", fencing=term.token)
        log.info("leadership term ended", fencing=term.token)

    def _revoke(self, term: Term) -> None:
        """From now on the term's fence refuses (call with the lock held)."""
        if self._term is term:
            self._term = None
        term.stop.set()
        LEADER.set(0)
        FENCING_TOKEN.set(0)

    def _renew_while_stopping(self, term: Term) -> None:
        if not self.keeper.renew_while_stopping(term.token):
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

    # --- what health and the heartbeat report ----------------------------------------------------

    def role(self) -> str:
        """leader, standby, starting or stopping."""
        if self._stop.is_set():
            return "stopping"
        if self.is_leader():
            return "leader"
        return "standby" if self._started else "starting"

    def readiness(self) -> ReadyState:
        """Ready = leader with fresh loops and a reachable database, or standby with a reachable database."""
        term = self._term
        return self.facts.readiness(term, self.role(), instance=self.instance, holder=self.holder)
