"""The flags a plan raises (things a person should know, not MM) and its quarantined runs.

Each flag is audited once: it asks the service to store something on the binding
(``binding_status``, ``payload_hash``) or names its situation (``dedupe_key``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from erpsync.domain.identity import mm_fields
from erpsync.domain.lifecycle import ActionKind, BindingStatus, BoundRun
from erpsync.domain.model import BadRecord, JobOperationRun
from erpsync.domain.plan import Flag, FlagKind, RunAction


def vanished_flag(bound: BoundRun, kind: FlagKind, what: str) -> Flag:
    """An open run the ERP no longer wants in MM, left open by ``sync.vanished_runs = flag``."""
    message = (
        f"{bound.job} op {bound.operation} {what}; left open in MM "
        "(sync.vanished_runs = flag): stop it in MM or run erpsync resync"
    )
    return binding_flag(kind, bound, message, binding_status=BindingStatus.VANISHED)


def fields_changed_flag(run: JobOperationRun, bound: BoundRun, mm_now: str, fingerprint: str) -> Flag:
    """The ERP edited a live run's job fields (rule 4): the flag carries the new fingerprint."""
    return Flag(
        kind=FlagKind.JOB_FIELDS_CHANGED,
        run_key=bound.run_key,
        mm_run_id=bound.mm_run_id,
        erp_machine=run.operation.machine,
        job=bound.job,
        operation=bound.operation,
        message=f"the ERP changed job fields of running {bound.job} op {bound.operation}; MM "
        "left as is (a re-start would open a second MM job and split the counts)",
        before={
            "job": bound.job,
            "operation": bound.operation,
            "erp_machine": bound.erp_machine,
            "erpMachineId": bound.mm_machine_id,
            "payload_hash": bound.payload_hash,
        },
        after={
            "job": run.operation.job_name,
            "operation": run.operation.operation_seq,
            "erp_machine": run.operation.machine,
            **mm_fields(run, mm_now),
            "payload_hash": fingerprint,
        },
        payload_hash=fingerprint,
        dedupe_key=f"{FlagKind.JOB_FIELDS_CHANGED}:{bound.mm_run_id}:{fingerprint}",
    )


def run_flag(kind: FlagKind, run: JobOperationRun, mm_run_id: str, message: str, *, dedupe: str) -> Flag:
    """A flag about an ERP run as the ERP has it now; it changes no binding."""
    op = run.operation
    return Flag(
        kind=kind,
        run_key=run.run_key,
        mm_run_id=mm_run_id,
        erp_machine=op.machine,
        job=op.job_name,
        operation=op.operation_seq,
        message=message,
        before=None,
        after={
            "state": str(run.state),
            "start_at": run.start_at.isoformat() if run.start_at else None,
        },
        dedupe_key=dedupe,
    )


def binding_flag(kind: FlagKind, bound: BoundRun, message: str, *, binding_status: BindingStatus) -> Flag:
    """A flag that records ``binding_status`` on the binding (resync: what MM reports)."""
    return Flag(
        kind=kind,
        run_key=bound.run_key,
        mm_run_id=bound.mm_run_id,
        erp_machine=bound.erp_machine,
        job=bound.job,
        operation=bound.operation,
        message=message,
        before={"status": bound.status},
        after={"status": binding_status},
        binding_status=binding_status,
        dedupe_key=f"{kind}:{bound.mm_run_id}",
    )


def quarantined_run(
    source: str, run: JobOperationRun, mm_run_id: str, problem: str, *, error_class: str
) -> BadRecord:
    """A run that cannot be started until a person fixes its machine (rule 7)."""
    op = run.operation
    return BadRecord(
        source=source,
        record_key=run.run_key,
        reason=f"run {run.run_key} ({op.job_name} op {op.operation_seq}) {problem}",
        error_class=error_class,
        field="machine",
        raw={
            "run_key": run.run_key,
            "job": op.job_name,
            "operation": op.operation_seq,
            "machine": op.machine,
            "origin": run.origin or op.origin,
            "mm_run_id": mm_run_id,
        },
        job=op.job_name,
        operation=op.operation_seq,
        machine=op.machine or None,
        mm_run_id=mm_run_id,
    )


def settle_flags(flags: Iterable[Flag], actions: Iterable[RunAction]) -> list[Flag]:
    """Flags never contradict actions: the action decides the binding's next status.

    A vanished/excluded flag ("left open in MM") is dropped when the run is stopped anyway (a new
    run took its machine); other flags of a run with an action keep their message, not a status.
    """
    acted = {a.run_key for a in actions}
    stopped = {a.run_key for a in actions if a.kind is ActionKind.STOP}
    settled = []
    for flag in flags:
        if flag.run_key in stopped and flag.kind in (FlagKind.VANISHED, FlagKind.EXCLUDED):
            continue
        if flag.run_key in acted and flag.binding_status is not None:
            flag = replace(flag, binding_status=None)  # noqa: PLW2901
        settled.append(flag)
    settled.sort(key=lambda f: (f.run_key, f.kind))
    return settled
