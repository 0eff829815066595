"""Send journaled actions to MachineMetrics and settle each one's outcome.

Machines run concurrently (bounded by `mm.max_concurrency`); each machine's actions run in order,
so an old run is stopped before the next one starts. Outcomes are committed in small batches by
the calling thread: a crash before a batch commits leaves those actions `pending`, and the next
cycle settles them by reading MM first (service/recovery.py). Nothing is ever sent twice blindly.
"""

from __future__ import annotations

import base64
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field

import structlog
from sqlalchemy import update

from erpsync.adapters.mm.client import MMClient
from erpsync.adapters.mm.errors import (
    MMConfigError,
    MMConflictError,
    MMError,
    MMNotFoundError,
    MMRecordError,
    MMRetryableError,
)
from erpsync.adapters.mm.mapper import parse_timestamp, start_from_payload, stop_from_payload
from erpsync.adapters.state.journal import JournalEntry, Outcome, backoff, settle
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import SyncAction, utcnow
from erpsync.domain.errors import ConfigError
from erpsync.runtime import crashpoints
from erpsync.runtime.metrics import ACTIONS
from erpsync.service.fence import Fence

log = structlog.get_logger(__name__)

SETTLE_BATCH = 100
SETTLE_EVERY_SECONDS = 0.25
MACHINE_REJECTED_CODES = {"MachineNotFound"}


@dataclass(slots=True)
class DispatchResult:
    """What a dispatch round did, by outcome."""

    succeeded: int = 0
    retrying: int = 0
    quarantined: int = 0
    failed: int = 0
    not_sent: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    config_error: str | None = None

    def count(self, outcome: Outcome) -> None:
        if outcome.status == "succeeded":
            self.succeeded += 1
            self.by_kind[outcome.entry.kind] = self.by_kind.get(outcome.entry.kind, 0) + 1
        elif outcome.status == "failed_retryable":
            self.retrying += 1
        elif outcome.status == "quarantined":
            self.quarantined += 1
        elif outcome.status == "failed_permanent":
            self.failed += 1
        else:
            self.not_sent += 1

    def merge(self, other: DispatchResult) -> None:
        self.succeeded += other.succeeded
        self.retrying += other.retrying
        self.quarantined += other.quarantined
        self.failed += other.failed
        self.not_sent += other.not_sent
        for kind, n in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n
        self.config_error = self.config_error or other.config_error


class Dispatcher:
    """Executes journal entries against MM with the error table of the product."""

    def __init__(
        self,
        store: StateStore,
        client: MMClient,
        fence: Fence,
        *,
        max_concurrency: int,
        max_attempts: int,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.fence = fence
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.stop_event = stop_event or threading.Event()
        self._abort = threading.Event()
        self._config_error: str | None = None

    # -- one action ---------------------------------------------------------------------------
    def send(self, entry: JournalEntry) -> Outcome:
        """Call MM for one entry and classify what happened (never raises for MM errors)."""
        crashpoints.crash_point("dispatch.before_call")
        try:
            self._call(entry)
        except MMConflictError as exc:
            return self._recognise_conflict(entry, exc)
        except MMNotFoundError as exc:
            if entry.kind == "stop_run":
                return Outcome(
                    entry,
                    "succeeded",
                    "noop",
                    http_status=exc.http_status,
                    binding_status="stopped",
                    detail="MM has no such run, so there is nothing to stop",
                )
            return self._record_error(entry, exc)
        except MMRecordError as exc:
            return self._record_error(entry, exc)
        except MMConfigError as exc:
            return self.refused(entry, exc)
        except MMRetryableError as exc:
            return self.retry_later(entry, exc, exc.http_status)
        except Exception as exc:
            log.exception("mm call failed unexpectedly", action_id=entry.id, kind=entry.kind)
            return self.retry_later(entry, exc, None)
        crashpoints.crash_point("dispatch.after_call")
        return self.applied(entry)

    def _call(self, entry: JournalEntry) -> None:
        if entry.kind == "start_run":
            self.client.start_job_run(start_from_payload(entry.payload))
        elif entry.kind == "stop_run":
            self.client.stop_job_run(stop_from_payload(entry.payload))
        elif entry.kind == "import_jobs":
            self.client.import_jobs(
                base64.b64decode(entry.payload["csv_base64"]),
                import_type=entry.payload["type"],
                auto_archive=bool(entry.payload["autoArchive"]),
                filename=entry.payload.get("filename", "jobs.csv"),
            )
        else:
            raise ValueError(f"unknown action kind {entry.kind!r}")

    @staticmethod
    def applied(entry: JournalEntry, detail: str | None = None) -> Outcome:
        """The outcome of an action MM has applied (now, or before a crash)."""
        if entry.kind == "start_run":
            in_setup = bool(entry.payload.get("startInSetup"))
            return Outcome(
                entry,
                "succeeded",
                "succeeded",
                binding_status="running",
                in_setup=in_setup,
                mm_start_at=parse_timestamp(entry.payload.get("startAt")),
                detail=detail,
                after={"phase": "setup" if in_setup else "production"},
            )
        if entry.kind == "stop_run":
            return Outcome(
                entry,
                "succeeded",
                "succeeded",
                binding_status="stopped",
                mm_end_at=parse_timestamp(entry.payload.get("endAt")),
                detail=detail,
            )
        return Outcome(entry, "succeeded", "succeeded", detail=detail)

    def _recognise_conflict(self, entry: JournalEntry, exc: MMConflictError) -> Outcome:
        """409 on a start: MM holds our (deterministic) run id already. Read it, don't retry blindly."""
        try:
            run = self.client.get_job_run(entry.mm_run_id or "")
        except MMConfigError as read_exc:
            return self.refused(entry, read_exc)
        except MMError as read_exc:
            return self.retry_later(entry, read_exc, read_exc.http_status)
        if run is None:
            return self._record_error(entry, exc)
        outcome = self.applied(
            entry, detail="MM already holds this run (409 Conflict: started earlier with other job fields)"
        )
        outcome.http_status = 409
        if entry.kind == "start_run" and run.end_at is not None:
            outcome.binding_status = "stopped"
            outcome.mm_end_at = run.end_at
        return outcome

    def _record_error(self, entry: JournalEntry, exc: MMError) -> Outcome:
        rejected = None
        if entry.kind == "start_run" and (exc.code in MACHINE_REJECTED_CODES or "erpMachineId" in str(exc)):
            rejected = entry.payload.get("erpMachineId")
        return Outcome(
            entry,
            "quarantined",
            "quarantined",
            http_status=exc.http_status,
            error_class=type(exc).__name__,
            error_message=str(exc),
            quarantine=True,
            binding_status="failed" if entry.kind == "start_run" else None,
            rejected_machine=rejected,
        )

    def refused(self, entry: JournalEntry, exc: MMConfigError) -> Outcome:
        """401/403: not applied; the action stays pending and the whole round stops."""
        self._config_error = str(exc)
        self._abort.set()
        return Outcome(
            entry,
            "pending",
            "refused",
            http_status=exc.http_status,
            error_class=type(exc).__name__,
            error_message=str(exc),
            detail="not sent: MachineMetrics refused erpsync's credentials",
        )

    def retry_later(self, entry: JournalEntry, exc: BaseException, status: int | None) -> Outcome:
        """A transient failure: back off, or give up (quarantine) after max attempts."""
        if entry.attempts >= self.max_attempts:
            return Outcome(
                entry,
                "failed_permanent",
                "failed",
                http_status=status,
                error_class=type(exc).__name__,
                error_message=f"gave up after {entry.attempts} attempts: {exc}",
                quarantine=True,
                binding_status="failed" if entry.kind == "start_run" else None,
            )
        return Outcome(
            entry,
            "failed_retryable",
            "retrying",
            http_status=status,
            error_class=type(exc).__name__,
            error_message=str(exc),
            next_attempt_at=utcnow() + backoff(entry.attempts),
        )

    # -- many actions -------------------------------------------------------------------------
    def run(
        self,
        groups: Sequence[Sequence[JournalEntry]],
        sender: Callable[[JournalEntry], Outcome] | None = None,
    ) -> DispatchResult:
        """Run each group (one machine's actions) in order, groups concurrently; settle outcomes."""
        sender = sender or self.send
        result = DispatchResult()
        pending_outcomes: list[Outcome] = []
        last_settle = time.monotonic()
        unsent: list[JournalEntry] = []
        # finished groups arrive through a queue: waiting on the set of futures costs O(groups) per
        # wake-up, which with thousands of machines kept this thread busier than the senders
        finished: queue.SimpleQueue[Future[tuple[list[Outcome], list[JournalEntry]]]] = queue.SimpleQueue()
        with ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="dispatch") as pool:
            remaining = 0
            for group in groups:
                if group:
                    pool.submit(self._run_group, group, sender).add_done_callback(finished.put)
                    remaining += 1
            while remaining:
                done = []
                with suppress(queue.Empty):
                    done.append(finished.get(timeout=SETTLE_EVERY_SECONDS))
                    while True:
                        done.append(finished.get_nowait())
                for future in done:
                    outcomes, skipped = future.result()
                    pending_outcomes.extend(outcomes)
                    unsent.extend(skipped)
                remaining -= len(done)
                due = time.monotonic() - last_settle >= SETTLE_EVERY_SECONDS
                if pending_outcomes and (len(pending_outcomes) >= SETTLE_BATCH or due or not remaining):
                    self._settle(pending_outcomes, result)
                    pending_outcomes = []
                    last_settle = time.monotonic()
        if pending_outcomes:
            self._settle(pending_outcomes, result)
        if unsent:
            self._release(unsent)
            result.not_sent += len(unsent)
        result.config_error = self._config_error
        return result

    def _run_group(
        self, group: Sequence[JournalEntry], sender: Callable[[JournalEntry], Outcome]
    ) -> tuple[list[Outcome], list[JournalEntry]]:
        outcomes: list[Outcome] = []
        for index, entry in enumerate(group):
            if self._abort.is_set() or self.stop_event.is_set() or not self.fence.is_current():
                return outcomes, list(group[index:])
            outcomes.append(sender(entry))
        return outcomes, []

    def _settle(self, outcomes: list[Outcome], result: DispatchResult) -> None:
        with self.store.session() as session:
            settle(session, outcomes, fencing_token=self.fence.token)
        crashpoints.crash_point("dispatch.after_settle")
        for outcome in outcomes:
            result.count(outcome)
            ACTIONS.labels(kind=outcome.entry.kind, outcome=outcome.audit_outcome).inc()

    def _release(self, entries: Sequence[JournalEntry]) -> None:
        """Hand back claims on actions this round did not send, so the next cycle sends them."""
        with self.store.session() as session:
            session.execute(
                update(SyncAction)
                .where(SyncAction.id.in_([e.id for e in entries]), SyncAction.status == "pending")
                .values(next_attempt_at=None)
                .execution_options(synchronize_session=False)
            )


def raise_for_result(result: DispatchResult) -> None:
    """A config error (401/403) stops the cycle: every later call would be refused too."""
    if result.config_error:
        raise ConfigError(result.config_error)
