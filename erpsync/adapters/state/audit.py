"""The audit trail: one append-only row per thing erpsync did, refused or failed to do.

Every flow writes its audit rows through `record_audit`, inside the same transaction as the state
change it explains, so the trail can never disagree with the state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import fields
from typing import Any, Concatenate, ParamSpec

from sqlalchemy import select
from sqlalchemy.orm import Session

from erpsync import __version__
from erpsync.adapters.state.tables import AuditEntry
from erpsync.domain.columns import (
    MESSAGE_MAX_BYTES,
    fit_bytes,
    fit_id,
    fit_name,
    fit_optional_id,
    fit_optional_name,
)
from erpsync.domain.lifecycle import JOB_MAX, MACHINE_MAX, MM_RUN_ID_MAX, OPERATION_MAX, SOURCE_MAX
from erpsync.observability.actor import user_at_host
from erpsync.observability.correlation import current_correlation_id, current_trigger
from erpsync.observability.scrub import scrub

MAX_ERROR_CHARS = 4000
P = ParamSpec("P")


ACTOR = user_at_host()


def _as_json(value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    return fit_bytes(scrub(json.dumps(value, default=str, sort_keys=True)))


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    """Comma-separated keys whose value differs between `before` and `after`."""
    if before is None or after is None:
        return None
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return fit_name(",".join(keys), 255) or None


def audit_values(
    *,
    action: str,
    outcome: str,
    source: str | None = None,
    erp_job: str | None = None,
    erp_operation: str | None = None,
    erp_machine: str | None = None,
    mm_run_id: str | None = None,
    action_id: int | None = None,
    fencing_token: int | None = None,
    http_status: int | None = None,
    error: BaseException | str | None = None,
    error_class: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    detail: str | None = None,
    trigger: str | None = None,
) -> dict[str, Any]:
    """The column values of one audit row (flows that write many rows insert them in one go)."""
    message = None
    if error is not None:
        message = fit_bytes(scrub(str(error))[:MAX_ERROR_CHARS], MESSAGE_MAX_BYTES)
        if error_class is None and isinstance(error, BaseException):
            error_class = type(error).__name__
    # every value fitted to its column (domain/columns.py): one long ERP name never fails the cycle
    return dict(
        correlation_id=fit_optional_id(current_correlation_id(), 64),
        triggered_by=fit_optional_id(trigger or current_trigger(), 32),
        actor=fit_name(ACTOR, 255),
        app_version=__version__,
        action_id=action_id,
        fencing_token=fencing_token,
        source=fit_optional_id(source, SOURCE_MAX),
        erp_job=fit_optional_name(erp_job, JOB_MAX),
        erp_operation=fit_optional_name(erp_operation, OPERATION_MAX),
        erp_machine=fit_optional_id(erp_machine, MACHINE_MAX),
        mm_run_id=fit_optional_id(mm_run_id, MM_RUN_ID_MAX),
        action=fit_id(action, 32),
        outcome=fit_id(outcome, 24),
        http_status=http_status,
        error_class=fit_optional_id(error_class, 64),
        error_message=message,
        before_json=_as_json(before),
        after_json=_as_json(after),
        changed_fields=changed_fields(before, after),
        detail=fit_bytes(scrub(detail)) if detail else None,
    )


def _added_to_session(values: Callable[P, dict[str, Any]]) -> Callable[Concatenate[Session, P], AuditEntry]:
    def record(session: Session, /, *args: P.args, **kwargs: P.kwargs) -> AuditEntry:
        entry = AuditEntry(**values(*args, **kwargs))
        session.add(entry)
        return entry

    record.__doc__ = "Add one audit row to `session` (committed with the caller's unit of work)."
    return record


record_audit = _added_to_session(audit_values)


def audit_record_values(entry: Any) -> dict[str, Any]:
    """The column values of a `service.ports.AuditRecord`: a dataclass whose fields are the
    arguments of `audit_values` (adapters do not import the service layer, so it is read by field)."""
    return audit_values(**{f.name: getattr(entry, f.name) for f in fields(entry)})


def _stored_jobs(job: str) -> set[str]:
    """The ``erp_job`` values an audit row of this job may hold: the job fitted to the column, and
    for a job already cut to the column by the caller, the fitted form of the longer original."""
    found = {fit_name(job, JOB_MAX)}
    if len(job) == JOB_MAX:
        found.add(fit_name(job + "~", JOB_MAX))
    return found


def flag_queries(
    flags: Collection[tuple[str, str, str]], chunk: int = 500
) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """(actions, jobs, runs) to look earlier audit rows up by, per chunk of (kind, job, run) flags."""
    kinds = sorted({kind for kind, _, _ in flags})
    wanted = sorted({(stored, run) for _, job, run in flags for stored in _stored_jobs(job)})
    for start in range(0, len(wanted), chunk):
        part = wanted[start : start + chunk]
        yield kinds, sorted({job for job, _ in part}), sorted({run for _, run in part})


class SqlAudit:
    """`AuditRepository` on one session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def record(self, entry: Any) -> None:
        self.session.add(AuditEntry(**audit_record_values(entry)))

    def flags_audited(self, flags: Collection[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """(kind, mm_run_id, detail) of the audit rows already written for these (kind, job, run) flags.

        A flag that changes no binding (a run not started because another one holds its machine, a
        run moved back to setup) would otherwise be audited again every cycle while the ERP keeps it
        so; the (erp_job, occurred_at) index finds the earlier rows.
        """
        found: set[tuple[str, str, str]] = set()
        for kinds, jobs, runs in flag_queries(flags):
            query = select(AuditEntry.action, AuditEntry.mm_run_id, AuditEntry.detail).where(
                AuditEntry.erp_job.in_(jobs), AuditEntry.mm_run_id.in_(runs), AuditEntry.action.in_(kinds)
            )
            found.update(
                (action, run or "", detail or "") for action, run, detail in self.session.execute(query)
            )
        return found
