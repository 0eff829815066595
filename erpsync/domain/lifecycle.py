"""An action's life and a binding's life, in one place: statuses, what they mean, how they move.

Every flow that touches an MM run goes through these shapes:

- a `RunRef` names the ERP run and the MM run erpsync made for it (column limits applied once);
- a planned action (domain/plan.py: `StartAction`, `StopAction`, `ImportAction`) is journaled
  as a `JournaledAction` (intent first);
- MM's answer to it becomes an `Outcome` (`outcome_of`), which says the action's next
  `ActionStatus`, the `AuditOutcome` written for it and the binding's next `BindingStatus`.

A binding (`BoundRun`) moves three ways, each a pure function here: when an action is journaled
(`bound_after_intent`), when a flag is recorded (`bound_after_flag`) and when an outcome is
settled (`bound_after`). The state adapters write the same changes as SQL.

The status tables below are the only place that says which statuses are live, open in MM, due
or final; the SQL adapters and the in-memory fakes read them from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from erpsync.domain.columns import fit_id, fit_name

if TYPE_CHECKING:  # plan.py builds on this module; only its types are named here
    from erpsync.domain.plan import Flag, RunAction

# Column limits of the state tables (adapters/state/tables.py); domain/columns.py fits values to them.
SOURCE_MAX = 64
RUN_KEY_MAX = 255
MM_RUN_ID_MAX = 255
JOB_MAX = 255
OPERATION_MAX = 64
MACHINE_MAX = 64
MM_MACHINE_MAX = 255
REASON_MAX = 255

MMRunState = Literal["missing", "open", "ended"]


class ActionKind(enum.StrEnum):
    """What the dispatcher does; the values are the journal's ``kind`` column."""

    START = "start_run"
    STOP = "stop_run"
    IMPORT = "import_jobs"


class ActionStatus(enum.StrEnum):
    """A journaled action's status (``erpsync_action.status``)."""

    PENDING = "pending"  # journaled, claimed or in doubt: not settled yet
    FAILED_RETRYABLE = "failed_retryable"  # a transient failure; due again after its backoff
    SUCCEEDED = "succeeded"
    FAILED_PERMANENT = "failed_permanent"  # gave up after the maximum attempts
    QUARANTINED = "quarantined"  # MM refused the record; a person decides


class BindingStatus(enum.StrEnum):
    """A run binding's status (``erpsync_run_binding.status``): what erpsync told MM of the run.

    To the reconcile rules (domain/reconcile.py): starting/running are live (managed); stopping
    needs nothing more; stopped and failed are terminal (only `erpsync resync` starts them again);
    vanished and unconfirmed are terminal for starts, but still stopped when the ERP reports the
    run ended, a new run takes its machine, or (vanished) the policy becomes "stop" / (unconfirmed)
    the ERP loses the run.
    """

    STARTING = "starting"  # the start is journaled
    RUNNING = "running"  # MM has the run open
    STOPPING = "stopping"  # the stop is journaled
    STOPPED = "stopped"
    VANISHED = "vanished"  # the ERP lost the run; left open in MM by policy "flag"
    FAILED = "failed"  # MM refused the start, or erpsync gave up on it and a read found no run
    # erpsync gave up on the start and could not read MM either: MM may have the run open
    UNCONFIRMED = "unconfirmed"


class AuditOutcome(enum.StrEnum):
    """``erpsync_audit.outcome`` of an MM action (write-back and flags have their own words)."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    REFUSED = "refused"  # MM refused erpsync's credentials: nothing was applied
    NOOP = "noop"  # nothing to do in MM (a stop of a run MM does not have)
    FLAGGED = "flagged"


# -- the status tables ------------------------------------------------------------------------
DUE_ACTION_STATUSES = frozenset({ActionStatus.PENDING, ActionStatus.FAILED_RETRYABLE})
FINAL_ACTION_STATUSES = frozenset(
    {ActionStatus.SUCCEEDED, ActionStatus.FAILED_PERMANENT, ActionStatus.QUARANTINED}
)
# the run is open in MM, or its start is journaled: the reconciler manages it
LIVE_BINDING_STATUSES = frozenset({BindingStatus.STARTING, BindingStatus.RUNNING})
# MM may have the run open (a vanished run is left open by policy; an unconfirmed start may have
# reached MM): a new run on its machine stops it first
MM_OPEN_BINDING_STATUSES = frozenset(
    {*LIVE_BINDING_STATUSES, BindingStatus.VANISHED, BindingStatus.UNCONFIRMED}
)
# erpsync has a start or stop in flight or done that is not final: MM may change under it (its
# ERP run is looked up when a read no longer returns it, so it is stopped at the ERP's end)
OPEN_BINDING_STATUSES = frozenset({*LIVE_BINDING_STATUSES, BindingStatus.STOPPING, BindingStatus.UNCONFIRMED})
# what a sync cycle always loads: everything MM may still have open
RECONCILE_BINDING_STATUSES = frozenset({*OPEN_BINDING_STATUSES, BindingStatus.VANISHED})
# never started again by a sync (`erpsync resync` does that)
TERMINAL_BINDING_STATUSES = frozenset(
    {BindingStatus.STOPPED, BindingStatus.VANISHED, BindingStatus.FAILED, BindingStatus.UNCONFIRMED}
)
# write-back reads counts of these runs every cycle, and of ended ones within the settle window
# (an unconfirmed run is counted once it is stopped: MM may not have it, a read would find nothing)
COUNTING_BINDING_STATUSES = frozenset({BindingStatus.RUNNING, BindingStatus.STOPPING})
ENDED_BINDING_STATUSES = frozenset({BindingStatus.STOPPED, BindingStatus.VANISHED})


# how each RunRef field is fitted to its column: identities keep a hash suffix, names a marker
_REF_FIELDS = (
    ("source", SOURCE_MAX, fit_id),
    ("run_key", RUN_KEY_MAX, fit_id),
    ("mm_run_id", MM_RUN_ID_MAX, fit_id),
    ("job", JOB_MAX, fit_name),
    ("operation", OPERATION_MAX, fit_name),
    ("machine", MACHINE_MAX, fit_id),
)


@dataclass(frozen=True, slots=True)
class RunRef:
    """One ERP run and the MM run erpsync made for it, fitted to the state tables' columns.

    Fitted once here (domain/columns.py): the run key and machine keep a stable hash suffix (two
    long ones never collide), job and operation are cut with a marker. ``origin`` says where the
    ERP row is (``file:line``, a ticket); it is not stored in a column, only carried in memory to
    the quarantine entry of a run MM refuses.
    """

    source: str
    run_key: str
    mm_run_id: str
    job: str = ""
    operation: str = ""
    machine: str = ""
    origin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name, limit, fit in _REF_FIELDS:
            value = getattr(self, name)
            if value is None or len(value) > limit:
                object.__setattr__(self, name, fit(value or "", limit))


@dataclass(frozen=True, slots=True)
class BoundRun:
    """A run binding (``erpsync_run_binding``) as the planner reads it: an ERP run, the MM run
    erpsync started for it and what erpsync last told MM of it."""

    run_key: str
    mm_run_id: str
    erp_machine: str
    mm_machine_id: str
    status: BindingStatus
    in_setup: bool
    payload_hash: str | None
    erp_start_at: datetime | None = None
    erp_end_at: datetime | None = None
    job: str = ""
    operation: str = ""
    mm_end_at: datetime | None = None  # when MM's run ended (a next generation starts after it)
    # The resync generation of the MM run this binding tracks ("" for the first one). Every later
    # key for it carries this, so after a resync re-started the run (with keys ``@<generation>``)
    # its next stop or switch gets a fresh key, not one the journal already holds.
    generation: str = ""

    def ref(self, source: str) -> RunRef:
        return RunRef(source, self.run_key, self.mm_run_id, self.job, self.operation, self.erp_machine)


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """What an action asks of MM, the same before it is journaled (`Intent`) and after
    (`JournaledAction`). ``payload`` is the exact MM request body (adapters/mm/mapper.py makes
    and reads it); ``ref`` is None for a job import."""

    idempotency_key: str
    kind: ActionKind
    source: str | None
    ref: RunRef | None
    reason: str
    payload: dict[str, Any]

    @property
    def mm_run_id(self) -> str | None:
        return self.ref.mm_run_id if self.ref is not None else None


@dataclass(frozen=True, slots=True)
class JournaledAction(ActionRequest):
    """One journaled action (``erpsync_action``), with everything needed to (re)send it: a crash
    leftover is re-sent from its payload without re-reading the ERP."""

    id: int
    attempts: int
    fencing_token: int | None = None


@dataclass(frozen=True, slots=True)
class Intent(ActionRequest):
    """An action about to be journaled, with the binding change that goes with it."""

    new_binding: dict[str, Any] | None = None  # insert when the run has no binding yet
    binding_status: BindingStatus | None = None  # status to give an existing binding
    binding_values: dict[str, Any] | None = None  # other columns of an existing binding to set
    generation: str | None = None  # a resync generation the existing binding's keys now carry


@dataclass(frozen=True, slots=True)
class JournalStamp:
    """What every action of one journaled batch carries: its fence, its cause and its first claim."""

    fencing_token: int | None
    correlation_id: str | None
    trigger: str | None
    claim_until: datetime  # the first attempt holds the action until then


@dataclass(slots=True)
class Outcome:
    """How one action ended this attempt, and what that does to its binding and the audit."""

    action: JournaledAction
    status: ActionStatus
    audit: AuditOutcome
    http_status: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    next_attempt_at: datetime | None = None
    binding_status: BindingStatus | None = None
    mm_start_at: datetime | None = None
    mm_end_at: datetime | None = None
    in_setup: bool | None = None
    rejected_machine: str | None = None  # an MM machine id MM refused (runs on it are quarantined)
    detail: str | None = None
    after: dict[str, Any] | None = None
    quarantine: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.status in FINAL_ACTION_STATUSES


def backoff(attempts: int, initial: float = 5.0, cap: float = 600.0) -> timedelta:
    """Exponential backoff between cycles for an action that keeps failing transiently."""
    return timedelta(seconds=min(cap, initial * (2 ** max(0, attempts - 1))))


# -- MM's answer to an action, and what it makes of the action ------------------------------------
class Answer(enum.StrEnum):
    """MM's answer to one call, as the lifecycle needs it (adapters/mm/errors.py has the table)."""

    APPLIED = "applied"  # MM did it now
    HELD = "held"  # MM already had it (a 409 read back, or found by a read after a crash)
    NOT_FOUND = "not_found"  # 404: MM does not know the run
    REJECTED = "rejected"  # MM refused the record (400/404/409/422): a person must look
    REFUSED = "refused"  # 401/403: MM refused erpsync's credentials; nothing was applied
    TRANSIENT = "transient"  # timeouts, 5xx, 429 after retries, or an unforeseen failure


@dataclass(frozen=True, slots=True)
class MMAnswer:
    kind: Answer
    http_status: int | None = None
    error_class: str | None = None
    message: str | None = None
    machine_rejected: bool = False  # REJECTED: MM does not know the machine id
    run_end_at: datetime | None = None  # HELD: MM's run has ended at this time
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a journaled request asked of MM (read from its body by adapters/mm/mapper.py)."""

    in_setup: bool | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    mm_machine_id: str | None = None


def outcome_of(
    action: JournaledAction, answer: MMAnswer, facts: RequestFacts, *, max_attempts: int, now: datetime
) -> Outcome:
    """The action's outcome for MM's answer: next action status, audit outcome, binding change."""
    kind = answer.kind
    start = action.kind is ActionKind.START
    if kind is Answer.NOT_FOUND and action.kind is ActionKind.STOP:
        return Outcome(
            action,
            ActionStatus.SUCCEEDED,
            AuditOutcome.NOOP,
            http_status=answer.http_status,
            binding_status=BindingStatus.STOPPED,
            detail="MM has no such run, so there is nothing to stop",
        )
    if kind in (Answer.APPLIED, Answer.HELD):
        return _applied(action, answer, facts)
    if kind in (Answer.REJECTED, Answer.NOT_FOUND):
        return _failed(
            action,
            answer,
            ActionStatus.QUARANTINED,
            AuditOutcome.QUARANTINED,
            quarantine=True,
            binding_status=BindingStatus.FAILED if start else None,
            rejected_machine=facts.mm_machine_id if start and answer.machine_rejected else None,
        )
    if kind is Answer.REFUSED:
        return _failed(
            action,
            answer,
            ActionStatus.PENDING,
            AuditOutcome.REFUSED,
            detail="not sent: MachineMetrics refused erpsync's credentials",
        )
    if action.attempts >= max_attempts:
        return _failed(
            action,
            answer,
            ActionStatus.FAILED_PERMANENT,
            AuditOutcome.FAILED,
            error_message=f"gave up after {action.attempts} attempts: {answer.message}",
            quarantine=True,
            binding_status=BindingStatus.FAILED if start else None,
        )
    return _failed(
        action,
        answer,
        ActionStatus.FAILED_RETRYABLE,
        AuditOutcome.RETRYING,
        next_attempt_at=now + backoff(action.attempts),
    )


def _failed(
    action: JournaledAction, answer: MMAnswer, status: ActionStatus, audit: AuditOutcome, **changes: Any
) -> Outcome:
    """An outcome that carries MM's error (its HTTP status, class and message unless given)."""
    changes.setdefault("error_message", answer.message)
    return Outcome(
        action, status, audit, http_status=answer.http_status, error_class=answer.error_class, **changes
    )


def _applied(action: JournaledAction, answer: MMAnswer, facts: RequestFacts) -> Outcome:
    """MM has the action's effect (now, or from before a crash)."""
    outcome = Outcome(
        action,
        ActionStatus.SUCCEEDED,
        AuditOutcome.SUCCEEDED,
        http_status=answer.http_status,
        detail=answer.detail,
    )
    if action.kind is ActionKind.START:
        in_setup = bool(facts.in_setup)
        outcome.binding_status = BindingStatus.RUNNING
        outcome.in_setup = in_setup
        outcome.mm_start_at = facts.start_at
        outcome.after = {"phase": "setup" if in_setup else "production"}
        if answer.kind is Answer.HELD and answer.run_end_at is not None:
            outcome.binding_status = BindingStatus.STOPPED
            outcome.mm_end_at = answer.run_end_at
    elif action.kind is ActionKind.STOP:
        outcome.binding_status = BindingStatus.STOPPED
        outcome.mm_end_at = answer.run_end_at if answer.kind is Answer.HELD else facts.end_at
        outcome.mm_end_at = outcome.mm_end_at or facts.end_at
    return outcome


# -- how a binding moves ----------------------------------------------------------------------
def bound_after_intent(bound: BoundRun | None, action: RunAction) -> BoundRun:
    """The binding once ``action`` is journaled (intent first, before MM is called).

    A start of a run without a binding creates it ``starting``; a start of a bound run (a switch,
    a resync's restart) records the machine, fingerprint and start time sent now and keeps the
    status until MM answers; a stop makes it ``stopping``. A resync generation is kept from then on.
    """
    if action.kind is ActionKind.STOP:
        if bound is None:
            raise ValueError(f"a stop of {action.mm_run_id} needs its binding")
        return replace(bound, status=BindingStatus.STOPPING, generation=action.generation or bound.generation)
    ref, run = action.ref, action.run
    if bound is None:
        return BoundRun(
            run_key=ref.run_key,
            mm_run_id=ref.mm_run_id,
            erp_machine=ref.machine,
            mm_machine_id=action.mm_machine_id,
            status=BindingStatus.STARTING,
            in_setup=action.in_setup,
            payload_hash=action.payload_hash,
            erp_start_at=run.start_at,
            erp_end_at=run.end_at,
            job=ref.job,
            operation=ref.operation,
            generation=action.generation,
        )
    return replace(
        bound,
        erp_machine=ref.machine,
        mm_machine_id=action.mm_machine_id,
        payload_hash=action.payload_hash,
        erp_start_at=run.start_at,
        generation=action.generation or bound.generation,
    )


def bound_after_flag(bound: BoundRun, flag: Flag) -> BoundRun:
    """The binding once ``flag`` is recorded: it remembers the flag, so it is raised once."""
    changes: dict[str, Any] = {}
    if flag.binding_status:
        changes["status"] = flag.binding_status
    if flag.payload_hash:
        changes["payload_hash"] = flag.payload_hash
    if flag.generation:
        changes["generation"] = flag.generation
    if flag.binding_status and flag.mm_end_at:
        changes["mm_end_at"] = flag.mm_end_at
    return replace(bound, **changes) if changes else bound


def bound_after(bound: BoundRun, outcome: Outcome) -> BoundRun:
    """The binding once ``outcome`` is settled: what the outcome knows replaces, None keeps.

    (MM's start and end times are settled on the binding row too; the planner does not read them.)
    """
    changes: dict[str, Any] = {}
    if outcome.binding_status is not None:
        changes["status"] = outcome.binding_status
    if outcome.in_setup is not None:
        changes["in_setup"] = outcome.in_setup
    return replace(bound, **changes) if changes else bound


class Recovery(enum.StrEnum):
    """What to do with an action left in doubt, once MM was asked what it has."""

    SETTLE = "settle"  # MM has its effect: record the outcome, send nothing
    SEND = "send"  # MM lacks it (or a read cannot tell): send it again, MM is idempotent by run id


def recovery_step(action: JournaledAction, mm_run: MMRunState | None, facts: RequestFacts) -> Recovery:
    """Read-before-resend: settle an action MM already applied, re-send one it lacks.

    A production switch (a start with ``startInSetup=false`` on a run MM has) cannot be told
    apart by a read, so it is re-sent: MM treats an identical start as a no-op.
    """
    if action.kind is ActionKind.START:
        return (
            Recovery.SETTLE
            if mm_run is not None and mm_run != "missing" and facts.in_setup
            else Recovery.SEND
        )
    if action.kind is ActionKind.STOP:
        return Recovery.SETTLE if mm_run == "ended" else Recovery.SEND
    return Recovery.SEND
