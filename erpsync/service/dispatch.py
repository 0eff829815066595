"""Send journaled actions to MachineMetrics and settle each one's outcome.

Machines run concurrently (bounded by `mm.max_concurrency`); each machine's actions run in order,
so an old run is stopped before the next one starts. Outcomes are committed in small batches by
the calling thread: a crash before a batch commits leaves those actions `pending`, and the next
cycle settles them by reading MM first (service/recovery.py). Nothing is ever sent twice blindly.
"""

from __future__ import annotations

import base64
import enum
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Literal

import structlog

from erpsync.adapters.mm.answers import answer_of, unexpected
from erpsync.adapters.mm.errors import MMConflictError, MMError
from erpsync.adapters.mm.mapper import request_facts, start_from_payload, stop_from_payload
from erpsync.adapters.mm.schemas import JobFile, JobRun
from erpsync.domain.clock import utcnow
from erpsync.domain.errors import ConfigError
from erpsync.domain.give_up import MMRead, is_switch, needs_read, outcome_after_read, refused_switch
from erpsync.domain.lifecycle import (
    ActionKind,
    ActionStatus,
    Answer,
    JournaledAction,
    MMAnswer,
    Outcome,
    RequestFacts,
    outcome_of,
)
from erpsync.observability import crashpoints
from erpsync.observability.metrics import ACTIONS
from erpsync.service.ports import Fence, MachineMetrics, UnitOfWorkFactory

log = structlog.get_logger(__name__)

SETTLE_BATCH = 100
SETTLE_EVERY_SECONDS = 0.25


class _Unread(enum.Enum):
    UNREAD = "unread"


UNREAD = _Unread.UNREAD  # `Dispatcher.answered`: MM was not read for this answer yet
# a read of an action's run: MM's run, None (MM has no such run), the answer of a failed read, or UNREAD
RunRead = JobRun | MMAnswer | None | Literal[_Unread.UNREAD]


def mm_read(run: JobRun | MMAnswer | None) -> MMRead:
    """A get job run's result as the domain reads it (domain/give_up.py)."""
    if isinstance(run, MMAnswer):
        return MMRead(None, failure=run.message)
    if run is None:
        return MMRead("missing")
    return MMRead("ended" if run.end_at is not None else "open", end_at=run.end_at)


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
    # the error of the last action left retrying or given up: what a person reads first (it names
    # MM's URL when MM could not be reached)
    last_error: str | None = None

    def count(self, outcome: Outcome) -> None:
        if outcome.status is ActionStatus.SUCCEEDED:
            self.succeeded += 1
            self.by_kind[outcome.action.kind] = self.by_kind.get(outcome.action.kind, 0) + 1
            return
        if outcome.status is ActionStatus.FAILED_RETRYABLE:
            self.retrying += 1
        elif outcome.status is ActionStatus.QUARANTINED:
            self.quarantined += 1
            return
        elif outcome.status is ActionStatus.FAILED_PERMANENT:
            self.failed += 1
        else:
            self.not_sent += 1
        self.last_error = outcome.error_message or outcome.detail or self.last_error

    def merge(self, other: DispatchResult) -> None:
        self.succeeded += other.succeeded
        self.retrying += other.retrying
        self.quarantined += other.quarantined
        self.failed += other.failed
        self.not_sent += other.not_sent
        for kind, n in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n
        self.config_error = self.config_error or other.config_error
        self.last_error = other.last_error or self.last_error


@dataclass(eq=False)
class Dispatcher:
    """Executes journal entries against MM with the error table of the product."""

    uow: UnitOfWorkFactory
    mm: MachineMetrics
    fence: Fence
    _: KW_ONLY
    max_concurrency: int
    max_attempts: int
    stop_event: threading.Event = field(default_factory=threading.Event)
    _abort: threading.Event = field(default_factory=threading.Event, init=False)
    _config_error: str | None = field(default=None, init=False)

    # -- one action ---------------------------------------------------------------------------
    def send(self, action: JournaledAction, *, missing: bool = False) -> Outcome:
        """Call MM for one action and read its answer (never raises for MM errors).

        ``missing``: a read just before this call found no such run (recovery), so a stop's 404 is
        settled on that read, without a second one (a stop cannot make a run; a start can, so its
        failure is read again).
        """
        crashpoints.crash_point("dispatch.before_call")
        try:
            self._call(action)
        except MMConflictError as exc:
            return self._recognise_conflict(action, exc)
        except MMError as exc:
            known = missing and action.kind is ActionKind.STOP
            return self.answered(action, answer_of(exc), read=None if known else UNREAD)
        except Exception as exc:
            log.exception("mm call failed unexpectedly", action_id=action.id, kind=action.kind)
            return self.answered(action, unexpected(exc))
        crashpoints.crash_point("dispatch.after_call")
        return self.answered(action, MMAnswer(Answer.APPLIED))

    def answered(self, action: JournaledAction, answer: MMAnswer, *, read: RunRead = UNREAD) -> Outcome:
        """The action's outcome for MM's answer (domain/lifecycle.py); a refusal stops the round.

        An answer that cannot be settled on its face (a 404 to a stop, the last attempt's failure:
        domain/give_up.py) is settled only after reading MM: ``read`` is a read already made (a
        failed one, or "missing"), else MM is read now.
        """
        if answer.kind is Answer.REFUSED:
            self._config_error = answer.message
            self._abort.set()
        facts = request_facts(action.payload)
        if not needs_read(action, answer, max_attempts=self.max_attempts):
            return outcome_of(action, answer, facts, max_attempts=self.max_attempts, now=utcnow())
        if read is UNREAD:
            read = self.read_run(action)
        if isinstance(read, MMAnswer) and read.kind is Answer.REFUSED:
            return self.answered(action, read)  # credentials refused: the round stops, still due
        return outcome_after_read(
            action,
            answer,
            facts,
            mm_read(read),
            switch=self._is_switch(action, facts),
            max_attempts=self.max_attempts,
            now=utcnow(),
        )

    def read_run(self, action: JournaledAction) -> JobRun | MMAnswer | None:
        """MM's run for this action, or the answer to give when it could not be read (retry later)."""
        try:
            return self.mm.get_job_run(action.mm_run_id or "")
        except MMError as exc:
            answer = answer_of(exc)
            return answer if answer.kind is Answer.REFUSED else replace(answer, kind=Answer.TRANSIENT)

    def _is_switch(self, action: JournaledAction, facts: RequestFacts) -> bool:
        """Whether a production start is the switch of a run erpsync started in setup: its binding
        says so (read only for the rare answers that need it: a 409, a give-up)."""
        if action.kind is not ActionKind.START or facts.in_setup or action.ref is None:
            return False
        with self.uow() as uow:
            bound = uow.bindings.by_keys(action.ref.source, [action.ref.run_key]).get(action.ref.run_key)
        return is_switch(action, facts, bound)

    def _call(self, action: JournaledAction) -> None:
        payload = action.payload
        if action.kind is ActionKind.START:
            self.mm.start_job_run(start_from_payload(payload))
        elif action.kind is ActionKind.STOP:
            self.mm.stop_job_run(stop_from_payload(payload))
        else:
            self.mm.import_jobs(
                JobFile(
                    base64.b64decode(payload["csv_base64"]),
                    import_type=payload["type"],
                    auto_archive=bool(payload["autoArchive"]),
                    filename=payload.get("filename", "jobs.csv"),
                )
            )

    def _recognise_conflict(self, action: JournaledAction, exc: MMConflictError) -> Outcome:
        """409 on a start: MM holds our (deterministic) run id already. Read it, don't retry blindly.

        A first start MM holds is settled as held. A 409 to the setup -> production switch is never
        a success: MM's run does not show its phase, so an open run is quarantined for a person,
        an ended one settled as ended, a missing one retried.
        """
        run = self.read_run(action)
        if isinstance(run, MMAnswer):
            return self.answered(action, run, read=run)
        facts = request_facts(action.payload)
        if self._is_switch(action, facts):
            refused = answer_of(exc)
            if run is None:
                lost = replace(
                    refused,
                    kind=Answer.TRANSIENT,
                    message=f"MM refused the switch to production (409) but has no such run; retried: {exc}",
                )
                return self.answered(action, lost, read=None)
            if run.end_at is None:
                return refused_switch(action, refused, mm_read(run))
            ended = MMAnswer(
                Answer.HELD,
                http_status=409,
                run_end_at=run.end_at,
                detail="MM refused the switch to production (409): the run had ended; settled as ended",
            )
            return self.answered(action, ended)
        if run is None:
            return self.answered(action, answer_of(exc))
        held = MMAnswer(
            Answer.HELD,
            http_status=409,
            detail="MM already holds this run (409 Conflict: started earlier with other job fields)",
            run_end_at=run.end_at if action.kind is ActionKind.START else None,
        )
        return self.answered(action, held)

    # -- many actions -------------------------------------------------------------------------
    def run(
        self,
        groups: Sequence[Sequence[JournaledAction]],
        sender: Callable[[JournaledAction], Outcome] | None = None,
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
        todo: deque[Sequence[JournaledAction]],
        board: _Board,
        sender: Callable[[JournaledAction], Outcome],
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
        self, group: Sequence[JournaledAction], sender: Callable[[JournaledAction], Outcome]
    ) -> tuple[list[Outcome], list[JournaledAction]]:
        outcomes: list[Outcome] = []
        for index, entry in enumerate(group):
            if self._abort.is_set() or self.stop_event.is_set() or not self.fence.is_current():
                return outcomes, list(group[index:])
            outcomes.append(sender(entry))
        return outcomes, []

    def _settle(self, outcomes: list[Outcome], result: DispatchResult) -> None:
        with self.uow() as uow:
            written = uow.actions.settle(outcomes, fencing_token=self.fence.token)
        crashpoints.crash_point("dispatch.after_settle")
        if len(written) < len(outcomes):
            settled_before = sorted({o.action.id for o in outcomes} - {o.action.id for o in written})
            log.warning(
                "outcomes dropped: another leader term had settled these actions first",
                action_ids=settled_before,
            )
        for outcome in written:
            result.count(outcome)
            ACTIONS.labels(kind=outcome.action.kind, outcome=outcome.audit).inc()

    def _release(self, entries: Sequence[JournaledAction]) -> None:
        """Hand back claims on actions this round did not send, so the next cycle sends them."""
        with self.uow() as uow:
            uow.actions.release([e.id for e in entries])


class _Board:
    """Where sender threads leave outcomes for the settling thread, which is woken only for a batch."""

    def __init__(self, groups: int) -> None:
        self._ready = threading.Condition()
        self._outcomes: list[Outcome] = []
        self._groups_left = groups
        self._error: BaseException | None = None
        self.unsent: list[JournaledAction] = []
        self.stopped = False

    def add(self, outcomes: list[Outcome], unsent: list[JournaledAction]) -> None:
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
