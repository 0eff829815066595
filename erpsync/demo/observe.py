"""One picture of the three worlds the demo shows side by side: the ERP, MachineMetrics, erpsync.

Read-only: labor tickets from the demo ERP, job runs from the simulator, bindings, audit rows,
quarantine and rejected machines from erpsync's state database. The view only renders a `Frame`;
it never queries anything itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.tables import AuditEntry, MachineSeen, QuarantineEntry, RunBinding
from erpsync.demo.erp import MACHINES, OPERATORS
from erpsync.service.writeback import CONFLICT_CLASS

WRITTEN = ("written", "already_written")


@dataclass(frozen=True, slots=True)
class Ticket:
    """A demo labor ticket as the ERP holds it."""

    id: int
    machine: str
    job: str
    op: int
    setup: bool
    operator: str
    clock_in: datetime | None
    clock_out: datetime | None
    good: int
    bad: int

    @property
    def run_key(self) -> str:
        return f"LT{self.id}"


@dataclass(frozen=True, slots=True)
class MMRun:
    """A job run as the simulated MachineMetrics reports it (`good`, `bad` = scrap + nonconform)."""

    run_id: str
    job: str
    operation: str
    phase: str
    ended: bool
    good: int
    bad: int


@dataclass(frozen=True, slots=True)
class TicketState:
    """One ticket across the three worlds."""

    ticket: Ticket
    run: MMRun | None  # its MM run, once erpsync started it
    binding: str | None  # erpsync's status of the run
    conflict: bool  # a write-back conflict is open: a person's value erpsync does not overwrite
    written: tuple[int, int] | None  # what erpsync last wrote (good, bad)


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: datetime
    triggered_by: str | None
    action: str
    outcome: str
    machine: str | None
    job: str | None
    operation: str | None
    run_id: str | None
    message: str | None
    before: str | None
    after: str | None
    detail: str | None


@dataclass
class Frame:
    """Everything the views show at one moment."""

    tickets: list[TicketState] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)  # ERP machines MachineMetrics refused
    audit: list[AuditRow] = field(default_factory=list)  # newest last
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (action, outcome) -> rows
    quarantine_open: Counter[str] = field(default_factory=Counter)  # error class -> open entries
    quarantine_resolved: int = 0

    def count(self, action: str, *outcomes: str) -> int:
        return sum(n for (a, o), n in self.outcomes.items() if a == action and o in outcomes)

    @property
    def started(self) -> int:
        return self.count("start_run", "succeeded")

    @property
    def stopped(self) -> int:
        return self.count("stop_run", "succeeded")

    @property
    def writes(self) -> int:
        return self.count("write_counts", *WRITTEN)

    @property
    def tickets_written(self) -> int:
        return sum(1 for t in self.tickets if t.written is not None)

    def by_machine(self) -> dict[str, TicketState | None]:
        """Each demo machine's latest ticket (open or just closed), in the shop's machine order."""
        latest: dict[str, TicketState | None] = {m.id: None for m in MACHINES}
        for state in self.tickets:  # ordered by ticket id
            latest[state.ticket.machine] = state
        return latest


class Observer:
    """Reads a `Frame`: demo tickets from `first_ticket` on, the simulator, erpsync's state."""

    def __init__(self, erp: Engine, state: Engine, sim: MMSimulator, first_ticket: int) -> None:
        self.erp = erp
        self.state = state
        self.sim = sim
        self.first_ticket = first_ticket
        self._last_audit_id = 0

    def frame(self, audit_rows: int = 8) -> Frame:
        tickets = self._tickets()
        runs = self.sim.runs()
        with self.state.connect() as conn:
            b = RunBinding
            bindings = {
                row.run_key: row
                for row in conn.execute(
                    select(
                        b.run_key,
                        b.mm_run_id,
                        b.status,
                        b.last_good_parts,
                        b.last_scrap_parts,
                        b.last_nonconform_parts,
                    )
                )
            }
            q = QuarantineEntry
            conflicts = set(
                conn.scalars(select(q.record_key).where(q.error_class == CONFLICT_CLASS, q.status == "open"))
            )
            frame = Frame(
                rejected=set(
                    conn.scalars(select(MachineSeen.erp_machine).where(MachineSeen.rejected_at.is_not(None)))
                ),
                audit=[
                    _audit(r)
                    for r in conn.execute(_audit_query().order_by(AuditEntry.id.desc()).limit(audit_rows))
                ][::-1],
                outcomes=Counter(
                    {
                        (action, outcome): n
                        for action, outcome, n in conn.execute(
                            select(AuditEntry.action, AuditEntry.outcome, func.count()).group_by(
                                AuditEntry.action, AuditEntry.outcome
                            )
                        )
                    }
                ),
                quarantine_open=Counter(
                    {
                        cls: n
                        for cls, n in conn.execute(
                            select(q.error_class, func.count())
                            .where(q.status == "open")
                            .group_by(q.error_class)
                        )
                    }
                ),
                quarantine_resolved=conn.scalar(
                    select(func.count()).select_from(q).where(q.status.in_(("retry", "resolved")))
                )
                or 0,
            )
        for ticket in tickets:
            bound = bindings.get(ticket.run_key)
            run = _mm_run(runs.get(bound.mm_run_id)) if bound is not None else None
            written = None
            if bound is not None and bound.last_good_parts is not None:
                written = (
                    int(bound.last_good_parts),
                    int(bound.last_scrap_parts or 0) + int(bound.last_nonconform_parts or 0),
                )
            frame.tickets.append(
                TicketState(
                    ticket,
                    run,
                    bound.status if bound is not None else None,
                    bound is not None and bound.mm_run_id in conflicts,
                    written,
                )
            )
        return frame

    def new_audit(self) -> list[AuditRow]:
        """Audit rows written since the last call, oldest first (the plain progress output)."""
        with self.state.connect() as conn:
            rows = [
                _audit(r)
                for r in conn.execute(
                    _audit_query().where(AuditEntry.id > self._last_audit_id).order_by(AuditEntry.id)
                )
            ]
        if rows:
            self._last_audit_id = rows[-1].id
        return rows

    def examples(self, limit: int = 8) -> list[AuditRow]:
        """The first audit row of each (action, outcome), in order: one of every kind that happened."""
        a = AuditEntry
        first = select(func.min(a.id)).group_by(a.action, a.outcome)
        with self.state.connect() as conn:
            query = _audit_query().where(a.id.in_(first)).order_by(a.id).limit(limit)
            return [_audit(r) for r in conn.execute(query)]

    def _tickets(self) -> list[Ticket]:
        lt = LABOR_TICKET.c
        query = (
            select(
                lt.TRANSACTION_ID,
                lt.RESOURCE_ID,
                lt.WORKORDER_BASE_ID,
                lt.WORKORDER_LOT_ID,
                lt.OPERATION_SEQ_NO,
                lt.TYPE,
                lt.EMPLOYEE_ID,
                lt.CLOCK_IN,
                lt.CLOCK_OUT,
                lt.GOOD_QTY,
                lt.BAD_QTY,
            )
            .where(lt["TRANSACTION_ID"] >= self.first_ticket, lt.WORKORDER_BASE_ID.is_not(None))
            .order_by(lt.TRANSACTION_ID)
        )
        with self.erp.connect() as conn:
            return [
                Ticket(
                    id=int(r.TRANSACTION_ID),
                    machine=r.RESOURCE_ID or "",
                    job=f"{r.WORKORDER_BASE_ID}/{r.WORKORDER_LOT_ID}",
                    op=int(r.OPERATION_SEQ_NO),
                    setup=(r.TYPE or "").strip() == "S",
                    operator=OPERATORS.get(r.EMPLOYEE_ID, r.EMPLOYEE_ID),
                    clock_in=r.CLOCK_IN,
                    clock_out=r.CLOCK_OUT,
                    good=int(r.GOOD_QTY or 0),
                    bad=int(r.BAD_QTY or 0),
                )
                for r in conn.execute(query)
            ]


def _mm_run(data: dict[str, Any] | None) -> MMRun | None:
    if data is None:
        return None
    metrics = data["metrics"]
    return MMRun(
        run_id=data["run_id"],
        job=data["job_name"],
        operation=data["operation_name"],
        phase=data["phase"],
        ended=data["end_at"] is not None,
        good=int(metrics["goodParts"]),
        bad=int(metrics["scrapParts"]) + int(metrics["nonconformParts"]),
    )


def _audit_query() -> Any:
    a = AuditEntry
    return select(
        a.id,
        a.occurred_at,
        a.triggered_by,
        a.action,
        a.outcome,
        a.erp_machine,
        a.erp_job,
        a.erp_operation,
        a.mm_run_id,
        a.error_message,
        a.before_json,
        a.after_json,
        a.detail,
    )


def _audit(row: Any) -> AuditRow:
    return AuditRow(
        id=int(row.id),
        at=row.occurred_at,
        triggered_by=row.triggered_by,
        action=row.action,
        outcome=row.outcome,
        machine=row.erp_machine,
        job=row.erp_job,
        operation=row.erp_operation,
        run_id=row.mm_run_id,
        message=row.error_message,
        before=row.before_json,
        after=row.after_json,
        detail=row.detail,
    )
