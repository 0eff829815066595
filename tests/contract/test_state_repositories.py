"""The state repositories' contract: the in-memory fake and the SQL unit of work behave alike.

Every scenario runs against `MemoryUnitOfWorkFactory` and `SqlUnitOfWorkFactory` on SQLite,
PostgreSQL and MariaDB, and reads the rows back by their SQL column names on both, so a service
test on the fake proves what the same flow does on a real database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, select, update
from sqlalchemy.exc import IntegrityError

from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.memory import MemoryFence, MemoryUnitOfWorkFactory
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import (
    AuditEntry,
    Base,
    Cycle,
    MachineSeen,
    QuarantineEntry,
    RunBinding,
    SourceCheckpoint,
    SyncAction,
)
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from erpsync.domain.errors import FencedError
from erpsync.domain.lifecycle import (
    ActionKind,
    ActionStatus,
    Answer,
    AuditOutcome,
    BindingStatus,
    Intent,
    JournaledAction,
    MMAnswer,
    Outcome,
    RequestFacts,
    RunRef,
    outcome_of,
)
from erpsync.domain.model import BadRecord
from erpsync.service.ports import AuditRecord, UnitOfWork, UnitOfWorkFactory
from tests.conftest import create_database, drop_database

T0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
CLAIM = timedelta(minutes=5)
_MODELS: dict[str, type[Base]] = {
    "actions": SyncAction,
    "bindings": RunBinding,
    "quarantine": QuarantineEntry,
    "audit": AuditEntry,
    "machines": MachineSeen,
    "cycles": Cycle,
    "checkpoints": SourceCheckpoint,
}
_KEYS = {"bindings": "mm_run_id", "machines": "erp_machine"}


class _SqlFence:
    def __init__(self, current: bool) -> None:
        self.current = current
        self.token = 7

    def is_current(self) -> bool:
        return self.current

    def check(self, transaction: Any) -> None:
        if not self.current:
            raise FencedError("fencing token 7 is stale")


@dataclass
class Backend:
    """One implementation under test, and a backend-neutral way to read and poke its rows."""

    name: str
    uow: UnitOfWorkFactory
    tables: MemoryTables | None = None
    store: StateStore | None = None

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a table, by column name, in primary-key order."""
        if self.tables is not None:
            held = getattr(self.tables, table)
            rows = list(held.values()) if isinstance(held, dict) else list(held)
            return sorted((dict(r) for r in rows), key=lambda r: r.get("id") or r[_KEYS.get(table, "id")])
        assert self.store is not None
        model = cast(Table, _MODELS[table].__table__)
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(model).order_by(*model.primary_key)).mappings()]

    def set(self, table: str, row_id: int, **values: Any) -> None:
        """Change a row behind the repositories' back, as a person or another flow would."""
        if self.tables is not None:
            getattr(self.tables, table)[row_id].update(values)
            return
        assert self.store is not None
        model = cast(Table, _MODELS[table].__table__)
        with self.store.engine.begin() as conn:
            conn.execute(update(model).where(model.c.id == row_id).values(**values))

    def fence(self, current: bool) -> Any:
        if self.tables is not None:
            self.tables.lease_token = 7
            return MemoryFence(self.tables, 7 if current else 6)
        return _SqlFence(current)

    def __call__(self, fence: Any = None) -> AbstractContextManager[UnitOfWork]:
        return self.uow(fence)


@pytest.fixture(params=["memory", "sqlite", "postgresql", "mariadb"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = str(request.param)
    if name == "memory":
        tables = MemoryTables()
        yield Backend(name, MemoryUnitOfWorkFactory(tables), tables=tables)
        return
    url, token = create_database(name, tmp_path)
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    store = StateStore(engine)
    try:
        yield Backend(name, SqlUnitOfWorkFactory(store), store=store)
    finally:
        store.dispose()
        drop_database(name, token)


# -- building blocks --------------------------------------------------------------------------
def ref(n: int, source: str = "erp") -> RunRef:
    return RunRef(source, f"R{n}", f"{source}:R{n}", job=f"W{n}", operation="10", machine=f"M{n}")


def start(n: int, *, new: bool = True, source: str = "erp", generation: str | None = None) -> Intent:
    run = ref(n, source)
    binding = {
        "source": source,
        "run_key": run.run_key,
        "mm_run_id": run.mm_run_id,
        "erp_job": run.job,
        "erp_operation": run.operation,
        "erp_machine": run.machine,
        "mm_machine_id": f"X{n}",
        "status": "starting",
        "in_setup": True,
        "payload_hash": "h1",
        "key_generation": "",
        "erp_start_at": T0,
        "erp_end_at": None,
        "version": 1,
    }
    return Intent(
        idempotency_key=f"start:{run.mm_run_id}{generation or ''}",
        kind=ActionKind.START,
        source=source,
        ref=run,
        reason="new run",
        payload={"erpJobOperationRunId": run.mm_run_id, "erpMachineId": f"X{n}", "startAt": T0},
        new_binding=binding if new else None,
        generation=generation,
    )


def stop(n: int) -> Intent:
    run = ref(n)
    return Intent(
        idempotency_key=f"stop:{run.mm_run_id}",
        kind=ActionKind.STOP,
        source="erp",
        ref=run,
        reason="run ended",
        payload={"erpJobOperationRunId": run.mm_run_id},
        binding_status=BindingStatus.STOPPING,
    )


def record(state: Backend, *intents: Intent, claim_until: datetime = T0 + CLAIM) -> list[JournaledAction]:
    with state() as uow:
        return uow.actions.record(
            list(intents), fencing_token=7, correlation_id="c1", trigger="test", claim_until=claim_until
        )


def settle(state: Backend, *outcomes: Outcome) -> list[Outcome]:
    with state() as uow:
        return uow.actions.settle(list(outcomes), fencing_token=7)


def applied(action: JournaledAction, **facts: Any) -> Outcome:
    return outcome_of(action, MMAnswer(Answer.APPLIED, 200), RequestFacts(**facts), max_attempts=5, now=T0)


def binding(state: Backend, mm_run_id: str) -> dict[str, Any]:
    (row,) = [r for r in state.rows("bindings") if r["mm_run_id"] == mm_run_id]
    return row


def action_row(state: Backend, action: JournaledAction) -> dict[str, Any]:
    (row,) = [r for r in state.rows("actions") if r["id"] == action.id]
    return row


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
        assert (
            uow.actions.record([], fencing_token=7, correlation_id=None, trigger=None, claim_until=T0) == []
        )


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


def test_remember_flag_sets_only_what_it_is_given(state: Backend) -> None:
    record(state, start(1))
    with state() as uow:
        uow.bindings.remember_flag("erp:R1", status=BindingStatus.VANISHED)
        uow.bindings.remember_flag("erp:R1", payload_hash="h2", generation="@g3")
        uow.bindings.remember_flag("erp:R1")
        uow.bindings.remember_flag("erp:R9", status=BindingStatus.VANISHED)
    row = binding(state, "erp:R1")
    assert (row["status"], row["payload_hash"], row["key_generation"], row["mm_machine_id"]) == (
        "vanished",
        "h2",
        "@g3",
        "X1",
    )


# -- quarantine -------------------------------------------------------------------------------
def bad(key: str, error_class: str = "invalid_record", reason: str = "no job") -> BadRecord:
    return BadRecord("erp", key, reason, error_class=error_class, line=3, raw={"job": None, "token": "x"})


def test_quarantine_upsert_new_reopened_and_discarded(state: Backend) -> None:
    with state() as uow:
        assert uow.quarantine.upsert(bad("A"), T0) is True
        assert uow.quarantine.upsert(bad("A", reason="still no job"), T0 + CLAIM) is False
        assert uow.quarantine.upsert(bad("B"), T0) is True
        assert uow.quarantine.open_count() == 2
    first, second = state.rows("quarantine")
    assert (first["attempts"], first["message"], first["first_seen_at"], first["last_seen_at"]) == (
        2,
        "still no job",
        T0,
        T0 + CLAIM,
    )
    assert first["raw_payload"] == '{"job": null, "token": "x"}' and first["line_number"] == 3
    state.set("quarantine", first["id"], status="discarded")
    state.set("quarantine", second["id"], status="resolved")
    with state() as uow:
        assert uow.quarantine.upsert(bad("A"), T0) is False  # a person discarded it: it stays so
        assert uow.quarantine.upsert(bad("B"), T0) is True  # seen bad again: re-opened
        assert uow.quarantine.open_count() == 1
    assert [r["status"] for r in state.rows("quarantine")] == ["discarded", "open"]


def test_resolve_retried_only_source_rows_not_bad_again(state: Backend) -> None:
    with state() as uow:
        for record_ in (bad("A"), bad("B"), bad("C", "writeback_conflict")):
            uow.quarantine.upsert(record_, T0)
        uow.quarantine.upsert(bad("D", "mm_start_run"), T0, action_id=42)
    for row in state.rows("quarantine"):
        state.set("quarantine", row["id"], status="retry")
    with state() as uow:
        assert uow.quarantine.resolve_retried("erp", {("B", "invalid_record")}) == 1
        assert uow.quarantine.resolve_retried("other", set()) == 0
    assert [(r["record_key"], r["status"]) for r in state.rows("quarantine")] == [
        ("A", "resolved"),
        ("B", "retry"),
        ("C", "retry"),
        ("D", "retry"),
    ]


# -- machines, audit, cycles, checkpoints -----------------------------------------------------
def test_machines_note_resolution_rejection_and_remap(state: Backend) -> None:
    def seen() -> dict[str, tuple[Any, ...]]:
        return {
            r["erp_machine"]: (
                r["mm_machine_id"],
                r["runs_seen"],
                r["last_seen_at"],
                r["rejected_at"] is not None,
            )
            for r in state.rows("machines")
        }

    with state() as uow:
        uow.machines.note({"M1": ("X1", 1), "M2": ("X2", 2), "M" * 70: (None, 1)}, T0)
        uow.machines.note({}, T0)
    assert seen() == {"M1": ("X1", 1, T0, False), "M2": ("X2", 2, T0, False), "M" * 64: (None, 1, T0, False)}
    soon = T0 + timedelta(minutes=5)
    with state() as uow:
        uow.machines.note({"M1": ("X1", 1), "M2": ("X2", 3)}, soon)
    assert seen()["M1"][2] == T0 and seen()["M2"] == ("X2", 3, soon, False)
    later = T0 + timedelta(minutes=10)
    (action,) = record(state, start(1), claim_until=T0)
    refused = Outcome(action, ActionStatus.QUARANTINED, AuditOutcome.QUARANTINED, rejected_machine="X1")
    settle(state, refused)
    with state() as uow:
        uow.machines.note({"M1": ("X1", 1)}, later)  # 10 minutes on: seen again
        assert uow.machines.rejected() == {"X1"}
    assert seen()["M1"] == ("X1", 1, later, True)
    with state() as uow:
        uow.machines.note({"M1": ("X1-new", 1)}, later)  # mapped to another id: asked about again
        assert uow.machines.rejected() == set()
    assert seen()["M1"] == ("X1-new", 1, later, False)


def test_audit_record_and_flags_audited(state: Backend) -> None:
    with state() as uow:
        uow.audit.record(
            AuditRecord("flag_machine_busy", "flagged", erp_job="W1", mm_run_id="erp:R1", detail="M1")
        )
        uow.audit.record(AuditRecord("flag_setup", "flagged", erp_job="W1", mm_run_id="erp:R1"))
        uow.audit.record(AuditRecord("flag_machine_busy", "flagged", erp_job="W2", mm_run_id="erp:R2"))
        uow.audit.record(
            AuditRecord(
                "start_run", "failed", source="erp", error="password=secret1", before={"a": 1}, after={"a": 2}
            )
        )
    with state() as uow:
        flags = {
            ("flag_machine_busy", "W1", "erp:R1"),
            ("flag_setup", "W1", "erp:R1"),
            ("flag_setup", "W3", "x"),
        }
        assert uow.audit.flags_audited(flags) == {
            ("flag_machine_busy", "erp:R1", "M1"),
            ("flag_setup", "erp:R1", ""),
        }
        assert uow.audit.flags_audited(set()) == set()
    last = state.rows("audit")[-1]
    assert "secret1" not in last["error_message"] and last["changed_fields"] == "a"
    assert (last["before_json"], last["after_json"], last["occurred_at"] is not None) == (
        '{"a": 1}',
        '{"a": 2}',
        True,
    )


def test_cycles_and_checkpoints(state: Backend) -> None:
    with state() as uow:
        cycle_id = uow.cycles.start("sync", correlation_id="c9", trigger="cli", started_at=T0)
        assert uow.checkpoints.digest("csv", "jobs") is None
        uow.checkpoints.remember_digest("csv", "jobs", "d1", 10)
    with state() as uow:
        uow.cycles.finish(cycle_id, finished_at=T0 + CLAIM, outcome="ok", summary="0 started", error=None)
        assert uow.checkpoints.digest("csv", "jobs") == "d1"
        uow.checkpoints.remember_digest("csv", "jobs", "d2", 12)
    with state() as uow:
        assert (uow.checkpoints.digest("csv", "jobs"), uow.checkpoints.digest("csv", "other")) == ("d2", None)
    (cycle,) = state.rows("cycles")
    assert (
        cycle["kind"],
        cycle["correlation_id"],
        cycle["triggered_by"],
        cycle["outcome"],
        cycle["summary"],
    ) == (
        "sync",
        "c9",
        "cli",
        "ok",
        "0 started",
    )
    assert (cycle["started_at"], cycle["finished_at"], cycle["error_message"]) == (T0, T0 + CLAIM, None)
    (checkpoint,) = state.rows("checkpoints")
    assert (checkpoint["file_sha256"], checkpoint["rows_read"]) == ("d2", 12)


# -- the unit of work -------------------------------------------------------------------------
def test_a_failed_unit_of_work_leaves_nothing(state: Backend) -> None:
    with pytest.raises(RuntimeError), state() as uow:
        (action,) = uow.actions.record(
            [start(1)], fencing_token=7, correlation_id=None, trigger=None, claim_until=T0
        )
        uow.actions.settle([applied(action, in_setup=True)], fencing_token=7)
        uow.quarantine.upsert(bad("A"), T0)
        uow.machines.note({"M1": ("X1", 1)}, T0)
        uow.cycles.start("sync", correlation_id="c", trigger=None, started_at=T0)
        uow.checkpoints.remember_digest("csv", "jobs", "d1", 1)
        raise RuntimeError("boom")
    assert all(state.rows(table) == [] for table in _MODELS)


def test_a_stale_fence_is_refused_before_anything_is_written(state: Backend) -> None:
    with pytest.raises(FencedError), state(state.fence(current=False)) as uow:
        uow.quarantine.upsert(bad("A"), T0)  # never runs
    with state(state.fence(current=True)) as uow:
        uow.quarantine.upsert(bad("B"), T0)
    assert [r["record_key"] for r in state.rows("quarantine")] == ["B"]
