"""Send journaled actions to MachineMetrics and settle each one's outcome.

Machines run concurrently (bounded by `mm.max_concurrency`); each machine's actions run in order,
so an old run is stopped before the next one starts. Outcomes are committed in small batches by
the calling thread: a crash before a batch commits leaves those actions `pending`, and the next
cycle settles them by reading MM first (service/recovery.py). Nothing is ever sent twice blindly.
"""

from __future__ import annotations

import base64
import threading
from collections import deque
from collections.abc import Callable, Sequence
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
from erpsync.observability import crashpoints
from erpsync.observability.metrics import ACTIONS
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
        """Run each group (one machine's actions) in order, groups concurrently; settle outcomes.

        ``max_concurrency`` sender threads take groups off one queue; this thread settles their
        outcomes in batches. It sleeps until a batch is full, ``SETTLE_EVERY_SECONDS`` passed or
        every group is done, not once per finished group: with thousands of one-run machines, a
        wake-up per group kept the GIL from the senders (bench/campaign.py, new-runs).
        """
        sender = sender or self.send
        result = DispatchResult()
        todo = deque(group for group in groups if group)
        board = _Board(len(todo))
        senders = [
            threading.Thread(target=self._drain, args=(todo, board, sender), name=f"dispatch_{n}")
            for n in range(min(self.max_concurrency, len(todo)))
        ]
        for thread in senders:
            thread.start()
        try:
            done = not senders
            while not done:
                outcomes, done = board.take(SETTLE_EVERY_SECONDS)
                if outcomes:
                    self._settle(outcomes, result)
        finally:
            board.stop()  # a failed settle (or a crash in a sender) sends nothing more
            for thread in senders:
                thread.join()
        if board.unsent:
            self._release(board.unsent)
            result.not_sent += len(board.unsent)
        result.config_error = self._config_error
        return result

    def _drain(
        self,
        todo: deque[Sequence[JournalEntry]],
        board: _Board,
        sender: Callable[[JournalEntry], Outcome],
    ) -> None:
        """One sender thread: run groups until none is left or the round stops."""
        try:
            while not board.stopped:
                try:
                    group = todo.popleft()
                except IndexError:
                    return
                outcomes, skipped = self._run_group(group, sender)
                board.add(outcomes, skipped)
        except BaseException as exc:  # handed to the settling thread, which re-raises it
            board.fail(exc)

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
            written = settle(session, outcomes, fencing_token=self.fence.token)
        crashpoints.crash_point("dispatch.after_settle")
        if len(written) < len(outcomes):
            settled_before = sorted({o.entry.id for o in outcomes} - {o.entry.id for o in written})
            log.warning(
                "outcomes dropped: another leader term had settled these actions first",
                action_ids=settled_before,
            )
        for outcome in written:
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


class _Board:
    """Where sender threads leave outcomes for the settling thread, which is woken only for a batch."""

    def __init__(self, groups: int) -> None:
        self._ready = threading.Condition()
        self._outcomes: list[Outcome] = []
        self._groups_left = groups
        self._error: BaseException | None = None
        self.unsent: list[JournalEntry] = []
        self.stopped = False

    def add(self, outcomes: list[Outcome], unsent: list[JournalEntry]) -> None:
        """A finished group: its outcomes, and the entries it did not send (stop, fence, abort)."""
        with self._ready:
            self._outcomes.extend(outcomes)
            self.unsent.extend(unsent)
            self._groups_left -= 1
            if len(self._outcomes) >= SETTLE_BATCH or not self._groups_left:
                self._ready.notify()

    def fail(self, error: BaseException) -> None:
        with self._ready:
            self._error = self._error or error
            self.stopped = True
            self._ready.notify()

    def stop(self) -> None:
        self.stopped = True

    def take(self, timeout: float) -> tuple[list[Outcome], bool]:
        """Wait for a full batch, the last group or `timeout`; (outcomes, all groups done).

        Re-raises a sender thread's error, so the round fails as it would have in that thread.
        """
        with self._ready:
            self._ready.wait_for(
                lambda: len(self._outcomes) >= SETTLE_BATCH or not self._groups_left or self._error,
                timeout,
            )
            if self._error is not None:
                raise self._error
            outcomes, self._outcomes = self._outcomes, []
            return outcomes, not self._groups_left


def raise_for_result(result: DispatchResult) -> None:
    """A config error (401/403) stops the cycle: every later call would be refused too."""
    if result.config_error:
        raise ConfigError(result.config_error)
