"""What the ERP side of a trial does: operators clock in and out, MM counts parts.

The campaign keeps one open labor ticket per machine (an operator clocks out before the next one
clocks in), so the expected MM state is simply: every open ticket's run open on its machine,
every closed ticket's run closed (or never started). The next operator clocks in at least a second
after the last one clocked out: by the multi-ticket rule (docs/architecture.md "Several tickets on
one machine") a ticket on the same operation that clocks in no later than the run's last clock-out
joins that run (a crew) instead of starting its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import update

from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.simulator import MMSimulator
from tests.sync_helpers import ERP_TZ, Shop


def local_now() -> datetime:
    """The ERP's wall clock (VISUAL stores naive local times), to the second."""
    return datetime.now(ZoneInfo(ERP_TZ)).replace(tzinfo=None, microsecond=0)


def run_id(ticket: int) -> str:
    return f"erp:LT{ticket}"


@dataclass
class ShopFloor:
    """The ERP's truth as the trial made it: open tickets, closed runs, each run's machine."""

    shop: Shop
    open: dict[str, int] = field(default_factory=dict)  # machine -> open ticket
    closed: set[str] = field(default_factory=set)  # run ids the ERP closed
    machine_of: dict[str, str] = field(default_factory=dict)  # run id -> machine
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # run id -> total, scrap, nc
    clocked_in: dict[int, datetime] = field(default_factory=dict)  # ticket -> CLOCK_IN

    def open_runs(self) -> dict[str, str]:
        return {run_id(t): m for m, t in self.open.items()}

    def clock_in(self, machine: str, rng: random.Random, after: datetime | None = None) -> None:
        """A new ticket, clocked in now, or a second after `after` (the last clock-out there)."""
        at = local_now() if after is None else max(local_now(), after + timedelta(seconds=1))
        ticket = self.shop.fx.clock_in(
            self.shop.ops[machine],
            at,
            ticket_type=rng.choice("RRS"),
            employee_id=f"E{rng.randint(1, 9)}",
        )
        self.open[machine] = ticket
        self.clocked_in[ticket] = at
        self.machine_of[run_id(ticket)] = machine

    def clock_out(self, machine: str) -> datetime:
        """CLOCK_OUT only: the quantities on the ticket are erpsync's to write (write-back sink).
        A second ago when the ticket is older than that; returns the clock-out."""
        ticket = self.open.pop(machine)
        at = max(local_now() - timedelta(seconds=1), self.clocked_in.get(ticket, datetime.min))
        with self.shop.engine.begin() as conn:
            conn.execute(
                update(LABOR_TICKET)
                .where(LABOR_TICKET.c["TRANSACTION_ID"] == ticket)
                .values(CLOCK_OUT=at, ACT_CLOCK_OUT=at)
            )
        self.closed.add(run_id(ticket))
        return at

    def operate(self, rng: random.Random, changes: int) -> list[str]:
        """`changes` operators act on random machines; returns what they did."""
        done = []
        for machine in rng.sample(self.shop.machines, k=min(changes, len(self.shop.machines))):
            if machine in self.open:
                out = self.clock_out(machine)
                done.append(f"out {machine}")
                if rng.random() < 0.6:
                    self.clock_in(machine, rng, after=out)
                    done.append(f"in {machine}")
            else:
                self.clock_in(machine, rng)
                done.append(f"in {machine}")
        return done

    def count_parts(self, sim: MMSimulator, rng: random.Random) -> int:
        """MM makes parts on every run it has open: counts only grow (set exactly, no drift)."""
        grown = 0
        for rid, run in sim.runs().items():
            if run["end_at"] is not None or rid not in self.machine_of:
                continue
            total, scrap, nonconform = self.counts.get(rid, (0, 0, 0))
            made = rng.randint(1, 25)
            bad = rng.randint(0, 2) if made > 5 else 0
            new = (total + made, scrap + bad, nonconform + (1 if rng.random() < 0.1 else 0))
            sim.set_counts(rid, total=new[0], scrap=new[1], nonconform=new[2])
            self.counts[rid] = new
            grown += 1
        return grown
