"""The ERP of the CSV trials: work-order operations, as a scheduled Infor VISUAL export shows them
(the Infor LN export of the same rows is tests/campaign/csv_ln.py).

One row per operation, each on a machine of its own while it is open (the simple one-ticket-per-
machine shop: the CSV export has no labor tickets). A row's life: not started -> setup (actual
setup hours, an ACT_START_DATE) -> production (SETUP_COMPLETED = Y, good quantity) -> ended
(Run_Complete = Yes or STATUS = C, a CLOSE_DATE) -> dropped from the export later. Names carry
accents (FRÄSE 1, MÜLLER-12, Ø, µ, é) so an encoding flip that reads them differently shows.
`Shop.advance` is the ERP between two exports: operators clock in and out, rows are added,
closed rows drop out, rarely an open row is deleted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tests.campaign.csv_oracle import RowView, ShopState, State, machines_in_use
from tests.campaign.csv_render import Format

HEADER = [
    "WORKORDER_TYPE", "WORKORDER_BASE_ID", "WORKORDER_LOT_ID", "WORKORDER_SPLIT_ID", "WORKORDER_SUB_ID",
    "SEQUENCE_NO", "RESOURCE_ID", "PART_ID", "DESCRIPTION", "CALC_END_QTY", "DESIRED_QTY", "QTY_GOOD",
    "SETUP_HRS", "RUN", "RUN_TYPE", "STATUS", "SETUP_COMPLETED", "Run_Complete", "ACT_SETUP_HRS",
    "ACT_RUN_HRS", "ACT_START_DATE", "CLOSE_DATE", "DESIRED_WANT_DATE",
]  # fmt: skip
COLUMN = {name: i for i, name in enumerate(HEADER)}
NUMERIC = ("CALC_END_QTY", "DESIRED_QTY", "QTY_GOOD", "SETUP_HRS", "RUN", "ACT_SETUP_HRS", "ACT_RUN_HRS")
MACHINES = (
    "FRÄSE 1", "DREH-2", "F FOIL MILL #1", "BOHRWERK Ø3", "HAAS VF-2", "MAZAK 5", "SÄGE 7", "CNC 8",
    "LASER É9", "PRESSE 10",
)  # fmt: skip
PREFIXES = ("24-", "MÜLLER-", "A18084", "KÖNIG-", "W")
PARTS = (
    ("GEHÄUSE-7", "Gehäuse Ø 40 mm"),
    ("FL-20", "Flansch Ø 20, µ-finish"),
    ("BRK-1", 'Bracket, "L" shape; zinc'),
    ("PIÈCE-3", "Pièce détachée"),
    ("SHAFT-9", "Welle 30° geschliffen"),
    ("PLT-4", "Platte\nzweizeilig"),  # a description over two lines (quoted newline)
)
# (RUN, RUN_TYPE, ms per part): the part time MM must get
STANDARDS = (
    ("0.25", "MIN/PC", 15_000),
    ("1.5", "MIN/PC", 90_000),
    ("45", "SEC/PC", 45_000),
    ("60", "PCS/HR", 60_000),
    ("120", "PCS/HR", 30_000),
    ("0.02", "HRS/PC", 72_000),
)
ERP_TZ = ZoneInfo("America/Chicago")


def utc(local: datetime) -> datetime:
    """ERP wall time (naive, America/Chicago) as UTC: the first of two autumn hours, spring gaps
    shifted forward (zoneinfo's fold=0 does both, as erpsync's rule says)."""
    return local.replace(tzinfo=ERP_TZ).astimezone(UTC)


def fmt_date(value: datetime | None, style: str) -> str:
    if value is None:
        return ""
    if style == "us":
        hour = value.hour % 12 or 12
        noon = "PM" if value.hour >= 12 else "AM"
        return f"{value.month}/{value.day}/{value.year} {hour}:{value.minute:02d} {noon}"
    if style == "eu":
        return value.strftime("%d.%m.%Y %H:%M")
    return value.strftime("%Y-%m-%d %H:%M")


@dataclass
class Op:
    """One operation row of the export (the ERP's truth)."""

    base: str
    seq: int
    machine: str
    part: tuple[str, str]
    qty: int
    standard: tuple[str, str, int]
    setup_hrs: str
    due: datetime
    lot: str = "1"
    state: State = "not_started"
    start: datetime | None = None  # ERP wall time
    show_start: bool = True
    close: datetime | None = None
    show_close: bool = True
    by_status: bool = False  # ended by STATUS = C (else Run_Complete = Yes)
    good: int = 0
    listed: bool = True
    ln: bool = False  # an Infor LN row: the base is the production order, no lot

    @property
    def key(self) -> str:
        return f"{self.base}|{self.seq}" if self.ln else f"W/{self.base}/{self.lot}/0/0|{self.seq}"

    def view(self) -> RowView:
        job = self.base if self.ln else f"{self.base}/{self.lot}"
        started = self.start if self.show_start and self.start is not None else None
        closed = self.close if self.show_close and self.close is not None else None
        return RowView(
            key=self.key,
            job=job,
            operation=f"{job}|{self.seq}",
            machine=self.machine,
            part=self.part[0],
            state=self.state,
            start=utc(started) if started is not None else None,
            end=utc(closed) if closed is not None else None,
            part_time_ms=self.standard[2],
        )

    def cells(self, fmt: Format) -> list[str]:
        """The row in the canonical column order, numbers and dates in the file's style."""
        run, run_type, _ = self.standard
        started = self.state != "not_started"
        ended = self.state == "ended"
        cells = {
            "WORKORDER_TYPE": "W", "WORKORDER_BASE_ID": self.base, "WORKORDER_LOT_ID": self.lot,
            "WORKORDER_SPLIT_ID": "0", "WORKORDER_SUB_ID": "0", "SEQUENCE_NO": str(self.seq),
            "RESOURCE_ID": self.machine, "PART_ID": self.part[0], "DESCRIPTION": self.part[1],
            "CALC_END_QTY": str(self.qty), "DESIRED_QTY": str(self.qty), "QTY_GOOD": str(self.good),
            "SETUP_HRS": self.setup_hrs, "RUN": run, "RUN_TYPE": run_type,
            "STATUS": "C" if ended and self.by_status else "R",
            "SETUP_COMPLETED": "Y" if self.state in ("production", "ended") else "N",
            "Run_Complete": "Yes" if ended and not self.by_status else "No",
            "ACT_SETUP_HRS": "0.5" if started else "0",
            "ACT_RUN_HRS": "1.25" if self.state in ("production", "ended") else "0",
            "ACT_START_DATE": fmt_date(self.start if started and self.show_start else None, fmt.dates),
            "CLOSE_DATE": fmt_date(self.close if ended and self.show_close else None, fmt.dates),
            "DESIRED_WANT_DATE": fmt_date(self.due, fmt.dates),
        }  # fmt: skip
        if fmt.decimal == ",":
            for name in NUMERIC:
                cells[name] = cells[name].replace(".", ",")
        return [cells[h] for h in HEADER]


@dataclass
class Shop:
    """The ERP's rows and clock; `advance` is what happens between two exports."""

    rng: random.Random
    now: datetime  # ERP wall time of the next export
    ops: list[Op] = field(default_factory=list)
    serial: int = 0
    ln: bool = False  # Infor LN rows

    @classmethod
    def opened(cls, rng: random.Random, *, ln: bool = False) -> Shop:
        """A shop part-way through its day: 4-7 rows, some running, one or two already ended."""
        local = datetime.now(UTC).astimezone(ERP_TZ).replace(tzinfo=None, second=0, microsecond=0)
        shop = cls(rng, local - timedelta(hours=11), ln=ln)
        kinds: tuple[State, ...] = ("not_started", "setup", "production", "ended")
        phases = [rng.choice(kinds) for _ in range(rng.randint(4, 7))]
        for phase in sorted(phases, key=lambda p: p != "ended"):  # ended rows two hours earlier:
            if phase != "ended":  # a machine runs one row at a time
                shop.now = local - timedelta(hours=9)
            shop.add_row(ShopState("flag"), phase)
        shop.now = local - timedelta(hours=9)
        return shop

    def add_row(self, state: ShopState, phase: State) -> str | None:
        taken = machines_in_use(state, (o.view() for o in self.ops))
        taken.update(o.machine for o in self.ops if o.listed and o.state != "ended")
        free = [m for m in MACHINES if m not in taken]
        if not free:
            return None
        rng = self.rng
        self.serial += 1
        op = Op(
            base=f"{rng.choice(PREFIXES)}{1000 + self.serial}",
            seq=rng.choice((10, 20, 30)),
            machine=rng.choice(free),
            part=rng.choice(PARTS),
            qty=rng.choice((50, 100, 250, 1200)),
            standard=rng.choice(STANDARDS),
            setup_hrs=rng.choice(("0.5", "1", "1.5", "0")),
            due=self.now + timedelta(days=rng.randint(1, 20)),
            lot=rng.choice(("1", "1", "2")),
            ln=self.ln,
        )
        self.ops.append(op)
        if phase != "not_started":
            self._clock_in(op, "production" if phase == "ended" else phase)
            if phase == "ended":
                self._clock_out(op)
        return f"new row {op.key} on {op.machine} ({phase})"

    def _clock_in(self, op: Op, phase: State) -> None:
        op.state, op.start = phase, self.now - timedelta(minutes=self.rng.randint(1, 15))
        op.show_start = self.rng.random() < 0.85 or (op.ln and phase == "setup")  # LN: setup = a start
        op.good = 0 if phase == "setup" else self.rng.randint(0, 5)

    def _clock_out(self, op: Op) -> None:
        assert op.start is not None
        op.state, op.close = "ended", max(op.start, self.now - timedelta(minutes=self.rng.randint(0, 10)))
        op.show_close, op.by_status = self.rng.random() < 0.8, self.rng.random() < 0.4

    def advance(self, state: ShopState) -> list[str]:
        """20-40 minutes of the ERP: 1-3 changes (state: what MM is expected to show now)."""
        rng = self.rng
        self.now += timedelta(minutes=rng.randint(20, 40))
        busy = machines_in_use(state, (o.view() for o in self.ops))
        changes: list[str] = []
        for _ in range(rng.randint(1, 3)):
            listed = [o for o in self.ops if o.listed]
            waiting = [o for o in listed if o.state == "not_started" and o.machine not in busy]
            setup = [o for o in listed if o.state == "setup"]
            running = [o for o in listed if o.state == "production"]
            ended = [o for o in listed if o.state == "ended"]
            choices: list[tuple[float, str, list[Op | None]]] = [
                (3, "clock in", [*waiting]), (2, "setup done", [*setup]), (2, "counts", [*running]),
                (3, "clock out", [*setup, *running]), (2, "new row", [None]),
                (1, "closed row dropped", [*ended]), (0.3, "open row deleted", [*setup, *running]),
            ]  # fmt: skip
            usable = [(w, name, ops) for w, name, ops in choices if ops]
            _, name, ops = rng.choices(usable, weights=[w for w, _, _ in usable])[0]
            op = rng.choice(ops)
            if name == "new row":
                phases: tuple[State, ...] = ("not_started", "setup", "production")
                done = self.add_row(state, rng.choice(phases))
                if done:
                    changes.append(done)
                    busy.add(self.ops[-1].machine)
                continue
            assert op is not None
            if name == "clock in":
                self._clock_in(op, rng.choice(("setup", "production")))
                busy.add(op.machine)
            elif name == "setup done":
                op.state = "production"
            elif name == "counts":
                op.good += rng.randint(1, 40)
            elif name == "clock out":
                self._clock_out(op)
            else:
                op.listed = False
            changes.append(f"{name}: {op.key} on {op.machine}")
        return changes
