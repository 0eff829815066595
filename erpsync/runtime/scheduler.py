"""APScheduler 3.11 wiring: one BackgroundScheduler, and a hard deadline around every job body.

APScheduler cannot kill a thread, and with ``max_instances=1`` one hung run would make every later
run "skipped: maximum number of running instances reached" forever. So the scheduled callable is a
runner that starts the job body in its own daemon thread and waits at most ``timeout_seconds``: on
timeout it sets the body's stop flag, abandons the thread, counts and logs it, and returns, so the
next scheduled run still happens. A job that keeps hanging is not restarted without bound: once
``max_abandoned`` of its runs are still alive, further runs are refused ("blocked") until they end.

Schedules live in memory (MemoryJobStore): what must survive a restart lives in erpsync's tables.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

# APScheduler 3.x ships no type information.
from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from erpsync.adapters.state.db import database_key, describe_db_error
from erpsync.observability.correlation import correlation
from erpsync.observability.metrics import JOB_RUNS, JOB_SECONDS, JOBS_ABANDONED, SCHEDULER_EVENTS
from erpsync.observability.scrub import scrub
from erpsync.runtime.logging import error_message
from erpsync.runtime.memory import release_free_memory

log = structlog.get_logger(__name__)

JobFunc = Callable[[threading.Event], None]
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ScheduledJob:
    """One periodic job. `func` gets a stop flag: set on timeout, shutdown or loss of leadership.

    A run that returns normally is a successful cycle of loop `name` (readiness, heartbeat, metrics);
    a run that raises is a failed one. `stale_after_seconds` makes the leader not ready once the
    loop's last success is older than that (None: reported, never gating).
    """

    name: str
    func: JobFunc
    interval_seconds: float
    timeout_seconds: float
    run_at_start: bool = True
    stale_after_seconds: float | None = None
    # releases what the job keeps between its runs (e.g. an ERP engine); called once its term ended
    close: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0 or self.timeout_seconds <= 0:
            raise ValueError(f"job {self.name!r}: interval and timeout must be positive")


@dataclass(eq=False)
class JobRunner:
    """The callable APScheduler runs for one job: gate, deadline, abandon, count."""

    job: ScheduledJob
    _: KW_ONLY
    may_run: Callable[[], bool]
    on_success: Callable[[str], None]
    closing: threading.Event
    hard_stop: threading.Event
    max_abandoned: int
    trigger: str = "schedule"
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _running: dict[threading.Thread, threading.Event] = field(default_factory=dict, init=False)
    _abandoned: list[threading.Thread] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.__name__ = self.job.name  # what APScheduler shows in its own log lines

    def __call__(self) -> None:
        """One scheduled run; a failure is re-raised so APScheduler reports EVENT_JOB_ERROR."""
        _, failure = self.run()
        if failure is not None:
            raise failure

    def run(self) -> tuple[str, BaseException | None]:
        """Run the body once under the deadline: (outcome, the exception it raised if any).

        Outcomes: ok, error, timeout, skipped (not leader / stopping), blocked (too many abandoned).
        """
        name = self.job.name
        if self.closing.is_set() or not self.may_run():
            JOB_RUNS.labels(name, "skipped").inc()
            log.info("job skipped: not leader or stopping", loop=name)
            return "skipped", None
        if self.abandoned_alive() >= self.max_abandoned:
            JOB_RUNS.labels(name, "blocked").inc()
            log.error("job blocked: earlier timed-out runs are still alive", loop=name)
            return "blocked", None
        flag = threading.Event()
        failure: list[BaseException] = []

        def body() -> None:
            with correlation(self.trigger), structlog.contextvars.bound_contextvars(loop=name):
                try:
                    self.job.func(flag)
                except BaseException as exc:
                    failure.append(exc)

        worker = threading.Thread(target=body, name=f"erpsync-job-{name}", daemon=True)
        started = time.monotonic()
        deadline = started + self.job.timeout_seconds
        with self._lock:
            self._running[worker] = flag
        worker.start()
        while worker.is_alive() and not self.hard_stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            worker.join(min(remaining, POLL_SECONDS))
        with self._lock:
            del self._running[worker]
        release_free_memory()  # what the run freed goes back to the system: flat RSS over time
        if worker.is_alive():
            flag.set()
            with self._lock:
                self._abandoned.append(worker)
            JOBS_ABANDONED.labels(name).set(self.abandoned_alive())
            JOB_RUNS.labels(name, "timeout").inc()
            log.error(
                "job abandoned: still running at its deadline",
                loop=name,
                timeout_seconds=self.job.timeout_seconds,
                shutting_down=self.hard_stop.is_set(),
            )
            return "timeout", None
        JOB_SECONDS.labels(name).observe(time.monotonic() - started)
        if failure:
            JOB_RUNS.labels(name, "error").inc()
            return "error", failure[0]
        JOB_RUNS.labels(name, "ok").inc()
        self.on_success(name)
        return "ok", None

    def abandoned_alive(self) -> int:
        """Timed-out runs of this job whose threads have not ended yet."""
        with self._lock:
            self._abandoned = [t for t in self._abandoned if t.is_alive()]
            alive = len(self._abandoned)
        JOBS_ABANDONED.labels(self.job.name).set(alive)
        return alive

    def interrupt(self) -> None:
        """Ask the runs in progress to stop (sets their stop flags)."""
        with self._lock:
            for flag in self._running.values():
                flag.set()

    def running(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._running)


@dataclass(eq=False)
class JobScheduler:
    """The started-or-not BackgroundScheduler plus the runners it calls."""

    scheduler: BackgroundScheduler
    runners: list[JobRunner]
    closing: threading.Event
    hard_stop: threading.Event

    @property
    def jobs(self) -> list[ScheduledJob]:
        return [runner.job for runner in self.runners]

    def start(self) -> None:
        self.scheduler.start()

    def interrupt(self) -> None:
        """Set every running job's stop flag; they should wind down at their next check."""
        for runner in self.runners:
            runner.interrupt()

    def running(self) -> list[threading.Thread]:
        """Job bodies running right now."""
        return [worker for runner in self.runners for worker in runner.running()]

    def begin_shutdown(self) -> None:
        """No new runs from now on, and every running body is asked to stop (its flag is set)."""
        self.closing.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.interrupt()

    def abandon(self) -> None:
        """Stop waiting for running bodies: their runners return now and the pool threads exit."""
        self.closing.set()
        self.hard_stop.set()

    def shutdown(self, grace_seconds: float) -> bool:
        """Stop scheduling, ask running jobs to stop, wait up to `grace_seconds`, then abandon them.

        True when every running job ended within the grace period.
        """
        self.begin_shutdown()
        deadline = time.monotonic() + grace_seconds
        for worker in self.running():
            worker.join(max(0.0, deadline - time.monotonic()))
        finished = not any(worker.is_alive() for worker in self.running())
        self.abandon()
        if not finished:
            log.warning("jobs still running at shutdown were abandoned", grace_seconds=grace_seconds)
        return finished


def _listener(event: JobEvent) -> None:
    kinds = {EVENT_JOB_ERROR: "error", EVENT_JOB_MISSED: "missed", EVENT_JOB_MAX_INSTANCES: "max_instances"}
    kind = kinds.get(event.code, str(event.code))
    SCHEDULER_EVENTS.labels(event.job_id, kind).inc()
    if isinstance(event, JobExecutionEvent) and event.exception is not None:
        # the one log line of a failed run (APScheduler's own is filtered out in runtime/logging.py);
        # erpsync's frames only at DEBUG, never a library's locals
        exc = event.exception
        log.error(
            "job failed",
            loop=event.job_id,
            error_class=type(exc).__name__,
            error=_failure_text(exc),
            exc_info=exc if logging.getLogger().isEnabledFor(logging.DEBUG) else None,
        )
    else:
        log.warning(f"job run {kind.replace('_', ' ')}", loop=event.job_id)


def _failure_text(exc: BaseException) -> str:
    """A database error names its database's config key (`source.url: connection failed ...`), as the
    CLI's do, and keeps the driver's message without SQL and parameters; anything else as it is."""
    if database_key(exc) is not None:
        return scrub(describe_db_error(exc))
    return error_message(exc)


def build_scheduler(
    jobs: Sequence[ScheduledJob],
    *,
    may_run: Callable[[], bool] = lambda: True,
    on_success: Callable[[str], None] = lambda _loop: None,
    max_workers: int | None = None,
    max_abandoned: int = 2,
) -> JobScheduler:
    """A BackgroundScheduler (not started) running `jobs` with coalescing and one instance each.

    `may_run` is checked before every run (the service passes "am I still leader?"); `on_success`
    gets the loop name after each successful run.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"scheduled job names must be unique: {names}")
    closing, hard_stop = threading.Event(), threading.Event()
    workers = max_workers or max(2, len(jobs))
    scheduler = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(workers)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=UTC,
    )
    runners = []
    for job in jobs:
        runner = JobRunner(
            job,
            may_run=may_run,
            on_success=on_success,
            closing=closing,
            hard_stop=hard_stop,
            max_abandoned=max_abandoned,
        )
        options: dict[str, Any] = {}
        if job.run_at_start:
            options["next_run_time"] = datetime.now(UTC)
        scheduler.add_job(
            runner,
            trigger=IntervalTrigger(seconds=job.interval_seconds, timezone=UTC),
            id=job.name,
            name=job.name,
            misfire_grace_time=max(1, math.ceil(job.interval_seconds / 2)),
            **options,
        )
        runners.append(runner)
    scheduler.add_listener(_listener, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    return JobScheduler(scheduler, runners, closing, hard_stop)
