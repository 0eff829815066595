"""`erpsync status`: what the state database says about bindings, quarantine, cycles and the lease."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from erpsync.adapters.state.tables import Cycle, LeaderLease, QuarantineEntry, RunBinding, SyncAction


@dataclass
class CycleInfo:
    kind: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    last_ok_at: datetime | None


@dataclass
class StatusReport:
    bindings: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    open_quarantine: int = 0
    cycles: list[CycleInfo] = field(default_factory=list)
    leader: str | None = None
    leader_expires_at: datetime | None = None
    fencing_token: int | None = None


def status_report(session: Session) -> StatusReport:
    report = StatusReport()
    for status, count in session.execute(select(RunBinding.status, func.count()).group_by(RunBinding.status)):
        report.bindings[status] = count
    for status, count in session.execute(select(SyncAction.status, func.count()).group_by(SyncAction.status)):
        report.actions[status] = count
    report.open_quarantine = (
        session.scalar(
            select(func.count()).select_from(QuarantineEntry).where(QuarantineEntry.status == "open")
        )
        or 0
    )
    kinds = session.scalars(select(Cycle.kind).distinct()).all()
    for kind in sorted(kinds):
        last = session.scalars(
            select(Cycle).where(Cycle.kind == kind).order_by(Cycle.id.desc()).limit(1)
        ).one()
        last_ok = session.scalar(
            select(func.max(Cycle.finished_at)).where(Cycle.kind == kind, Cycle.outcome == "ok")
        )
        report.cycles.append(CycleInfo(kind, last.started_at, last.finished_at, last.outcome, last_ok))
    lease = session.scalars(select(LeaderLease).limit(1)).first()
    if lease is not None:
        report.leader = lease.holder
        report.leader_expires_at = lease.expires_at
        report.fencing_token = lease.fencing_token
    return report
