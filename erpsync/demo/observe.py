"""One picture of the three worlds the demo shows side by side: the ERP, MachineMetrics, erpsync.

Read-only: labor tickets from the demo ERP, job runs from the simulator, and bindings, audit rows,
quarantine and rejected machines from erpsync's state database (the same tables and columns
docs/audit.md documents for IT). The views only render a `Frame`; they never query anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, Select, func, select

from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.tables import AuditEntry, MachineSeen, QuarantineEntry, RunBinding
from erpsync.demo.erp import MACHINES, OPERATORS
from erpsync.domain.writeback_rules import CONFLICT_CLASS

WRITTEN = ("written", "already_written")

_q, _b, _a, _lt = QuarantineEntry, RunBinding, AuditEntry, LABOR_TICKET.c
BINDINGS = select(
    _b.run_key, _b.mm_run_id, _b.status, _b.last_good_parts, _b.last_scrap_parts, _b.last_nonconform_parts
)
OPEN_CONFLICTS = select(_q.record_key).where(_q.error_class == CONFLICT_CLASS, _q.status == "open")
REJECTED_MACHINES = select(MachineSeen.erp_machine).where(MachineSeen.rejected_at.is_not(None))
OUTCOMES = select(_a.action, _a.outcome, func.count()).group_by(_a.action, _a.outcome)
QUARANTINE_OPEN = select(func.count()).select_from(_q).where(_q.status == "open")
QUARANTINE_RETRIED = select(func.count()).select_from(_q).where(_q.status.in_(("retry", "resolved")))
AUDIT = select(
    _a.id,
    _a.occurred_at,
    _a.triggered_by,
    _a.action,
    _a.outcome,
    _a.erp_machine,
    _a.erp_job,
    _a.erp_operation,
    _a.mm_run_id,
    _a.error_message,
    _a.before_json,
    _a.after_json,
    _a.detail,
)
TICKETS = select(
    _lt.TRANSACTION_ID,
    _lt.RESOURCE_ID,
    _lt.WORKORDER_BASE_ID,
    _lt.WORKORDER_LOT_ID,
    _lt.OPERATION_SEQ_NO,
    _lt.TYPE,
    _lt.EMPLOYEE_ID,
    _lt.CLOCK_IN,
    _lt.CLOCK_OUT,
    _lt.GOOD_QTY,
    _lt.BAD_QTY,
).order_by(_lt.TRANSACTION_ID)


class _Bound(NamedTuple):
    """A row of BINDINGS."""

    run_key: str
    mm_run_id: str
    status: str
    good: int | None
    scrap: int | None
    nonconform: int | None


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
    """A job run as the simulated MachineMetrics reports it (`bad` = scrap + nonconform)."""

    run_id: str
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
    binding: str | None  # erpsync's status of the run (running, stopped, ...)
    conflict: bool  # an open write-back conflict: a person's value erpsync does not overwrite
    written: tuple[int, int] | None  # what erpsync last wrote (good, bad)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """The erpsync_audit columns the demo shows."""

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
    audit: list[AuditRow] = field(default_factory=list)  # the newest rows, oldest first
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (action, outcome) -> rows
    quarantine_open: int = 0
    quarantine_retried: int = 0

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


@dataclass(eq=False)
class Observer:
    """Reads frames: the demo's tickets (from `first_ticket` on), the simulator, erpsync's state."""

    erp: Engine
    state: Engine
    sim: MMSimulator
    first_ticket: int
    _last_audit_id: int = field(default=0, init=False)

    def frame(self, audit_rows: int = 8) -> Frame:
        """The three worlds now, with the newest `audit_rows` audit rows."""
        tickets, runs = self._tickets(), self.sim.runs()
        with self.state.connect() as conn:
            newest = conn.execute(AUDIT.order_by(_a.id.desc()).limit(audit_rows))
            frame = Frame(
                rejected=set(conn.scalars(REJECTED_MACHINES)),
                audit=[_audit(row) for row in newest][::-1],
                outcomes=Counter({(action, outcome): n for action, outcome, n in conn.execute(OUTCOMES)}),
                quarantine_open=conn.scalar(QUARANTINE_OPEN) or 0,
                quarantine_retried=conn.scalar(QUARANTINE_RETRIED) or 0,
            )
            bindings = {row.run_key: _Bound(*row) for row in conn.execute(BINDINGS)}
            conflicts = set(conn.scalars(OPEN_CONFLICTS))
        frame.tickets = [_across(t, bindings.get(t.run_key), runs, conflicts) for t in tickets]
        return frame

    def new_audit(self) -> list[AuditRow]:
        """Audit rows written since the last call, oldest first (the plain progress output)."""
        with self.state.connect() as conn:
            rows = [_audit(r) for r in conn.execute(AUDIT.where(_a.id > self._last_audit_id).order_by(_a.id))]
        if rows:
            self._last_audit_id = rows[-1].id
        return rows

    def examples(self, limit: int = 8) -> list[AuditRow]:
        """The first audit row of each (action, outcome), in order: one of every kind that happened."""
        first = select(func.min(_a.id)).group_by(_a.action, _a.outcome)
        with self.state.connect() as conn:
            return [
                _audit(r) for r in conn.execute(AUDIT.where(_a.id.in_(first)).order_by(_a.id).limit(limit))
            ]

    def _tickets(self) -> list[Ticket]:
        """The demo's tickets on work orders (history and indirect labor left out)."""
        query: Select[Any] = TICKETS.where(
            _lt["TRANSACTION_ID"] >= self.first_ticket, _lt.WORKORDER_BASE_ID.is_not(None)
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


def _across(
    ticket: Ticket, bound: _Bound | None, runs: Mapping[str, dict[str, Any]], conflicts: set[str]
) -> TicketState:
    """A ticket with its binding (erpsync), its run (MM) and what erpsync last wrote onto it."""
    if bound is None:
        return TicketState(ticket, None, None, conflict=False, written=None)
    written = None
    if bound.good is not None:
        written = (int(bound.good), int(bound.scrap or 0) + int(bound.nonconform or 0))
    return TicketState(
        ticket,
        _mm_run(runs.get(bound.mm_run_id)),
        bound.status,
        conflict=bound.mm_run_id in conflicts,
        written=written,
    )


def _mm_run(data: dict[str, Any] | None) -> MMRun | None:
    if data is None:
        return None
    metrics = data["metrics"]
    return MMRun(
        run_id=data["run_id"],
        operation=data["operation_name"],
        phase=data["phase"],
        ended=data["end_at"] is not None,
        good=int(metrics["goodParts"]),
        bad=int(metrics["scrapParts"]) + int(metrics["nonconformParts"]),
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
