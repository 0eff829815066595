"""The state repositories' contract harness: each implementation, its rows by column name, scenarios.

`Backend` wraps one unit-of-work factory (the memory fake, or SQL on a fresh database) with a
backend-neutral way to read and poke rows; tests/contract/conftest.py gives it as `state`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select, update

from erpsync.adapters.state.memory import MemoryFence
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
from erpsync.domain.errors import FencedError
from erpsync.domain.lifecycle import (
    ActionKind,
    Answer,
    BindingStatus,
    Intent,
    JournaledAction,
    JournalStamp,
    MMAnswer,
    Outcome,
    RequestFacts,
    RunRef,
    outcome_of,
)
from erpsync.domain.model import BadRecord
from erpsync.service.ports import UnitOfWork, UnitOfWorkFactory

T0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
CLAIM = timedelta(minutes=5)
MODELS: dict[str, type[Base]] = {
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
        model = cast(Table, MODELS[table].__table__)
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(model).order_by(*model.primary_key)).mappings()]

    def set(self, table: str, row_id: int, **values: Any) -> None:
        """Change a row behind the repositories' back, as a person or another flow would."""
        if self.tables is not None:
            getattr(self.tables, table)[row_id].update(values)
            return
        assert self.store is not None
        model = cast(Table, MODELS[table].__table__)
        with self.store.engine.begin() as conn:
            conn.execute(update(model).where(model.c.id == row_id).values(**values))

    def fence(self, current: bool) -> Any:
        if self.tables is not None:
            self.tables.lease_token = 7
            return MemoryFence(self.tables, 7 if current else 6)
        return _SqlFence(current)

    def __call__(self, fence: Any = None) -> AbstractContextManager[UnitOfWork]:
        return self.uow(fence)


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
        return uow.actions.record(list(intents), JournalStamp(7, "c1", "test", claim_until))


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


def bad(key: str, error_class: str = "invalid_record", reason: str = "no job") -> BadRecord:
    return BadRecord("erp", key, reason, error_class=error_class, line=3, raw={"job": None, "token": "x"})
