"""domain/give_up.py: what a read of MM makes of an answer that cannot be settled on its face."""

from __future__ import annotations

import pytest

from erpsync.domain.give_up import MMRead, gives_up, is_switch, needs_read, outcome_after_read
from erpsync.domain.lifecycle import (
    ActionKind,
    ActionStatus,
    Answer,
    AuditOutcome,
    BindingStatus,
    MMAnswer,
    Outcome,
    RequestFacts,
)
from tests.unit.reconcile_helpers import at, bind, run
from tests.unit.test_lifecycle import MAX_ATTEMPTS, NOW, START_FACTS, STOP_FACTS, journaled

START, STOP, IMPORT = ActionKind.START, ActionKind.STOP, ActionKind.IMPORT
OK, RETRY, GAVE_UP, HELD_BACK = (
    ActionStatus.SUCCEEDED,
    ActionStatus.FAILED_RETRYABLE,
    ActionStatus.FAILED_PERMANENT,
    ActionStatus.QUARANTINED,
)
RUNNING, STOPPED, FAILED, UNCONFIRMED = (
    BindingStatus.RUNNING,
    BindingStatus.STOPPED,
    BindingStatus.FAILED,
    BindingStatus.UNCONFIRMED,
)
OPEN, ENDED, MISSING, UNREAD = (
    MMRead("open"),
    MMRead("ended", at(40)),
    MMRead("missing"),
    MMRead(None, failure="x"),
)
TRANSIENT = MMAnswer(Answer.TRANSIENT, http_status=503, error_class="E", message="down")
NOT_FOUND = MMAnswer(Answer.NOT_FOUND, http_status=404, error_class="MMNotFoundError", message="gone")


def settle(kind: ActionKind, answer: MMAnswer, read: MMRead, *, last: bool, switch: bool = False) -> Outcome:
    facts = START_FACTS if kind is START else STOP_FACTS
    if switch:
        facts = RequestFacts(in_setup=False, start_at=at(5), mm_machine_id="m1")
    attempts = MAX_ATTEMPTS if last else 1
    return outcome_after_read(
        journaled(kind, attempts), answer, facts, read, switch=switch, max_attempts=MAX_ATTEMPTS, now=NOW
    )


# (kind, read, switch) on the last attempt -> (action status, audit outcome, binding status)
GIVE_UP = {
    (START, OPEN, False): (OK, AuditOutcome.SUCCEEDED, RUNNING),
    (START, ENDED, False): (OK, AuditOutcome.SUCCEEDED, STOPPED),
    (START, MISSING, False): (GAVE_UP, AuditOutcome.FAILED, FAILED),
    (START, UNREAD, False): (GAVE_UP, AuditOutcome.FAILED, UNCONFIRMED),
    (START, OPEN, True): (HELD_BACK, AuditOutcome.QUARANTINED, None),
    (START, ENDED, True): (OK, AuditOutcome.SUCCEEDED, STOPPED),
    (START, MISSING, True): (GAVE_UP, AuditOutcome.FAILED, None),
    (START, UNREAD, True): (GAVE_UP, AuditOutcome.FAILED, None),
    (STOP, OPEN, False): (GAVE_UP, AuditOutcome.FAILED, None),
    (STOP, ENDED, False): (OK, AuditOutcome.SUCCEEDED, STOPPED),
    (STOP, MISSING, False): (OK, AuditOutcome.NOOP, STOPPED),
    (STOP, UNREAD, False): (GAVE_UP, AuditOutcome.FAILED, None),
}


@pytest.mark.parametrize(("kind", "read", "switch"), list(GIVE_UP))
def test_giving_up_settles_what_the_read_shows(kind: ActionKind, read: MMRead, switch: bool) -> None:
    outcome = settle(kind, TRANSIENT, read, last=True, switch=switch)
    assert (outcome.status, outcome.audit, outcome.binding_status) == GIVE_UP[kind, read, switch]
    if outcome.status is OK:
        assert outcome.after is not None and outcome.after.get("settled_by") == "read"
    if read is ENDED:
        assert outcome.mm_end_at == at(40)
    if outcome.status is GAVE_UP:
        assert outcome.quarantine and "gave up after 5 attempts: down" in (outcome.error_message or "")


# a 404 to a stop, first attempt: (read) -> (action status, audit outcome, binding status)
STOP_404 = {
    MISSING: (OK, AuditOutcome.NOOP, STOPPED),
    ENDED: (OK, AuditOutcome.SUCCEEDED, STOPPED),
    OPEN: (RETRY, AuditOutcome.RETRYING, None),
    UNREAD: (RETRY, AuditOutcome.RETRYING, None),
}


@pytest.mark.parametrize("read", list(STOP_404))
def test_a_404_to_a_stop_is_nothing_to_stop_only_when_the_read_confirms_it(read: MMRead) -> None:
    outcome = settle(STOP, NOT_FOUND, read, last=False)
    assert (outcome.status, outcome.audit, outcome.binding_status) == STOP_404[read]
    if outcome.status is RETRY:
        assert "not settled: the stop is sent again" in (outcome.error_message or "")
        assert outcome.http_status == 404
    assert settle(STOP, NOT_FOUND, OPEN, last=True).status is GAVE_UP  # never a noop while open


def test_only_404_stops_and_last_attempts_need_a_read() -> None:
    assert needs_read(journaled(STOP), NOT_FOUND, max_attempts=MAX_ATTEMPTS)
    assert not needs_read(journaled(START), NOT_FOUND, max_attempts=MAX_ATTEMPTS)
    assert not needs_read(journaled(START), TRANSIENT, max_attempts=MAX_ATTEMPTS)
    assert needs_read(journaled(START, MAX_ATTEMPTS), TRANSIENT, max_attempts=MAX_ATTEMPTS)
    assert not needs_read(journaled(IMPORT, MAX_ATTEMPTS), TRANSIENT, max_attempts=MAX_ATTEMPTS)
    assert not gives_up(journaled(START, MAX_ATTEMPTS), MMAnswer(Answer.REJECTED), max_attempts=MAX_ATTEMPTS)


def test_a_switch_is_a_production_start_of_a_live_binding_in_setup() -> None:
    production = RequestFacts(in_setup=False)
    in_setup = bind(run("LT1"), in_setup=True)
    assert is_switch(journaled(START), production, in_setup)
    assert not is_switch(journaled(START), RequestFacts(in_setup=True), in_setup)
    assert not is_switch(journaled(START), production, bind(run("LT1"), in_setup=False))  # a first start
    assert not is_switch(journaled(START), production, None)
    assert not is_switch(journaled(START), production, bind(run("LT1"), "stopped", in_setup=True))
