"""`erpsync status`: what the state database says about bindings, quarantine, cycles and the lease."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the port only: `erpsync status` should answer at once
    from erpsync.service.ports import StatusReader


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


def status_report(reader: StatusReader) -> StatusReport:
    """Runs and actions by status, open quarantine, each kind's last cycle and last good one, the lease."""
    report = StatusReport(
        bindings=reader.binding_counts(),
        actions=reader.action_counts(),
        open_quarantine=reader.quarantine_count("open"),
    )
    for kind in sorted(reader.cycle_kinds()):
        last = reader.last_cycle(kind)
        last_ok = reader.last_finished(kind, "ok")
        report.cycles.append(CycleInfo(kind, last.started_at, last.finished_at, last.outcome, last_ok))
    lease = reader.lease()
    if lease is not None:
        report.leader = lease.holder
        report.leader_expires_at = lease.expires_at
        report.fencing_token = lease.fencing_token
    return report
