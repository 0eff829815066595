"""domain/lifecycle.py: MM's answer -> an action's outcome, recovery, binding moves, column limits."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from erpsync.domain.identity import mm_run_id_for, payload_fingerprint
from erpsync.domain.lifecycle import (
    DUE_ACTION_STATUSES,
    JOB_MAX,
    MACHINE_MAX,
    MM_RUN_ID_MAX,
    OPERATION_MAX,
    RUN_KEY_MAX,
    SOURCE_MAX,
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
    Recovery,
    RequestFacts,
    RunRef,
    backoff,
    bound_after,
    bound_after_flag,
    bound_after_intent,
    outcome_of,
    recovery_step,
)
from erpsync.domain.model import RunState
from erpsync.domain.plan import Flag, FlagKind, StartAction, StopAction
from tests.unit.reconcile_helpers import SOURCE, T0, at, bind, run

NOW = T0 + timedelta(hours=2)
MAX_ATTEMPTS = 5
START_FACTS = RequestFacts(in_setup=True, start_at=at(5), mm_machine_id="m1")
STOP_FACTS = RequestFacts(end_at=at(50), mm_machine_id="m1")


def journaled(kind: ActionKind, attempts: int = 1) -> JournaledAction:
    ref = None if kind is ActionKind.IMPORT else RunRef(SOURCE, "LT1", "erp:LT1", "J1/1", "20", "M1")
    return JournaledAction(
        id=7,
        idempotency_key=f"{kind}:erp:LT1",
        kind=kind,
        source=SOURCE,
        ref=ref,
        reason="test",
        payload={},
        attempts=attempts,
    )


def facts_for(kind: ActionKind) -> RequestFacts:
    return {ActionKind.START: START_FACTS, ActionKind.STOP: STOP_FACTS}.get(kind, RequestFacts())


def settle(kind: ActionKind, answer: MMAnswer, *, attempts: int = 1) -> Outcome:
    return outcome_of(journaled(kind, attempts), answer, facts_for(kind), max_attempts=MAX_ATTEMPTS, now=NOW)


START, STOP, IMPORT = ActionKind.START, ActionKind.STOP, ActionKind.IMPORT
OK, RETRY, GAVE_UP = ActionStatus.SUCCEEDED, ActionStatus.FAILED_RETRYABLE, ActionStatus.FAILED_PERMANENT
HELD_BACK, PENDING = ActionStatus.QUARANTINED, ActionStatus.PENDING
RUNNING, STOPPED, FAILED = BindingStatus.RUNNING, BindingStatus.STOPPED, BindingStatus.FAILED

# every Answer x ActionKind, on a first attempt: (action status, audit outcome, binding status)
TABLE = {
    (START, Answer.APPLIED): (OK, AuditOutcome.SUCCEEDED, RUNNING),
    (START, Answer.HELD): (OK, AuditOutcome.SUCCEEDED, RUNNING),
    (START, Answer.NOT_FOUND): (HELD_BACK, AuditOutcome.QUARANTINED, FAILED),
    (START, Answer.REJECTED): (HELD_BACK, AuditOutcome.QUARANTINED, FAILED),
    (START, Answer.REFUSED): (PENDING, AuditOutcome.REFUSED, None),
    (START, Answer.TRANSIENT): (RETRY, AuditOutcome.RETRYING, None),
    (STOP, Answer.APPLIED): (OK, AuditOutcome.SUCCEEDED, STOPPED),
    (STOP, Answer.HELD): (OK, AuditOutcome.SUCCEEDED, STOPPED),
    (STOP, Answer.NOT_FOUND): (OK, AuditOutcome.NOOP, STOPPED),
    (STOP, Answer.REJECTED): (HELD_BACK, AuditOutcome.QUARANTINED, None),
    (STOP, Answer.REFUSED): (PENDING, AuditOutcome.REFUSED, None),
    (STOP, Answer.TRANSIENT): (RETRY, AuditOutcome.RETRYING, None),
    (IMPORT, Answer.APPLIED): (OK, AuditOutcome.SUCCEEDED, None),
    (IMPORT, Answer.HELD): (OK, AuditOutcome.SUCCEEDED, None),
    (IMPORT, Answer.NOT_FOUND): (HELD_BACK, AuditOutcome.QUARANTINED, None),
    (IMPORT, Answer.REJECTED): (HELD_BACK, AuditOutcome.QUARANTINED, None),
    (IMPORT, Answer.REFUSED): (PENDING, AuditOutcome.REFUSED, None),
    (IMPORT, Answer.TRANSIENT): (RETRY, AuditOutcome.RETRYING, None),
}


def test_the_table_covers_every_answer_and_kind() -> None:
    assert set(TABLE) == {(kind, answer) for kind in ActionKind for answer in Answer}


@pytest.mark.parametrize(("kind", "answer"), sorted(TABLE))
def test_outcome_of_every_answer_and_kind(kind: ActionKind, answer: Answer) -> None:
    outcome = settle(kind, MMAnswer(answer, http_status=599, error_class="E", message="boom"))
    assert (outcome.status, outcome.audit, outcome.binding_status) == TABLE[kind, answer]
    assert outcome.http_status == 599
    assert outcome.final is (outcome.status not in DUE_ACTION_STATUSES)
    assert outcome.quarantine is (outcome.status is HELD_BACK and outcome.audit is not AuditOutcome.NOOP)
    assert outcome.rejected_machine is None  # only a start whose machine MM refused names one
    if outcome.status in (HELD_BACK, PENDING, RETRY):
        assert (outcome.error_class, outcome.error_message) == ("E", "boom")
    assert outcome.next_attempt_at == (NOW + backoff(1) if outcome.status is RETRY else None)


def test_an_applied_start_records_its_phase_and_start_time() -> None:
    outcome = settle(START, MMAnswer(Answer.APPLIED, http_status=200, detail="sent"))
    assert (outcome.in_setup, outcome.mm_start_at, outcome.mm_end_at) == (True, at(5), None)
    assert (outcome.after, outcome.detail) == ({"phase": "setup"}, "sent")
    production = outcome_of(
        journaled(START), MMAnswer(Answer.APPLIED), RequestFacts(), max_attempts=MAX_ATTEMPTS, now=NOW
    )
    assert (production.in_setup, production.after) == (False, {"phase": "production"})


def test_a_start_mm_holds_ended_records_the_run_stopped_at_mms_end() -> None:
    outcome = settle(START, MMAnswer(Answer.HELD, http_status=409, run_end_at=at(30)))
    assert (outcome.status, outcome.binding_status, outcome.mm_end_at) == (OK, STOPPED, at(30))
    assert (outcome.in_setup, outcome.mm_start_at) == (True, at(5))


def test_a_stop_mm_holds_ended_takes_mms_end_time_else_the_one_sent() -> None:
    assert settle(STOP, MMAnswer(Answer.HELD, run_end_at=at(40))).mm_end_at == at(40)
    assert settle(STOP, MMAnswer(Answer.HELD)).mm_end_at == at(50)
    assert settle(STOP, MMAnswer(Answer.APPLIED, run_end_at=at(40))).mm_end_at == at(50)


def test_a_stop_of_a_run_mm_does_not_know_is_a_noop() -> None:
    outcome = settle(STOP, MMAnswer(Answer.NOT_FOUND, http_status=404))
    assert (outcome.quarantine, outcome.error_message) == (False, None)
    assert outcome.detail == "MM has no such run, so there is nothing to stop"


def test_a_start_on_a_machine_mm_rejected_names_the_machine() -> None:
    rejected = MMAnswer(Answer.REJECTED, http_status=422, machine_rejected=True, message="unknown machine")
    assert settle(START, rejected).rejected_machine == "m1"
    assert settle(STOP, rejected).rejected_machine is None  # a stop's machine is MM's own run's
    assert settle(START, MMAnswer(Answer.NOT_FOUND, machine_rejected=True)).rejected_machine == "m1"


def test_refused_credentials_leave_the_action_pending_and_say_so() -> None:
    outcome = settle(START, MMAnswer(Answer.REFUSED, http_status=401))
    assert not outcome.final and not outcome.quarantine
    assert outcome.detail == "not sent: MachineMetrics refused erpsync's credentials"


@pytest.mark.parametrize("kind", list(ActionKind))
def test_a_transient_failure_at_max_attempts_gives_up(kind: ActionKind) -> None:
    answer = MMAnswer(Answer.TRANSIENT, http_status=503, error_class="Timeout", message="slow")
    outcome = settle(kind, answer, attempts=MAX_ATTEMPTS)
    assert (outcome.status, outcome.audit, outcome.quarantine) == (GAVE_UP, AuditOutcome.FAILED, True)
    assert outcome.binding_status == (FAILED if kind is START else None)
    assert outcome.error_message == f"gave up after {MAX_ATTEMPTS} attempts: slow"
    assert outcome.next_attempt_at is None
    before = settle(kind, answer, attempts=MAX_ATTEMPTS - 1)
    assert (before.status, before.next_attempt_at) == (RETRY, NOW + backoff(MAX_ATTEMPTS - 1))


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n).total_seconds() for n in (0, 1, 2, 3)] == [5, 5, 10, 20]
    assert backoff(30) == timedelta(minutes=10)


# -- recovery: read MM first, then settle or send -----------------------------------------------
SETTLE, SEND = Recovery.SETTLE, Recovery.SEND
RECOVERY: list[tuple[ActionKind, MMRunState | None, bool | None, Recovery]] = [
    (START, None, True, SEND),  # the read could not tell
    (START, "missing", True, SEND),
    (START, "open", True, SETTLE),
    (START, "ended", True, SETTLE),
    (START, "open", False, SEND),  # a production switch cannot be told apart by a read
    (START, "ended", False, SEND),
    (START, "open", None, SEND),
    (STOP, None, None, SEND),
    (STOP, "missing", None, SEND),  # MM answers the stop with 404: settled as nothing to stop
    (STOP, "open", None, SEND),
    (STOP, "ended", None, SETTLE),
    (IMPORT, None, None, SEND),
    (IMPORT, "ended", None, SEND),
]


@pytest.mark.parametrize(("kind", "mm_run", "in_setup", "step"), RECOVERY)
def test_recovery_step(
    kind: ActionKind, mm_run: MMRunState | None, in_setup: bool | None, step: Recovery
) -> None:
    assert recovery_step(journaled(kind), mm_run, RequestFacts(in_setup=in_setup)) is step


# -- how a binding moves ---------------------------------------------------------------------
def bound(status: BindingStatus = RUNNING, **changes: object) -> BoundRun:
    return bind(run("LT1", RunState.SETUP), status, **changes)


def outcome(**fields: object) -> Outcome:
    return Outcome(journaled(START), OK, AuditOutcome.SUCCEEDED, **fields)  # type: ignore[arg-type]


def test_bound_after_takes_what_the_outcome_knows_and_keeps_the_rest() -> None:
    starting = bound(BindingStatus.STARTING)
    assert bound_after(starting, outcome(binding_status=RUNNING, in_setup=False)) == bound(
        RUNNING, in_setup=False
    )
    assert bound_after(starting, outcome(binding_status=STOPPED)) == bound(STOPPED)
    assert bound_after(starting, outcome(in_setup=False)) == bound(BindingStatus.STARTING, in_setup=False)
    assert bound_after(starting, outcome()) is starting  # a retry or a refusal changes nothing


def test_bound_after_a_real_outcome() -> None:
    starting = bound(BindingStatus.STARTING)
    applied = settle(START, MMAnswer(Answer.APPLIED))
    assert (bound_after(starting, applied).status, bound_after(starting, applied).in_setup) == (RUNNING, True)
    assert bound_after(starting, settle(START, MMAnswer(Answer.REJECTED))).status is FAILED
    assert bound_after(starting, settle(START, MMAnswer(Answer.TRANSIENT))) is starting
    stopping = bound(BindingStatus.STOPPING)
    assert bound_after(stopping, settle(STOP, MMAnswer(Answer.NOT_FOUND))).status is STOPPED
    assert bound_after(stopping, settle(STOP, MMAnswer(Answer.REJECTED))) is stopping


def start_of(state: RunState = RunState.SETUP, *, generation: str = "", machine: str = "M1") -> StartAction:
    r = run("LT1", state, machine=machine, start=at(5))
    mm_machine = machine.lower()
    return StartAction(
        ref=RunRef(SOURCE, "LT1", mm_run_id_for(SOURCE, "LT1"), r.operation.job_name, "20", machine),
        mm_machine_id=mm_machine,
        in_setup=state is RunState.SETUP,
        run=r,
        payload_hash=payload_fingerprint(r, mm_machine),
        reason="test",
        idempotency_key="start_run:erp:LT1:setup",
        generation=generation,
    )


def test_a_new_start_creates_a_starting_binding() -> None:
    action = start_of()
    new = bound_after_intent(None, action)
    assert new == BoundRun(
        run_key="LT1",
        mm_run_id="erp:LT1",
        erp_machine="M1",
        mm_machine_id="m1",
        status=BindingStatus.STARTING,
        in_setup=True,
        payload_hash=action.payload_hash,
        erp_start_at=at(5),
        erp_end_at=None,
        job=action.job,
        operation="20",
        generation="",
    )


def test_a_start_of_a_bound_run_records_what_is_sent_and_keeps_the_status() -> None:
    old = bound(BindingStatus.VANISHED, generation="g1")
    action = start_of(RunState.PRODUCTION, machine="M2")
    after = bound_after_intent(old, action)
    assert (after.status, after.in_setup, after.generation) == (BindingStatus.VANISHED, True, "g1")
    assert (after.erp_machine, after.mm_machine_id, after.payload_hash) == ("M2", "m2", action.payload_hash)
    assert after.erp_start_at == at(5)
    assert bound_after_intent(old, start_of(generation="g2")).generation == "g2"


def test_a_stop_makes_the_binding_stopping() -> None:
    old = bound(RUNNING, generation="g1")
    stop = StopAction(
        ref=old.ref(SOURCE),
        mm_machine_id=old.mm_machine_id,
        end_at=at(50),
        in_setup=True,
        reason="test",
        idempotency_key="stop_run:erp:LT1@g1",
    )
    assert bound_after_intent(old, stop) == bound(BindingStatus.STOPPING, generation="g1")
    assert bound_after_intent(old, replace(stop, generation="g2")).generation == "g2"
    with pytest.raises(ValueError, match="needs its binding"):
        bound_after_intent(None, stop)


def flag(**fields: object) -> Flag:
    base: dict[str, object] = {
        "kind": FlagKind.REBIND,
        "run_key": "LT1",
        "mm_run_id": "erp:LT1",
        "erp_machine": "M1",
        "job": "J",
        "operation": "20",
        "message": "m",
        "before": None,
        "after": None,
    }
    return Flag(**{**base, **fields})  # type: ignore[arg-type]


def test_a_flag_is_remembered_on_the_binding() -> None:
    old = bound(BindingStatus.STOPPED)
    assert bound_after_flag(old, flag()) is old
    after = bound_after_flag(old, flag(binding_status=RUNNING, payload_hash="h2", generation="g3"))
    assert after == bound(RUNNING, payload_hash="h2", generation="g3")


# -- RunRef: the column limits, applied once ---------------------------------------------------
def test_run_ref_cuts_to_the_state_columns() -> None:
    ref = RunRef("s" * 99, "k" * 300, "r" * 300, "j" * 300, "o" * 99, "m" * 99)
    assert [
        len(v) for v in (ref.source, ref.run_key, ref.mm_run_id, ref.job, ref.operation, ref.machine)
    ] == [
        SOURCE_MAX,
        RUN_KEY_MAX,
        MM_RUN_ID_MAX,
        JOB_MAX,
        OPERATION_MAX,
        MACHINE_MAX,
    ]
    # identities keep a stable hash suffix, display names a marker (domain/columns.py)
    assert ref.run_key.startswith("k" * 200) and ref.run_key[-17] == "~"
    assert ref.run_key == RunRef("s", "k" * 300, "r").run_key != RunRef("s", "k" * 301, "r").run_key
    assert ref.machine[-17] == "~" and ref.job == "j" * (JOB_MAX - 1) + "…"
    assert ref.operation == "o" * (OPERATION_MAX - 1) + "…"


def test_run_ref_keeps_short_values_and_reads_none_as_empty() -> None:
    ref = RunRef(SOURCE, "LT1", "erp:LT1", None, None, None)  # type: ignore[arg-type]
    assert ref == RunRef(SOURCE, "LT1", "erp:LT1", "", "", "")
    exact = RunRef(SOURCE, "k" * RUN_KEY_MAX, "erp:LT1")
    assert exact.run_key == "k" * RUN_KEY_MAX


def test_actions_read_their_names_from_the_ref() -> None:
    action = start_of()
    assert (action.source, action.run_key, action.mm_run_id) == (SOURCE, "LT1", "erp:LT1")
    assert (action.job, action.operation, action.erp_machine) == (action.ref.job, "20", "M1")
    assert action.kind is ActionKind.START
