"""The state repositories' contract: the in-memory fake and the SQL unit of work behave alike.

Every scenario runs against `MemoryUnitOfWorkFactory` and `SqlUnitOfWorkFactory` on SQLite,
PostgreSQL and MariaDB (the `state` fixture, tests/contract/conftest.py), and reads the rows back
by their SQL column names on both, so a service test on the fake proves what the same flow does
on a real database. Quarantine, machines, audit, cycles and checkpoints: test_state_records.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from erpsync.domain.drift import HealDrift, drift_of
from erpsync.domain.errors import FencedError
from erpsync.domain.lifecycle import (
    ActionKind,
    ActionStatus,
    Answer,
    AuditOutcome,
    BindingStatus,
    Intent,
    JournalStamp,
    MMAnswer,
    MMRunState,
    Outcome,
    RequestFacts,
    outcome_of,
)
from erpsync.domain.plan import Flag
from tests.contract.state_backends import (
    CLAIM,
    MODELS,
    T0,
    Backend,
    action_row,
    applied,
    bad,
    binding,
    record,
    ref,
    settle,
    start,
    stop,
)


# -- the action journal -----------------------------------------------------------------------
def test_record_journals_intents_and_their_bindings(state: Backend) -> None:
    (first,) = record(state, start(1))
    assert (first.kind, first.ref, first.attempts, first.fencing_token) == (ActionKind.START, ref(1), 1, 7)
    assert first.payload["startAt"] == str(T0)  # the request body as JSON keeps it
    row = action_row(state, first)
    assert (row["status"], row["next_attempt_at"], row["correlation_id"], row["triggered_by"]) == (
        "pending",
        T0 + CLAIM,
        "c1",
        "test",
    )
    made = binding(state, "erp:R1")
    assert (made["status"], made["in_setup"], made["version"], made["key_generation"]) == (
        "starting",
        True,
        1,
        "",
    )

    restart = start(1, new=False, generation="@g2")
    stopping, again = record(state, stop(1), restart)
    assert [stopping.kind, again.kind] == [ActionKind.STOP, ActionKind.START]
    changed = binding(state, "erp:R1")
    assert (changed["status"], changed["key_generation"], changed["version"]) == ("stopping", "@g2", 3)
    assert [r["idempotency_key"] for r in state.rows("actions")] == [
        "start:erp:R1",
        "stop:erp:R1",
        "start:erp:R1@g2",
    ]


def test_record_sets_binding_values_and_leaves_other_runs_alone(state: Backend) -> None:
    record(state, start(1), start(2))
    switch = Intent(
        idempotency_key="switch:erp:R1",
        kind=ActionKind.START,
        source="erp",
        ref=ref(1),
        reason="production",
        payload={},
        binding_values={"mm_machine_id": "X9", "payload_hash": "h2"},
    )
    record(state, switch)
    assert (binding(state, "erp:R1")["mm_machine_id"], binding(state, "erp:R1")["payload_hash"]) == (
        "X9",
        "h2",
    )
    assert binding(state, "erp:R2")["version"] == 1
    with state() as uow:
        assert uow.actions.existing_keys(["start:erp:R1", "switch:erp:R1", "nope"]) == {
            "start:erp:R1",
            "switch:erp:R1",
        }
        assert uow.actions.existing_keys([]) == set()
        assert uow.actions.record([], JournalStamp(7, None, None, T0)) == []


def test_a_journaled_key_or_bound_run_is_refused(state: Backend) -> None:
    record(state, start(1))
    for again in (start(1), replace(start(2), new_binding=start(1).new_binding)):
        with pytest.raises((IntegrityError, ValueError)):  # the fake says so without SQL's unique index
            record(state, again)
    assert [r["idempotency_key"] for r in state.rows("actions")] == ["start:erp:R1"]
    assert [r["mm_run_id"] for r in state.rows("bindings")] == ["erp:R1"]


def test_due_and_claim_follow_next_attempt_at(state: Backend) -> None:
    first, second = record(state, start(1), start(2))
    with state() as uow:
        assert uow.actions.due(T0) == []  # claimed by the journaling dispatcher
        assert uow.actions.claim(first, T0, T0 + CLAIM) is None
    later = T0 + CLAIM  # the claim ran out (<=): in doubt, due again, in id order
    with state() as uow:
        assert [a.id for a in uow.actions.due(later)] == [first.id, second.id]
        assert [a.id for a in uow.actions.due(later, limit=1)] == [first.id]
        claimed = uow.actions.claim(first, later, later + CLAIM)
    assert claimed is not None and claimed.attempts == 2
    row = action_row(state, first)
    assert (row["attempts"], row["last_attempt_at"], row["next_attempt_at"]) == (2, later, later + CLAIM)
    with state() as uow:
        assert uow.actions.claim(first, later, later + CLAIM) is None  # held by the claim above
        assert [a.id for a in uow.actions.due(later)] == [second.id]
    backoff = Outcome(
        claimed, ActionStatus.FAILED_RETRYABLE, AuditOutcome.RETRYING, next_attempt_at=T0 + 2 * CLAIM
    )
    assert settle(state, backoff) == [backoff]
    with state() as uow:
        assert [a.id for a in uow.actions.due(T0 + 2 * CLAIM - timedelta(seconds=1))] == [second.id]
        assert [(a.id, a.attempts) for a in uow.actions.due(T0 + 2 * CLAIM)] == [
            (first.id, 2),
            (second.id, 1),
        ]


def test_settle_writes_binding_audit_and_null_keeps(state: Backend) -> None:
    (started,) = record(state, start(1))
    outcome = applied(started, in_setup=True, start_at=T0)
    assert settle(state, outcome) == [outcome]
    row = action_row(state, started)
    assert (row["status"], row["http_status"], row["next_attempt_at"]) == ("succeeded", 200, None)
    assert row["settled_at"] is not None
    made = binding(state, "erp:R1")
    assert (made["status"], made["in_setup"], made["mm_start_at"], made["version"]) == (
        "running",
        True,
        T0,
        2,
    )

    (stopping,) = record(state, stop(1))
    end = T0 + timedelta(hours=1)
    assert settle(state, applied(stopping, end_at=end)) != []
    ended = binding(state, "erp:R1")  # the stop's outcome knows neither start nor setup: kept
    assert (ended["status"], ended["mm_start_at"], ended["mm_end_at"], ended["in_setup"]) == (
        "stopped",
        T0,
        end,
        True,
    )

    audit = state.rows("audit")
    assert [(a["action"], a["outcome"], a["action_id"], a["fencing_token"]) for a in audit] == [
        ("start_run", "succeeded", started.id, 7),
        ("stop_run", "succeeded", stopping.id, 7),
    ]
    assert (audit[0]["erp_job"], audit[0]["mm_run_id"], audit[0]["after_json"]) == (
        "W1",
        "erp:R1",
        '{"phase": "setup"}',
    )
    assert (audit[0]["detail"], audit[0]["http_status"], audit[0]["correlation_id"]) == ("new run", 200, None)


def test_settle_quarantines_a_refused_record_and_its_machine(state: Backend) -> None:
    with state() as uow:
        uow.machines.note({"M1": ("X1", 1), "M2": ("X2", 1)}, T0)
    (action,) = record(state, start(1))
    refused = outcome_of(
        action,
        MMAnswer(
            Answer.REJECTED, 422, "MMRecordError", "unknown machine password=hunter2", machine_rejected=True
        ),
        RequestFacts(mm_machine_id="X1"),
        max_attempts=5,
        now=T0,
    )
    assert settle(state, refused) == [refused]
    assert binding(state, "erp:R1")["status"] == "failed"
    row = action_row(state, action)
    assert (row["status"], row["error_class"]) == ("quarantined", "MMRecordError")
    assert "hunter2" not in row["error_message"]
    (entry,) = state.rows("quarantine")
    assert (
        entry["source"],
        entry["record_key"],
        entry["error_class"],
        entry["action_id"],
        entry["status"],
    ) == (
        "erp",
        "erp:R1",
        "mm_start_run",
        action.id,
        "open",
    )
    assert entry["raw_payload"] is not None and "erp:R1" in entry["raw_payload"]
    with state() as uow:
        assert uow.machines.rejected() == {"X1"}
        assert uow.quarantine.open_count() == 1
    (machine,) = [m for m in state.rows("machines") if m["erp_machine"] == "M1"]
    assert machine["rejected_at"] is not None and "hunter2" not in machine["reject_reason"]
    (audit,) = state.rows("audit")
    assert (audit["outcome"], audit["http_status"], audit["error_class"]) == (
        "quarantined",
        422,
        "MMRecordError",
    )


def test_settle_once_drops_a_second_outcome(state: Backend) -> None:
    (action,) = record(state, start(1))
    assert settle(state, applied(action, in_setup=True)) != []
    late = Outcome(action, ActionStatus.FAILED_RETRYABLE, AuditOutcome.RETRYING, next_attempt_at=T0)
    assert settle(state, applied(action, in_setup=False), late) == []
    assert action_row(state, action)["status"] == "succeeded"
    assert binding(state, "erp:R1")["in_setup"] is True
    assert [a["outcome"] for a in state.rows("audit")] == ["succeeded"]
    with state() as uow:
        assert uow.actions.claim(action, T0 + CLAIM, T0 + 2 * CLAIM) is None


def test_release_hands_back_pending_claims_only(state: Backend) -> None:
    first, second = record(state, start(1), start(2))
    settle(
        state,
        Outcome(second, ActionStatus.FAILED_RETRYABLE, AuditOutcome.RETRYING, next_attempt_at=T0 + CLAIM),
    )
    with state() as uow:
        uow.actions.release([first.id, second.id])
        uow.actions.release([])
    with state() as uow:
        assert [a.id for a in uow.actions.due(T0)] == [first.id]


def test_started_bodies_are_the_latest_start_mm_took_per_run(state: Backend) -> None:
    first, other, refused = record(state, start(1), start(2), start(3))
    settle(state, applied(first, in_setup=True, start_at=T0), applied(other, in_setup=True, start_at=T0))
    settle(state, Outcome(refused, ActionStatus.FAILED_PERMANENT, AuditOutcome.FAILED))
    (again,) = record(
        state,
        replace(
            start(1, new=False, generation="@g"),
            payload={"erpJobOperationRunId": "erp:R1", "erpMachineId": "X9"},
        ),
    )
    with state() as uow:  # the second start of R1 is only journaled: MM has not taken it
        assert uow.actions.started_bodies(["erp:R1", "erp:R3", "erp:R4"]) == {
            "erp:R1": {"erpJobOperationRunId": "erp:R1", "erpMachineId": "X1", "startAt": str(T0)}
        }
    settle(state, applied(again))
    with state() as uow:
        bodies = uow.actions.started_bodies(["erp:R1", "erp:R2"])
    assert bodies["erp:R1"]["erpMachineId"] == "X9" and bodies["erp:R2"]["erpMachineId"] == "X2"


# -- bindings ---------------------------------------------------------------------------------
def test_open_runs_by_keys_and_all_runs(state: Backend) -> None:
    intents = [start(n) for n in range(1, 6)]
    actions = record(state, *intents, start(1, source="other"))
    statuses = ["running", "stopping", "stopped", "vanished", "failed"]
    settle(
        state,
        *(
            Outcome(a, ActionStatus.SUCCEEDED, AuditOutcome.SUCCEEDED, binding_status=BindingStatus(s))
            for a, s in zip(actions, statuses, strict=False)
        ),
    )
    with state() as uow:
        open_runs = uow.bindings.open_runs("erp")
        by_keys = uow.bindings.by_keys("erp", ["R3", "R5", "R9"])
        every = uow.bindings.all_runs("erp")
        assert uow.bindings.exists("erp:R3") and not uow.bindings.exists("erp:R9")
        uow.bindings.lock(["erp:R1", "erp:R2"])
    assert sorted(open_runs) == ["R1", "R2", "R4"]
    assert sorted(by_keys) == ["R3", "R5"] and sorted(every) == ["R1", "R2", "R3", "R4", "R5"]
    run = open_runs["R1"]
    assert (run.mm_run_id, run.erp_machine, run.mm_machine_id, run.status, run.in_setup) == (
        "erp:R1",
        "M1",
        "X1",
        "running",
        True,
    )
    assert (run.payload_hash, run.erp_start_at, run.erp_end_at, run.job, run.operation, run.generation) == (
        "h1",
        T0,
        None,
        "W1",
        "10",
        "",
    )


def _on(machine: str, intent: Intent, **binding: Any) -> Intent:
    assert intent.new_binding is not None
    return replace(intent, new_binding={**intent.new_binding, "mm_machine_id": machine, **binding})


def test_latest_ends_are_when_each_machine_was_last_freed(state: Backend) -> None:
    """Per MM machine, the latest end in (since, until] of a run MM no longer has open, of this
    source: a new run there never starts before it (domain/shop_floor.py)."""
    hours = [T0 + timedelta(hours=h) for h in range(6)]
    runs = [  # (intent, status, mm_end_at)
        (_on("X1", start(1)), "stopped", hours[1]),
        (_on("X1", start(2)), "stopped", hours[2]),  # X1's answer
        (_on("X1", start(3)), "running", hours[3]),  # restarted (resync): MM has it open again
        (_on("X1", start(4)), "stopped", hours[5]),  # after `until`
        (_on("X1", start(5, source="other")), "stopped", hours[3]),  # another source
        (_on("X2", start(6), erp_end_at=hours[1] + timedelta(minutes=30)), "failed", None),
        (_on("X2", start(7)), "vanished", hours[4]),  # left open in MM by policy "flag"
        (_on("X3", start(8)), "stopped", hours[0]),  # at `since`: not after it
        (_on("X5", start(9)), "stopping", hours[4]),  # at `until`
    ]
    actions = record(state, *(intent for intent, _, _ in runs))
    settle(
        state,
        *(
            Outcome(
                a,
                ActionStatus.SUCCEEDED,
                AuditOutcome.SUCCEEDED,
                binding_status=BindingStatus(s),
                mm_end_at=e,
            )
            for a, (_, s, e) in zip(actions, runs, strict=True)
        ),
    )
    with state() as uow:
        ends = uow.bindings.latest_ends("erp", ["X1", "X2", "X3", "X5", "X9"], hours[0], hours[4])
        assert uow.bindings.latest_ends("erp", [], hours[0], hours[4]) == {}
        assert uow.bindings.latest_ends("other", ["X1"], hours[0], hours[4]) == {"X1": hours[3]}
    assert ends == {"X1": hours[2], "X2": hours[1] + timedelta(minutes=30), "X5": hours[4]}
    assert all(end.tzinfo is not None for end in ends.values())


def _flag(mm_run_id: str, **changes: Any) -> Flag:
    return Flag("flag", "", mm_run_id, "", "", "", "", None, None, **changes)


def test_remember_flag_sets_only_what_it_is_given(state: Backend) -> None:
    record(state, start(1))
    with state() as uow:
        uow.bindings.remember_flag(_flag("erp:R1", binding_status=BindingStatus.VANISHED))
        uow.bindings.remember_flag(_flag("erp:R1", payload_hash="h2", generation="@g3"))
        uow.bindings.remember_flag(_flag("erp:R1"))
        uow.bindings.remember_flag(_flag("erp:R9", binding_status=BindingStatus.VANISHED))
    row = binding(state, "erp:R1")
    assert (row["status"], row["payload_hash"], row["key_generation"], row["mm_machine_id"]) == (
        "vanished",
        "h2",
        "@g3",
        "X1",
    )


@pytest.mark.parametrize(("state_read", "heal"), [("missing", "restart"), ("ended", "flag")])
def test_record_drift_changes_a_binding_still_as_read_once(
    state: Backend, state_read: MMRunState, heal: HealDrift
) -> None:
    """domain/drift.py: MM lost (or ended) a run erpsync had running; recorded once, only while
    the binding is still what the read saw."""
    (action,) = record(state, start(1))
    settle(state, applied(action, in_setup=False))
    mm_end = T0 + timedelta(minutes=50)
    drift = drift_of(
        "running",
        state_read,
        mm_run_id="erp:R1",
        run_key="R1",
        what="R1",
        end_at=mm_end,
        now=T0 + CLAIM,
        heal=heal,
    )
    assert drift is not None
    with state() as uow:
        assert uow.bindings.record_drift(drift) is True
        assert uow.bindings.record_drift(drift) is False  # recorded: never a second time
    row = binding(state, "erp:R1")
    expected_end = T0 + CLAIM if state_read == "missing" else mm_end
    expected_since = None if state_read == "missing" else T0 + CLAIM
    assert (row["status"], row["version"]) == ("stopped" if heal == "restart" else "failed", 3)
    assert (_utc(row["mm_end_at"]), _utc(row["final_counts_since"])) == (expected_end, expected_since)
    with state() as uow:
        assert uow.bindings.all_runs("erp")["R1"].mm_end_at == expected_end


def test_record_drift_leaves_a_binding_that_moved_on_alone(state: Backend) -> None:
    """A stop journaled after the read (stopping) wins: nothing changes, nothing to audit."""
    (action,) = record(state, start(1))
    settle(state, applied(action, in_setup=False))
    record(state, stop(1))
    drift = drift_of(
        "running", "ended", mm_run_id="erp:R1", run_key="R1", what="R1", end_at=T0, now=T0, heal="restart"
    )
    assert drift is not None
    with state() as uow:
        assert uow.bindings.record_drift(drift) is False
        assert uow.bindings.record_drift(replace(drift, mm_run_id="erp:R9")) is False
    assert binding(state, "erp:R1")["status"] == "stopping"


def _utc(value: Any) -> Any:
    """A database time as an aware UTC one (SQLite and MariaDB give naive values back)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


# -- the unit of work -------------------------------------------------------------------------
def test_a_failed_unit_of_work_leaves_nothing(state: Backend) -> None:
    with pytest.raises(RuntimeError), state() as uow:
        (action,) = uow.actions.record([start(1)], JournalStamp(7, None, None, T0))
        uow.actions.settle([applied(action, in_setup=True)], fencing_token=7)
        uow.quarantine.upsert(bad("A"), T0)
        uow.machines.note({"M1": ("X1", 1)}, T0)
        uow.cycles.start("sync", correlation_id="c", trigger=None, started_at=T0)
        uow.checkpoints.remember_digest("csv", "jobs", "d1", 1)
        raise RuntimeError("boom")
    assert all(state.rows(table) == [] for table in MODELS)


def test_a_stale_fence_is_refused_before_anything_is_written(state: Backend) -> None:
    with pytest.raises(FencedError), state(state.fence(current=False)) as uow:
        uow.quarantine.upsert(bad("A"), T0)  # never runs
    with state(state.fence(current=True)) as uow:
        uow.quarantine.upsert(bad("B"), T0)
    assert [r["record_key"] for r in state.rows("quarantine")] == ["B"]
