"""Domain actions -> MachineMetrics request bodies, and back from the journal's stored payloads.

The journal stores the exact JSON body (by alias) so an in-doubt action can be re-sent after a
crash without re-reading the ERP: the request that is retried is the request that was intended.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from erpsync.adapters.mm.schemas import StartJobRun, StopJobRun
from erpsync.domain.lifecycle import RequestFacts
from erpsync.domain.plan import StartAction, StopAction


def start_request(action: StartAction) -> StartJobRun:
    """The start-job-run body for a planned start (setup, production, or the switch to it)."""
    if action.run is None:
        raise ValueError(f"start action for {action.mm_run_id} carries no run")
    run = action.run
    op = run.operation
    return StartJobRun(
        erp_job_operation_run_id=action.mm_run_id,
        erp_machine_id=action.mm_machine_id,
        job_name=op.job_name,
        operation_name=op.operation_name,
        lot_name=op.lot_name,
        part_name=op.part_name,
        start_in_setup=action.in_setup,
        start_at=run.start_at,
        job_operation_description=op.description or None,
        quantity_required=op.quantity_required,
        expected_setup_time=op.expected_setup_seconds,
        ideal_part_time=op.ideal_part_ms,
        expected_part_time=op.expected_part_ms,
    )


def switch_request(started: dict[str, Any], action: StartAction) -> StartJobRun:
    """The switch of a run in setup to production: the body MM took, with ``startInSetup`` false.

    MM answers 409 to a start of a known run id with any other value changed, so the switch
    repeats the start exactly (job fields edited in the ERP since are flagged, never sent).
    """
    body = {**started, "startInSetup": False}
    if body.get("erpJobOperationRunId") != action.mm_run_id:
        raise ValueError(
            f"the started body of {body.get('erpJobOperationRunId')!r} is not {action.mm_run_id!r}"
        )
    return start_from_payload(body)


def stop_request(action: StopAction) -> StopJobRun:
    return StopJobRun(erp_job_operation_run_id=action.mm_run_id, end_at=action.end_at)


def payload_of(request: StartJobRun | StopJobRun) -> dict[str, Any]:
    """The JSON body exactly as sent (camelCase, UTC timestamps ending in Z)."""
    return request.model_dump(mode="json", by_alias=True)


def start_from_payload(payload: dict[str, Any]) -> StartJobRun:
    return StartJobRun.model_validate(payload)


def stop_from_payload(payload: dict[str, Any]) -> StopJobRun:
    return StopJobRun.model_validate(payload)


def parse_timestamp(value: Any) -> datetime | None:
    """A payload timestamp ('...Z') back to an aware datetime."""
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def request_facts(payload: dict[str, Any]) -> RequestFacts:
    """What a journaled start or stop body asked of MM, for the lifecycle's outcome rules."""
    in_setup = payload.get("startInSetup")
    return RequestFacts(
        in_setup=bool(in_setup) if in_setup is not None else None,
        start_at=parse_timestamp(payload.get("startAt")),
        end_at=parse_timestamp(payload.get("endAt")),
        mm_machine_id=payload.get("erpMachineId"),
    )
