"""The demo ERP: a small Infor VISUAL job shop in SQLite, and the clock-ins and clock-outs on it.

It is built with the schema and fixture erpsync's tests use (adapters/erp/visual_schema.py,
demo/visual_fixture.py), so erpsync reads it through the real ``infor-visual`` preset, exactly as
it reads a VISUAL database. VISUAL stores naive local wall times: the plant is in `PLANT_TZ`, and
every clock-in and clock-out happens "now" in the plant's time. History older than the preset's
look-back (72 h) makes the tables look lived-in without ever being read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, update

from erpsync.adapters.erp.visual_schema import LABOR_TICKET, create_visual_schema
from erpsync.demo.visual_fixture import OperationKey, VisualFixture, labor_ticket_values

PLANT_TZ = "America/Chicago"
SITE_ID = "MAIN"
HISTORY_DAYS = (6, 5, 4)  # closed tickets this many days ago: older than the preset's look-back


@dataclass(frozen=True, slots=True)
class Machine:
    """A VISUAL shop resource; `in_mm` False = MachineMetrics does not know its ERP machine id."""

    id: str
    description: str
    in_mm: bool = True


@dataclass(frozen=True, slots=True)
class Job:
    """A work order (lot 1) for one part, with the one operation the demo clocks in on."""

    base_id: str
    part_id: str
    part: str
    quantity: int
    seq: int
    machine: str
    setup_hrs: float
    run: float  # the run standard, in `run_type` units (VISUAL's RUN / RUN_TYPE)
    run_type: str

    @property
    def name(self) -> str:
        """How erpsync names the job in MachineMetrics (`BASE/LOT`)."""
        return f"{self.base_id}/1"


MACHINES = (
    Machine("HAAS-VF2", "Haas VF-2 vertical mill"),
    Machine("OKUMA-LB3000", "Okuma LB3000 EX II lathe"),
    Machine("MAZAK-QTN250", "Mazak Quick Turn 250"),
    Machine("HAAS-ST20", "Haas ST-20Y lathe"),
    Machine("DMG-DMU50", "DMG Mori DMU 50 5-axis (new; not set up in MachineMetrics yet)", in_mm=False),
)

# Run standards in the units VISUAL sites really use; erpsync converts each to ms per part.
JOBS = (
    Job("24117", "BRK-6061-02", "Mounting bracket, 6061-T6", 120, 10, "HAAS-VF2", 0.75, 0.025, "HRS/PC"),
    Job("24118", "SHF-4140-18", "Drive shaft, 4140 HT", 60, 20, "OKUMA-LB3000", 1.0, 60, "PCS/HR"),
    Job("24119", "HSG-A356-07", "Pump housing, A356-T6", 40, 10, "MAZAK-QTN250", 1.5, 2.5, "MIN/PC"),
    Job("24120", "CVR-304-05", "Cover plate, 304 stainless", 200, 10, "HAAS-VF2", 0.5, 1.25, "MIN/PC"),
    Job("24121", "MNF-316-04", "Hydraulic manifold, 316 SS", 25, 30, "DMG-DMU50", 2.0, 0.1, "HRS/PC"),
    Job("24122", "BSH-932-12", "Flanged bushing, SAE 932", 250, 10, "HAAS-ST20", 0.5, 45, "SEC/PC"),
)
JOBS_BY_ID = {job.base_id: job for job in JOBS}
# finished work orders whose (old) labor tickets fill the history
DONE_JOBS = (
    Job("24109", "BRK-6061-02", "Mounting bracket, 6061-T6", 80, 10, "HAAS-VF2", 0.75, 0.025, "HRS/PC"),
    Job("24111", "SHF-4140-18", "Drive shaft, 4140 HT", 40, 20, "OKUMA-LB3000", 1.0, 60, "PCS/HR"),
    Job("24113", "BSH-932-12", "Flanged bushing, SAE 932", 500, 10, "HAAS-ST20", 0.5, 45, "SEC/PC"),
)

OPERATORS = {
    "JALVAREZ": "J. Alvarez",
    "KNGUYEN": "K. Nguyen",
    "TOKAFOR": "T. Okafor",
    "RSINGH": "R. Singh",
    "MBROOKS": "M. Brooks",
    "DLEE": "D. Lee",
}


def plant_now() -> datetime:
    """The plant's local wall time, naive and to the second, as VISUAL stores it."""
    return datetime.now(ZoneInfo(PLANT_TZ)).replace(tzinfo=None, microsecond=0)


class DemoErp:
    """The demo shop's VISUAL database: master data, history, and the operators' ticket actions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.fx = VisualFixture(engine, site_id=SITE_ID)
        self._ops: dict[str, OperationKey] = {}  # work order base id -> its operation

    def build(self) -> None:
        """Create the VISUAL tables and fill them: machines, parts, work orders, routings, history."""
        create_visual_schema(self.engine)
        for machine in MACHINES:
            self.fx.add_resource(machine.id, machine.description)
        parts = {job.part_id: job.part for job in (*JOBS, *DONE_JOBS)}
        for part_id, description in parts.items():
            self.fx.add_part(part_id, description)
        today = plant_now()
        for job in (*JOBS, *DONE_JOBS):
            done = job in DONE_JOBS
            wo = self.fx.add_work_order(
                job.base_id,
                part_id=job.part_id,
                desired_qty=job.quantity,
                status="C" if done else "R",
                want_date=today + timedelta(days=-3 if done else 7),
            )
            self._ops[job.base_id] = self.fx.add_operation(
                wo,
                job.seq,
                job.machine,
                setup_hrs=job.setup_hrs,
                run=job.run,
                run_type=job.run_type,
                calc_end_qty=job.quantity,
                status="C" if done else "R",
            )
        self._add_history(today)

    def _add_history(self, today: datetime) -> None:
        """Closed setup and run tickets of finished work orders, days ago (never read: too old)."""
        rows: list[dict[str, Any]] = []
        tid = 1000
        crews = ("JALVAREZ", "KNGUYEN", "MBROOKS")
        for days, job, employee in zip(HISTORY_DAYS, DONE_JOBS, crews, strict=True):
            day = (today - timedelta(days=days)).replace(hour=6, minute=0, second=0)
            shifts = (
                ("S", day, day + timedelta(hours=1), 0),
                ("R", day + timedelta(hours=1), day + timedelta(hours=9), job.quantity),
            )
            for ticket_type, clock_in, clock_out, good in shifts:
                hours = Decimal((clock_out - clock_in).total_seconds() / 3600).quantize(Decimal("0.001"))
                rows.append(
                    labor_ticket_values(
                        tid,
                        self._ops[job.base_id],
                        site_id=SITE_ID,
                        ticket_type=ticket_type,
                        employee_id=employee,
                        resource_id=job.machine,
                        clock_in=clock_in,
                        clock_out=clock_out,
                        HOURS_WORKED=hours,
                        GOOD_QTY=good,
                        SETUP_COMPLETED="Y" if ticket_type == "S" else "N",
                    )
                )
                tid += 1
        self.fx.insert(LABOR_TICKET, rows)

    # -- what operators do ---------------------------------------------------------------------

    def clock_in(self, employee: str, job_id: str, *, setup: bool = False, minutes_ago: int = 0) -> int:
        """Open a labor ticket (RUN, or SETUP) on the job's operation and machine; its TRANSACTION_ID."""
        return self.fx.clock_in(
            self._ops[job_id],
            plant_now() - timedelta(minutes=minutes_ago),
            employee_id=employee,
            ticket_type="S" if setup else "R",
            resource_id=JOBS_BY_ID[job_id].machine,
        )

    def clock_in_indirect(self, employee: str, indirect_id: str) -> int:
        """Indirect labor (a meeting, cleaning): a ticket with no work order, which erpsync skips."""
        return self.fx.clock_in(None, plant_now(), employee_id=employee, indirect_id=indirect_id)

    def clock_out(self, transaction_id: int, *, good: int | None = None, bad: int = 0) -> None:
        """Close a ticket. With `good`, the operator types the quantities; else they are left as they are.

        Leaving them is what a shop does when erpsync writes MachineMetrics' counts onto the ticket;
        it is one UPDATE, so it can never undo a count erpsync writes at the same moment.
        """
        at = plant_now()
        if good is not None:
            self.fx.clock_out(transaction_id, at, good_qty=good, bad_qty=bad)
            return
        ticket = LABOR_TICKET.c["TRANSACTION_ID"] == transaction_id
        with self.engine.begin() as conn:
            started = conn.execute(select(LABOR_TICKET.c.CLOCK_IN).where(ticket)).scalar_one()
            hours = Decimal((at - started).total_seconds() / 3600).quantize(Decimal("0.001"))
            conn.execute(
                update(LABOR_TICKET).where(ticket).values(CLOCK_OUT=at, ACT_CLOCK_OUT=at, HOURS_WORKED=hours)
            )
