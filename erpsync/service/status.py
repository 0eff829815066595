"""`erpsync status`: what the state database says about bindings, quarantine, cycles and the lease."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, func, select

from erpsync.adapters.state.reads import cycle, leader_lease, quarantine, run_binding, sync_action


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


def status_report(conn: Connection) -> StatusReport:
    """Read with SQLAlchemy Core (erpsync/adapters/state/reads.py): no ORM import, a quick start."""
    report = StatusReport()
    bindings = run_binding.c.status
    for status, count in conn.execute(select(bindings, func.count()).group_by(bindings)):
        report.bindings[status] = count
    actions = sync_action.c.status
    for status, count in conn.execute(select(actions, func.count()).group_by(actions)):
        report.actions[status] = count
    report.open_quarantine = (
        conn.scalar(select(func.count()).select_from(quarantine).where(quarantine.c.status == "open")) or 0
    )
    kinds = conn.scalars(select(cycle.c.kind).distinct()).all()
    for kind in sorted(kinds):
        last = conn.execute(
            select(cycle.c.started_at, cycle.c.finished_at, cycle.c.outcome)
            .where(cycle.c.kind == kind)
            .order_by(cycle.c.id.desc())
            .limit(1)
        ).one()
        last_ok = conn.scalar(
            select(func.max(cycle.c.finished_at)).where(cycle.c.kind == kind, cycle.c.outcome == "ok")
        )
        report.cycles.append(CycleInfo(kind, last.started_at, last.finished_at, last.outcome, last_ok))
    lease = conn.execute(
        select(leader_lease.c.holder, leader_lease.c.expires_at, leader_lease.c.fencing_token).limit(1)
    ).first()
    if lease is not None:
        report.leader = lease.holder
        report.leader_expires_at = lease.expires_at
        report.fencing_token = lease.fencing_token
    return report
