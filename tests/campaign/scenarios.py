"""What the ERP side of a scenario trial does: a real shop's day on a VISUAL schema, step by step.

The shop (tests/sync_helpers.Shop plus more work): 6 machines, one with a 15-character id (the
column's limit); two or three operations per machine (one of them on a work order with a 30-character
base id, a lot, split and sub id), and one operation whose CALC_END_QTY is poisoned (1E30). Years of
closed history go into LABOR_TICKET once per world (`load_history`, executemany; outside the read's
lookback, so they are load, not work).

Each trial applies a batch of named steps in ONE ERP transaction (operators acting at one moment;
erpsync never reads half a batch), so the oracle (tests/campaign/oracle.py) can follow the ERP batch
by batch. Steps: a crew member joins the shown operation; a ticket on another operation of the
machine; a setup-then-run handover; clock-outs now or backdated (entered hours late); clock-ins
entered late; a ticket reopened (CLOCK_OUT back to NULL); a ticket edited while open (operation or
machine); a ticket deleted while open; a ticket with a poisoned cell (CLOCK_IN out of range, an
unknown TYPE, or on the poisoned operation). `ShopTruth.tickets` is the ERP's truth as the trial
made it; every step is named (`Step.name`) so a violating trial can be read and replayed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, insert, update

from erpsync.adapters.erp.visual_schema import LABOR_TICKET, OPERATION
from erpsync.demo.visual_fixture import OperationKey, labor_ticket_values
from tests.sync_helpers import ERP_TZ, Shop

LONG_MACHINE = "MAZAK-INTEGR-15"  # SHOP_RESOURCE.ID is nvarchar(15)
LONG_BASE = "LONGWO-2026-0000000000-ABCDEFG"  # WORK_ORDER.BASE_ID is nvarchar(30)
POISONED_QTY = "1E30"  # SQLite keeps it in decimal(20,8): the source must quarantine the ticket


def local_now() -> datetime:
    """The ERP's wall clock (VISUAL stores naive local times), to the second."""
    return datetime.now(ZoneInfo(ERP_TZ)).replace(tzinfo=None, microsecond=0)


@dataclass(frozen=True)
class Op:
    """One routing step: its VISUAL key, machine, and whether its row is poisoned."""

    key: OperationKey
    machine: str
    poisoned: str | None = None  # the OPERATION column that is bad

    @property
    def job(self) -> tuple[str, str, str, str, str]:
        return self.key.work_order.values()

    @property
    def seq(self) -> int:
        return self.key.sequence_no

    def label(self) -> str:
        _, base, lot, split, sub = self.job
        return f"{base}/{lot}/{split}/{sub}|{self.seq}"


@dataclass
class Ticket:
    """One LABOR_TICKET row as the trial made it (and what erpsync must think of it)."""

    id: int
    op: Op
    type: str  # "S" setup, "R" run, anything else is a bad cell
    clock_in: datetime  # naive ERP-local
    clock_out: datetime | None = None
    resource: str | None = None  # RESOURCE_ID, set by a machine edit
    deleted: bool = False
    bad: str | None = None  # the field erpsync must quarantine the ticket for
    employee: str = "E1"

    @property
    def machine(self) -> str:
        return self.resource or self.op.machine

    @property
    def open(self) -> bool:
        return self.clock_out is None and not self.deleted


@dataclass(frozen=True)
class Step:
    """One thing an operator (or a clerk) did; `name` says what, for the trial's record."""

    kind: str
    name: str


class ScenarioShop:
    """A VISUAL shop and the truth of every ticket the scenario made in it."""

    def __init__(self, erp_url: str, rng: random.Random) -> None:
        self.shop = Shop(erp_url, machines=5)
        fx = self.shop.fx
        machines = [*self.shop.machines, fx.add_resource(LONG_MACHINE, "Mazak Integrex, long id")]
        self.machines: list[str] = machines
        self.ops: dict[str, list[Op]] = {m: [Op(key, m)] for m, key in self.shop.ops.items()}
        wo = fx.add_work_order("1808406", "1", part_id="P-100", desired_qty=250)
        self.ops[LONG_MACHINE] = [
            Op(fx.add_operation(wo, 60, LONG_MACHINE, setup_hrs=1.5, run=0.05), LONG_MACHINE)
        ]
        for i, m in enumerate(machines, start=1):
            wo = fx.add_work_order(f"18085{i:02d}", "1", part_id="P-100", desired_qty=120)
            self.ops[m].append(Op(fx.add_operation(wo, 20, m, setup_hrs=0.5, run=0.02, calc_end_qty=120), m))
        # a 30-character base id with lot, split and sub: job name LONGWO.../123/2-1
        long_wo = fx.add_work_order(LONG_BASE, "123", "2", "1", part_id="P-100", desired_qty=40)
        for seq, m in ((30, machines[1]), (40, LONG_MACHINE)):
            self.ops[m].append(
                Op(fx.add_operation(long_wo, seq, m, setup_hrs=2, run=0.1, calc_end_qty=40), m)
            )
        poison_machine = rng.choice(machines)
        bad_wo = fx.add_work_order("BADQTY-1", "1", part_id="P-100", desired_qty=10)
        bad_key = fx.add_operation(bad_wo, 10, poison_machine, setup_hrs=1, run=0.05, calc_end_qty=10)
        with self.shop.engine.begin() as conn:
            conn.execute(
                update(OPERATION)
                .where(OPERATION.c.WORKORDER_BASE_ID == "BADQTY-1")
                .values(CALC_END_QTY=POISONED_QTY)
            )
        self.poisoned_op = Op(bad_key, poison_machine, poisoned="CALC_END_QTY")
        self.tickets: dict[int, Ticket] = {}
        self.next_id = 1
        self.history_rows = 0
        self.history_from: datetime | None = None

    @property
    def engine(self) -> Any:
        return self.shop.engine

    def dispose(self) -> None:
        self.shop.dispose()

    # -- the ERP-load scenario ------------------------------------------------------------------
    def load_history(self, rows: int, rng: random.Random) -> None:
        """`rows` closed tickets, every operation worked back to back for years, all of it closed
        weeks before the read's lookback (one executemany per 5,000 rows)."""
        ops = [op for ops in self.ops.values() for op in ops]
        ends = {op: local_now() - timedelta(days=30) for op in ops}
        batch = []
        for n, tid in enumerate(range(self.next_id, self.next_id + rows)):
            op = ops[n % len(ops)]
            out = ends[op] - timedelta(minutes=rng.randint(1, 30))
            at = out - timedelta(minutes=rng.randint(20, 400))
            ends[op] = at
            batch.append(
                labor_ticket_values(
                    tid,
                    op.key,
                    site_id="MAIN",
                    ticket_type="R" if tid % 5 else "S",
                    employee_id=f"H{tid % 40}",
                    clock_in=at,
                    clock_out=out,
                    GOOD_QTY=rng.randint(0, 60),
                    BAD_QTY=rng.randint(0, 2),
                )
            )
        with self.engine.begin() as conn:
            for start in range(0, len(batch), 5000):
                conn.execute(insert(LABOR_TICKET), batch[start : start + 5000])
        self.next_id += rows
        self.history_rows = rows
        self.history_from = min(ends.values())

    # -- what the truth says ----------------------------------------------------------------------
    def open_tickets(self, machine: str | None = None) -> list[Ticket]:
        return [
            t
            for t in self.tickets.values()
            if t.open and t.bad is None and (machine is None or t.machine == machine)
        ]

    def shown_op(self, machine: str) -> Op | None:
        """The operation of the most recent good clock-in open on the machine (the rule's choice)."""
        open_ = self.open_tickets(machine)
        return max(open_, key=lambda t: (t.clock_in, t.id)).op if open_ else None

    # -- writing the ERP (inside the batch's transaction) ---------------------------------------------
    def clock_in(
        self,
        conn: Connection,
        op: Op,
        at: datetime,
        ticket_type: str,
        rng: random.Random,
        bad: str | None = None,
    ) -> Ticket:
        ticket = Ticket(self.next_id, op, ticket_type, at, bad=bad, employee=f"E{rng.randint(1, 99):03d}")
        if rng.random() < 0.2:
            ticket.employee = "EMPLOYEE-LONG15"  # EMPLOYEE_ID is nvarchar(15)
        self.next_id += 1
        conn.execute(
            insert(LABOR_TICKET),
            [
                labor_ticket_values(
                    ticket.id,
                    op.key,
                    site_id="MAIN",
                    ticket_type=ticket_type,
                    employee_id=ticket.employee,
                    clock_in=at,
                    INDIRECT_CODE="N",
                )
            ],
        )
        self.tickets[ticket.id] = ticket
        return ticket

    @staticmethod
    def _set(conn: Connection, ticket: Ticket, **values: Any) -> None:
        """Only the named columns: GOOD_QTY / BAD_QTY are erpsync's to write (the sink)."""
        conn.execute(
            update(LABOR_TICKET).where(LABOR_TICKET.c["TRANSACTION_ID"] == ticket.id).values(**values)
        )

    def clock_out(self, conn: Connection, ticket: Ticket, at: datetime) -> None:
        ticket.clock_out = max(at, ticket.clock_in)
        self._set(conn, ticket, CLOCK_OUT=ticket.clock_out, ACT_CLOCK_OUT=ticket.clock_out)

    def reopen(self, conn: Connection, ticket: Ticket) -> None:
        ticket.clock_out = None
        self._set(conn, ticket, CLOCK_OUT=None, ACT_CLOCK_OUT=None)

    def delete(self, conn: Connection, ticket: Ticket) -> None:
        ticket.deleted = True
        conn.execute(delete(LABOR_TICKET).where(LABOR_TICKET.c["TRANSACTION_ID"] == ticket.id))

    def edit_op(self, conn: Connection, ticket: Ticket, op: Op) -> None:
        ticket.op = op
        self._set(conn, ticket, **op.key.work_order.as_child_columns(), OPERATION_SEQ_NO=op.seq)

    def edit_machine(self, conn: Connection, ticket: Ticket, machine: str) -> None:
        ticket.resource = machine
        self._set(conn, ticket, RESOURCE_ID=machine)

    def reroute(self, conn: Connection, op: Op, machine: str) -> Op:
        """The routing changes: the operation's RESOURCE_ID (every ticket on it without one moves)."""
        moved = Op(op.key, machine, op.poisoned)
        where = [OPERATION.c[k] == v for k, v in op.key.work_order.as_child_columns().items()]
        conn.execute(
            update(OPERATION).where(*where, OPERATION.c["SEQUENCE_NO"] == op.seq).values(RESOURCE_ID=machine)
        )
        for t in self.tickets.values():
            if t.op == op:
                t.op = moved
        self.ops[op.machine].remove(op)
        self.ops[machine].append(moved)
        return moved


# -- the generator ------------------------------------------------------------------------------------

STEP_WEIGHTS: dict[str, float] = {
    "crew_join": 3,
    "other_op": 3,
    "handover": 2,
    "clock_in": 3,
    "clock_in_late": 1,
    "clock_in_ahead": 0.4,
    "clock_out": 4,
    "clock_out_late": 2,
    "reopen": 1.5,
    "edit_op": 0.7,
    "edit_machine": 0.7,
    "reroute": 0.5,
    "delete_open": 0.7,
    "poisoned": 1,
}
FAMILIES = tuple(STEP_WEIGHTS)
MAX_OPEN_PER_MACHINE = 4


@dataclass
class Batch:
    """One trial's ERP changes, applied in one transaction at `at` (ERP-local)."""

    at: datetime
    steps: list[Step] = field(default_factory=list)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def kinds(self) -> set[str]:
        return {s.kind for s in self.steps}


class Scenario:
    """Draws and applies each trial's batch; the first batch opens a shift started hours ago."""

    def __init__(self, shop: ScenarioShop, rng: random.Random) -> None:
        self.shop = shop
        self.rng = rng

    def opening(self) -> Batch:
        """The shift so far: on most machines one or two tickets, clocked in 1-9 hours ago."""
        shop, rng = self.shop, self.rng
        batch = Batch(local_now())
        with shop.engine.begin() as conn:
            for machine in shop.machines:
                if rng.random() < 0.25:
                    continue
                at = batch.at - timedelta(minutes=rng.randint(60, 540))
                op = rng.choice(shop.ops[machine])
                t = shop.clock_in(conn, op, at, rng.choice("SRR"), rng)
                batch.steps.append(
                    Step("opening", f"opening: LT{t.id} {t.type} on {machine} {op.label()} at {at:%H:%M}")
                )
                if rng.random() < 0.4:  # a crew member or another operation, later in the shift
                    later = at + timedelta(minutes=rng.randint(5, 50))
                    other = op if rng.random() < 0.5 else rng.choice(shop.ops[machine])
                    t2 = shop.clock_in(conn, other, later, rng.choice("SR"), rng)
                    batch.steps.append(
                        Step(
                            "opening",
                            f"opening: LT{t2.id} {t2.type} on {machine} {other.label()} at {later:%H:%M}",
                        )
                    )
        return batch

    def next_batch(self, steps: int) -> Batch:
        """`steps` steps drawn by weight; each is applied, in order, in one ERP transaction."""
        batch = Batch(local_now())
        deleted = False
        with self.shop.engine.begin() as conn:
            for _ in range(steps):
                kinds = [k for k in FAMILIES if not (deleted and k == "delete_open")]
                kind = self.rng.choices(kinds, weights=[STEP_WEIGHTS[k] for k in kinds])[0]
                step = getattr(self, f"_{kind}")(conn, batch.at)
                if step is None:  # nothing to do it on: a plain clock-in instead
                    step = self._clock_in(conn, batch.at)
                deleted = deleted or step.kind == "delete_open"
                batch.steps.append(step)
        return batch

    # -- steps ------------------------------------------------------------------------------------
    def _busy_machine(self) -> str | None:
        busy = [m for m in self.shop.machines if self.shop.open_tickets(m)]
        return self.rng.choice(busy) if busy else None

    def _roomy_machine(self) -> str:
        shop = self.shop
        roomy = [m for m in shop.machines if len(shop.open_tickets(m)) < MAX_OPEN_PER_MACHINE]
        return self.rng.choice(roomy or shop.machines)

    def _new(self, conn: Connection, kind: str, op: Op, at: datetime, ticket_type: str, what: str) -> Step:
        t = self.shop.clock_in(conn, op, at, ticket_type, self.rng)
        return Step(kind, f"{kind}: LT{t.id} {t.type} on {op.machine} {op.label()} at {at:%H:%M:%S}{what}")

    def _clock_in(self, conn: Connection, at: datetime) -> Step:
        machine = self._roomy_machine()
        return self._new(
            conn, "clock_in", self.rng.choice(self.shop.ops[machine]), at, self.rng.choice("SRR"), ""
        )

    def _clock_in_late(self, conn: Connection, at: datetime) -> Step:
        machine = self._roomy_machine()
        late = at - timedelta(minutes=self.rng.randint(2, 90))
        op = self.rng.choice(self.shop.ops[machine])
        return self._new(
            conn, "clock_in_late", op, late, self.rng.choice("SRR"), f" (entered at {at:%H:%M:%S})"
        )

    def _clock_in_ahead(self, conn: Connection, at: datetime) -> Step:
        """A terminal whose clock runs ahead: CLOCK_IN a few minutes in the future."""
        machine = self._roomy_machine()
        ahead = at + timedelta(seconds=self.rng.randint(20, 300))
        op = self.rng.choice(self.shop.ops[machine])
        return self._new(
            conn, "clock_in_ahead", op, ahead, self.rng.choice("SRR"), f" (entered at {at:%H:%M:%S})"
        )

    def _crew_join(self, conn: Connection, at: datetime) -> Step | None:
        machine = self._busy_machine()
        op = None if machine is None else self.shop.shown_op(machine)
        if op is None:
            return None
        return self._new(conn, "crew_join", op, at, self.rng.choice("SRR"), " (crew)")

    def _other_op(self, conn: Connection, at: datetime) -> Step | None:
        machine = self._busy_machine()
        shown = None if machine is None else self.shop.shown_op(machine)
        others = [op for op in self.shop.ops.get(machine or "", []) if op != shown]
        if machine is None or not others:
            return None
        return self._new(
            conn, "other_op", self.rng.choice(others), at, self.rng.choice("SRR"), " (another operation)"
        )

    def _handover(self, conn: Connection, at: datetime) -> Step | None:
        """A setup ticket hands over to a run ticket on the same operation (out and in at once)."""
        setups = [t for t in self.shop.open_tickets() if t.type == "S"]
        if not setups:
            return None
        setup = self.rng.choice(setups)
        self.shop.clock_out(conn, setup, at)
        step = self._new(conn, "handover", setup.op, at, "R", f" (takes over from setup LT{setup.id})")
        if self.rng.random() < 0.3:  # the setup tech stays on a little: the run ticket first
            self.shop.reopen(conn, setup)
            return Step("handover", step.name + f", LT{setup.id} still clocked in")
        return step

    def _clock_out(self, conn: Connection, at: datetime) -> Step | None:
        open_ = self.shop.open_tickets()
        if not open_:
            return None
        t = self.rng.choice(open_)
        self.shop.clock_out(conn, t, at)
        return Step("clock_out", f"clock_out: LT{t.id} on {t.machine} at {t.clock_out:%H:%M:%S}")

    def _clock_out_late(self, conn: Connection, at: datetime) -> Step | None:
        """A clock-out entered late: CLOCK_OUT hours (or minutes) before it was entered."""
        open_ = self.shop.open_tickets()
        if not open_:
            return None
        t = self.rng.choice(open_)
        span = (at - t.clock_in).total_seconds()
        back = at - timedelta(seconds=int(span * self.rng.uniform(0.05, 0.95)))
        self.shop.clock_out(conn, t, back)
        return Step(
            "clock_out_late",
            f"clock_out_late: LT{t.id} on {t.machine} at {back:%H:%M:%S}, entered {at:%H:%M:%S}",
        )

    def _reopen(self, conn: Connection, at: datetime) -> Step | None:
        closed = [
            t
            for t in self.shop.tickets.values()
            if t.clock_out is not None and not t.deleted and t.bad is None
        ]
        if not closed:
            return None
        t = self.rng.choice(closed)
        was = t.clock_out
        self.shop.reopen(conn, t)
        return Step("reopen", f"reopen: LT{t.id} on {t.machine} (clocked out at {was:%H:%M:%S})")

    def _edit_op(self, conn: Connection, at: datetime) -> Step | None:
        open_ = self.shop.open_tickets()
        if not open_:
            return None
        t = self.rng.choice(open_)
        choices = [op for ops in self.shop.ops.values() for op in ops if op != t.op]
        op = self.rng.choice(choices)
        was = t.op
        self.shop.edit_op(conn, t, op)
        return Step(
            "edit_op", f"edit_op: LT{t.id} open, operation {was.label()} -> {op.label()} ({op.machine})"
        )

    def _edit_machine(self, conn: Connection, at: datetime) -> Step | None:
        open_ = self.shop.open_tickets()
        if not open_:
            return None
        t = self.rng.choice(open_)
        machine = self.rng.choice([m for m in self.shop.machines if m != t.machine])
        was = t.machine
        self.shop.edit_machine(conn, t, machine)
        return Step("edit_machine", f"edit_machine: LT{t.id} open, RESOURCE_ID {was} -> {machine}")

    def _reroute(self, conn: Connection, at: datetime) -> Step | None:
        """An operation with open tickets is moved to another machine in the routing."""
        shop = self.shop
        movable = [
            t.op for t in shop.open_tickets() if t.resource is None and len(shop.ops[t.op.machine]) > 1
        ]
        if not movable:
            return None
        op = self.rng.choice(movable)
        machine = self.rng.choice([m for m in shop.machines if m != op.machine])
        was = op.machine
        moved = shop.reroute(conn, op, machine)
        tickets = sorted(t.id for t in shop.open_tickets() if t.op == moved)
        return Step("reroute", f"reroute: {op.label()} {was} -> {machine}, open on it: {tickets}")

    def _delete_open(self, conn: Connection, at: datetime) -> Step | None:
        open_ = self.shop.open_tickets()
        if not open_:
            return None
        t = self.rng.choice(open_)
        self.shop.delete(conn, t)
        return Step("delete_open", f"delete_open: LT{t.id} on {t.machine} deleted while open")

    def _poisoned(self, conn: Connection, at: datetime) -> Step:
        """A ticket with one bad cell among good rows: quarantined, its machine unaffected."""
        shop, rng = self.shop, self.rng
        kind = rng.choice(["clock_in_9999", "clock_in_0001", "type", "operation"])
        if kind == "operation":
            op = shop.poisoned_op
            t = shop.clock_in(conn, op, at, "R", rng, bad="CALC_END_QTY")
        else:
            op = rng.choice(shop.ops[self._roomy_machine()])
            when = {"clock_in_9999": datetime(9999, 12, 31, 23, 59), "clock_in_0001": datetime(1, 1, 1)}.get(
                kind, at
            )
            t = shop.clock_in(
                conn,
                op,
                when,
                "X" if kind == "type" else "R",
                rng,
                bad="TYPE" if kind == "type" else "CLOCK_IN",
            )
        return Step("poisoned", f"poisoned: LT{t.id} on {op.machine} bad {t.bad} ({kind})")
