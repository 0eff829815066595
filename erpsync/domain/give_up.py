"""Settle only after reading: the answers whose outcome depends on what MM holds now.

Three answers must not be settled on their face (issue #15):

- **giving up**: after `sync.max_action_attempts` transient failures MM may still have applied the
  action (a ghost start: MM took it, every answer was lost). A start MM has is settled as done, a
  stop MM shows ended is settled; a start whose read fails too gives up with its binding
  ``unconfirmed`` (MM may have the run), so it is still stopped when the ERP run ends;
- **a 404 to a stop** is "nothing to stop" only when a read confirms MM has no such run; a run
  MM still shows open is not settled (the stop is sent again), an ended one is settled with MM's end;
- **a 409 to the setup -> production switch** is never a success: MM's get job run does not show the
  phase, so a read cannot confirm the switch; a run still open is quarantined for a person.

`needs_read` says when the dispatcher must read (service/dispatch.py), `outcome_after_read` what
the read makes of the answer, `refused_switch` the outcome of a switch MM refused. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from erpsync.domain.lifecycle import (
    LIVE_BINDING_STATUSES,
    ActionKind,
    ActionStatus,
    Answer,
    AuditOutcome,
    BindingStatus,
    BoundRun,
    JournaledAction,
    MMAnswer,
    MMRunState,
    Outcome,
    RequestFacts,
    outcome_of,
)

# answers a retry could still change: the ones an action gives up on at its maximum attempts
_SETTLED_ON_FACE = frozenset({Answer.APPLIED, Answer.HELD, Answer.NOT_FOUND, Answer.REJECTED, Answer.REFUSED})


@dataclass(frozen=True, slots=True)
class MMRead:
    """What MM's get job run said of an action's run, read before its answer is settled.

    ``state`` None: the read itself failed (``failure`` says why).
    """

    state: MMRunState | None
    end_at: datetime | None = None
    failure: str | None = None

    def says(self) -> str:
        if self.state is None:
            return f"MachineMetrics could not be read either ({self.failure or 'no answer'})"
        if self.state == "missing":
            return "a read shows MachineMetrics has no such run"
        if self.state == "ended":
            return f"a read shows the run ended in MachineMetrics at {self.end_at}"
        return "a read shows the run open in MachineMetrics"


def gives_up(action: JournaledAction, answer: MMAnswer, *, max_attempts: int) -> bool:
    """A transient failure on the action's last allowed attempt."""
    return answer.kind not in _SETTLED_ON_FACE and action.attempts >= max_attempts


def needs_read(action: JournaledAction, answer: MMAnswer, *, max_attempts: int) -> bool:
    """Whether MM must be read before ``answer`` is settled: a 404 to a stop, or giving up on a
    start or stop (an import has no run to read)."""
    if action.kind is ActionKind.IMPORT or not action.mm_run_id:
        return False
    if answer.kind is Answer.NOT_FOUND and action.kind is ActionKind.STOP:
        return True
    return gives_up(action, answer, max_attempts=max_attempts)


def outcome_after_read(
    action: JournaledAction,
    answer: MMAnswer,
    facts: RequestFacts,
    read: MMRead,
    *,
    switch: bool,
    max_attempts: int,
    now: datetime,
) -> Outcome:
    """The outcome of an answer `needs_read` held back, once MM was read.

    ``switch``: the action is the setup -> production switch of a run erpsync started in setup.
    """
    if answer.kind is Answer.NOT_FOUND and action.kind is ActionKind.STOP:
        if read.state == "missing":
            outcome = outcome_of(action, answer, facts, max_attempts=max_attempts, now=now)
            outcome.detail = "MM answered 404 and a read confirms it has no such run: nothing to stop"
            return outcome
        if read.state == "ended":
            held = MMAnswer(
                Answer.HELD,
                http_status=answer.http_status,
                run_end_at=read.end_at,
                detail=f"MM answered 404 to the stop, but {read.says()}: settled with MM's end",
            )
            return outcome_of(action, held, facts, max_attempts=max_attempts, now=now)
        # MM still shows it open, or could not say: not settled, the stop is sent again
        answer = MMAnswer(
            Answer.TRANSIENT,
            http_status=answer.http_status,
            error_class=answer.error_class,
            message=f"MM answered 404 to the stop, but {read.says()}; not settled: the stop is sent again",
        )
    if not gives_up(action, answer, max_attempts=max_attempts):
        return outcome_of(action, answer, facts, max_attempts=max_attempts, now=now)
    return _given_up(action, answer, facts, read, switch=switch, max_attempts=max_attempts, now=now)


def _given_up(
    action: JournaledAction,
    answer: MMAnswer,
    facts: RequestFacts,
    read: MMRead,
    *,
    switch: bool,
    max_attempts: int,
    now: datetime,
) -> Outcome:
    """The last attempt failed: settle what MM has, give up on the rest."""
    tried = f"after {action.attempts} failed attempts ({answer.message})"
    start = action.kind is ActionKind.START
    if read.state == "ended" or (read.state == "open" and start and not switch):
        what = "MM has the run" if start else "MM shows the run ended"
        held = MMAnswer(
            Answer.HELD,
            http_status=answer.http_status,
            run_end_at=read.end_at,
            detail=f"settled by a read {tried}: {what}" + (" (ended)" if start and read.end_at else ""),
        )
        outcome = outcome_of(action, held, facts, max_attempts=max_attempts, now=now)
        outcome.after = {**(outcome.after or {}), "settled_by": "read"}
        return outcome
    if switch and read.state == "open":
        return refused_switch(action, answer, read)
    if read.state == "missing" and not start:
        outcome = outcome_of(
            action, replace(answer, kind=Answer.NOT_FOUND), facts, max_attempts=max_attempts, now=now
        )
        outcome.detail = f"settled by a read {tried}: MM has no such run, so there is nothing to stop"
        outcome.after = {"settled_by": "read"}
        return outcome
    outcome = outcome_of(action, answer, facts, max_attempts=max_attempts, now=now)
    outcome.error_message = f"gave up after {action.attempts} attempts: {answer.message}; {read.says()}"
    if start:
        # missing: MM confirms it has nothing; unread: MM may have it, so it is still stopped later.
        # A switch's run is MM's in setup either way: its binding stays as it is.
        outcome.binding_status = (
            None if switch else BindingStatus.FAILED if read.state == "missing" else BindingStatus.UNCONFIRMED
        )
        if outcome.binding_status is BindingStatus.UNCONFIRMED:
            outcome.detail = (
                "gave up; MachineMetrics may have the run: it is not started again, "
                "and stopped when the ERP run ends"
            )
    return outcome


def refused_switch(action: JournaledAction, answer: MMAnswer, read: MMRead) -> Outcome:
    """A switch to production MM refused or never confirmed while the run is open: a person checks.

    The binding stays running and in setup; the switch's key stays in the journal, so it is not
    journaled (or sent) again by later cycles until `erpsync quarantine retry` re-arms it.
    """
    refused = answer.http_status == 409
    why = (
        "MachineMetrics refused the switch to production (409)"
        if refused
        else f"The switch to production failed {action.attempts} times ({answer.message})"
    )
    message = (
        f"{why} and its state cannot confirm it ({read.says()}; MM does not show the phase); "
        f"check the run in MachineMetrics, then `erpsync quarantine retry <id>`"
    )
    return Outcome(
        action,
        ActionStatus.QUARANTINED,
        AuditOutcome.QUARANTINED,
        http_status=answer.http_status,
        error_class=answer.error_class,
        error_message=message,
        detail="switch to production not confirmed: the run stays in setup until a person checks",
        quarantine=True,
    )


def is_switch(action: JournaledAction, facts: RequestFacts, bound: BoundRun | None) -> bool:
    """A start is the setup -> production switch when it asks for production of a run whose live
    binding says erpsync started it in setup (a first start, in either phase, is not)."""
    return (
        action.kind is ActionKind.START
        and not facts.in_setup
        and bound is not None
        and bound.in_setup
        and bound.status in LIVE_BINDING_STATUSES
    )
