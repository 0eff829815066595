"""Builders shared by the reconcile tests: ERP runs, bindings made the way the service makes them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from erpsync.domain.identity import mm_run_id_for, payload_fingerprint
from erpsync.domain.lifecycle import ActionKind, BindingStatus, BoundRun
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import JobOperation, JobOperationRun, RunState
from erpsync.domain.plan import Plan, RunAction

SOURCE = "erp"
T0 = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=8)
MAPPER = MachineMapper()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def operation(job: str = "1808412", seq: str = "20", machine: str = "M1", **fields: Any) -> JobOperation:
    defaults: dict[str, Any] = {
        "job_name": f"{job}/1",
        "operation_name": seq,
        "part_name": "BRACKET-7",
        "lot_name": "1",
        "description": "bracket, machined",
        "quantity_required": 120,
        "expected_setup_seconds": 1800,
        "ideal_part_ms": 45_000,
        "expected_part_ms": 50_000,
    }
    defaults.update(fields)
    return JobOperation(job_key=("W", job, "1"), operation_seq=seq, machine=machine, **defaults)


def run(
    key: str,
    state: RunState = RunState.PRODUCTION,
    *,
    machine: str = "M1",
    start: datetime | None = T0,
    end: datetime | None = None,
    job: str | None = None,
    seq: str = "20",
    **fields: Any,
) -> JobOperationRun:
    job = job if job is not None else f"J{key}"
    if state is RunState.ENDED and end is None and "no_end" not in fields:
        end = (start or T0) + timedelta(hours=1)
    fields.pop("no_end", None)
    return JobOperationRun(
        run_key=key,
        operation=operation(job, seq, machine, **fields),
        state=state,
        start_at=start,
        end_at=end,
    )


def bind(
    r: JobOperationRun,
    status: str = "running",
    *,
    in_setup: bool | None = None,
    mapper: MachineMapper = MAPPER,
    **changes: Any,
) -> BoundRun:
    """The binding the service records after starting `r` (as the ERP had it then); `status`
    is read as the journal reads the column."""
    mm_machine = mapper.map(r.machine) or ""
    bound = BoundRun(
        run_key=r.run_key,
        mm_run_id=mm_run_id_for(SOURCE, r.run_key),
        erp_machine=r.machine,
        mm_machine_id=mm_machine,
        status=BindingStatus(status),
        in_setup=(r.state is RunState.SETUP) if in_setup is None else in_setup,
        payload_hash=payload_fingerprint(r, mm_machine),
        erp_start_at=r.start_at,
        job=r.operation.job_name,
        operation=r.operation.operation_seq,
    )
    return replace(bound, **changes)


def bindings(*items: BoundRun) -> dict[str, BoundRun]:
    return {b.run_key: b for b in items}


def summary(plan: Plan) -> list[tuple[str, str, str]]:
    """Actions as (kind, run_key, detail): the phase for starts, the end time for stops."""
    out = []
    for action in plan.actions:
        if action.kind is ActionKind.START:
            detail = "setup" if action.in_setup else "production"
        else:
            assert action.end_at is not None
            detail = action.end_at.isoformat()
        out.append((str(action.kind), action.run_key, detail))
    return out


def flags(plan: Plan) -> list[tuple[str, str]]:
    return [(f.kind, f.run_key) for f in plan.flags]


def only(plan: Plan) -> RunAction:
    assert len(plan.actions) == 1, plan.actions
    return plan.actions[0]
