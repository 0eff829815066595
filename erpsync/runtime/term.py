"""A leadership term: one continuous leadership with one fencing token, and what its jobs hold.

Jobs are built per term by `jobs_factory(fencing)`, so every job holds the `FencingContext` of the
term it belongs to, and a job left over from an earlier term can never act for a later one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from erpsync.config import ServiceSettings
from erpsync.domain.errors import FencedError
from erpsync.runtime.leader import LeaderLease
from erpsync.runtime.scheduler import JobRunner, JobScheduler, ScheduledJob

log = structlog.get_logger(__name__)

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
class Term:
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

    def recover(self, recovery: Recovery, svc: ServiceSettings, on_success: Callable[[str], None]) -> None:
        """Run the start-up recovery until it succeeds or the term closes.

        No job of the term may run before recovery has settled what an earlier leader left in doubt.
        """
        job = ScheduledJob(
            RECOVERY_LOOP,
            lambda _flag: recovery(self.fencing),
            interval_seconds=svc.lease_retry_seconds,
            timeout_seconds=svc.job_timeout_seconds,
        )
        runner = JobRunner(
            job,
            may_run=self.fencing.is_leader,
            on_success=on_success,
            closing=self.closing,
            hard_stop=self.hard_stop,
            max_abandoned=1,
            trigger="startup_recovery",
        )
        self.recovery_runner = runner
        while not self.closing.is_set():
            outcome, error = runner.run()
            if outcome == "ok":
                break
            log.error("start-up recovery did not complete; retrying", outcome=outcome, error=str(error))
            self.closing.wait(svc.lease_retry_seconds)

    def close_jobs(self) -> None:
        """Release what the term's jobs kept between runs (connections); a failure is only logged."""
        for job in self.jobs:
            if job.close is None:
                continue
            try:
                job.close()
            except Exception as exc:
                log.warning("could not release a job's resources", loop=job.name, error=str(exc))
