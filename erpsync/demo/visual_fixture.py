"""`VisualFixture`: VISUAL data in a test or demo database, made the way VISUAL's clients make it.

Resources, parts, work orders, operations and labor tickets (clock in = open ticket, clock out =
CLOCK_OUT + quantities) in the tables of erpsync/adapters/erp/visual_schema.py. The demo, the
tests and the benchmarks build their ERP with it; erpsync itself never writes these rows to an ERP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Table, func, insert, select, update

from erpsync.adapters.erp.visual_schema import LABOR_TICKET, OPERATION, PART, SHOP_RESOURCE, WORK_ORDER

_WO_KEY = ("TYPE", "BASE_ID", "LOT_ID", "SPLIT_ID", "SUB_ID")
_CHILD_KEY = (
    "WORKORDER_TYPE",
    "WORKORDER_BASE_ID",
    "WORKORDER_LOT_ID",
    "WORKORDER_SPLIT_ID",
    "WORKORDER_SUB_ID",
)


@dataclass(frozen=True, slots=True)
class WorkOrderKey:
    """VISUAL's five-part work-order key, exactly as stored (padding included)."""

    type: str
    base_id: str
    lot_id: str = "1"
    split_id: str = "0"
    sub_id: str = "0"

    def as_wo_columns(self) -> dict[str, str]:
        """WORK_ORDER's key columns."""
        return dict(zip(_WO_KEY, self.values(), strict=True))

    def as_child_columns(self) -> dict[str, str]:
        """The `WORKORDER_*` key columns of OPERATION / LABOR_TICKET."""
        return dict(zip(_CHILD_KEY, self.values(), strict=True))

    def values(self) -> tuple[str, str, str, str, str]:
        return (self.type, self.base_id, self.lot_id, self.split_id, self.sub_id)


@dataclass(frozen=True, slots=True)
class OperationKey:
    """A work-order operation: the work order plus its SEQUENCE_NO."""

    work_order: WorkOrderKey
    sequence_no: int


def work_order_values(key: WorkOrderKey, *, site_id: str, **columns: Any) -> dict[str, Any]:
    """A WORK_ORDER row for bulk inserts: key + site + any other columns."""
    return {**key.as_wo_columns(), "SITE_ID": site_id, **columns}


def operation_values(key: OperationKey, resource_id: str, *, site_id: str, **columns: Any) -> dict[str, Any]:
    """An OPERATION row for bulk inserts."""
    return {
        **key.work_order.as_child_columns(),
        "SEQUENCE_NO": key.sequence_no,
        "RESOURCE_ID": resource_id,
        "SITE_ID": site_id,
        **columns,
    }


def labor_ticket_values(
    transaction_id: int,
    operation: OperationKey | None,
    *,
    site_id: str,
    ticket_type: str = "R",
    employee_id: str = "EMP1",
    resource_id: str | None = None,
    clock_in: datetime | None = None,
    clock_out: datetime | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """A LABOR_TICKET row for bulk inserts; `operation=None` makes an indirect ticket."""
    key: dict[str, Any] = dict.fromkeys(_CHILD_KEY)
    seq = None
    if operation is not None:
        key = dict(operation.work_order.as_child_columns())
        seq = operation.sequence_no
    transaction_date = clock_in or datetime(2000, 1, 1)
    return {
        "TRANSACTION_ID": transaction_id,
        **key,
        "OPERATION_SEQ_NO": seq,
        "TYPE": ticket_type,
        "EMPLOYEE_ID": employee_id,
        "RESOURCE_ID": resource_id,
        "CLOCK_IN": clock_in,
        "CLOCK_OUT": clock_out,
        "ACT_CLOCK_IN": clock_in,
        "ACT_CLOCK_OUT": clock_out,
        "TRANSACTION_DATE": transaction_date,
        "SITE_ID": site_id,
        **columns,
    }


class VisualFixture:
    """Builds VISUAL data in a fixture database; each call commits, like a VISUAL client would.

    Times are naive local wall times, as VISUAL stores them. Ticket ids are allocated as
    max(TRANSACTION_ID) + 1 (VISUAL allocates them itself; erpsync never does in a real ERP).
    """

    def __init__(self, engine: Engine, *, site_id: str = "MAIN") -> None:
        self.engine = engine
        self.site_id = site_id

    def insert(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert many rows in one transaction (benchmarks pass thousands at a time)."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(table), list(rows))

    def add_resource(self, resource_id: str, description: str = "", *, status: str | None = None) -> str:
        """A SHOP_RESOURCE (machine / work center); returns its id."""
        self.insert(
            SHOP_RESOURCE, [{"ID": resource_id, "DESCRIPTION": description or None, "STATUS": status}]
        )
        return resource_id

    def add_part(self, part_id: str, description: str = "", *, stock_um: str = "EA") -> str:
        """A PART; returns its id."""
        self.insert(PART, [{"ID": part_id, "DESCRIPTION": description or None, "STOCK_UM": stock_um}])
        return part_id

    def add_work_order(
        self,
        base_id: str,
        lot_id: str = "1",
        split_id: str = "0",
        sub_id: str = "0",
        *,
        type: str = "W",
        part_id: str | None = None,
        desired_qty: Decimal | int | None = None,
        status: str = "R",
        want_date: datetime | None = None,
    ) -> WorkOrderKey:
        """A WORK_ORDER header (SUB_ID '0') or leg (SUB_ID > '0'); returns its key."""
        key = WorkOrderKey(type, base_id, lot_id, split_id, sub_id)
        row = work_order_values(
            key,
            site_id=self.site_id,
            PART_ID=part_id,
            DESIRED_QTY=desired_qty,
            STATUS=status,
            DESIRED_WANT_DATE=want_date,
        )
        self.insert(WORK_ORDER, [row])
        return key

    def add_operation(
        self,
        work_order: WorkOrderKey,
        sequence_no: int,
        resource_id: str,
        *,
        setup_hrs: Decimal | float | None = None,
        run: Decimal | float | None = None,
        run_type: str = "HRS/PC",
        calc_end_qty: Decimal | int | None = None,
        status: str = "R",
        service_id: str | None = None,
        vendor_id: str | None = None,
        operation_type: str | None = None,
    ) -> OperationKey:
        """An OPERATION on a work order; `service_id`/`vendor_id` make it an outside service."""
        key = OperationKey(work_order, sequence_no)
        row = operation_values(
            key,
            resource_id,
            site_id=self.site_id,
            SETUP_HRS=_dec(setup_hrs),
            RUN=_dec(run),
            RUN_TYPE=run_type,
            CALC_END_QTY=calc_end_qty,
            STATUS=status,
            SERVICE_ID=service_id,
            VENDOR_ID=vendor_id,
            OPERATION_TYPE=operation_type,
        )
        self.insert(OPERATION, [row])
        return key

    def next_transaction_id(self) -> int:
        with self.engine.connect() as conn:
            current = conn.execute(select(func.max(LABOR_TICKET.c.TRANSACTION_ID))).scalar()
        return int(current or 0) + 1

    def clock_in(
        self,
        operation: OperationKey | None,
        at: datetime,
        *,
        employee_id: str = "EMP1",
        ticket_type: str = "R",
        resource_id: str | None = None,
        indirect_id: str | None = None,
        transaction_id: int | None = None,
    ) -> int:
        """Open a labor ticket (CLOCK_OUT null); `operation=None` is indirect labor. Returns its id."""
        tid = transaction_id if transaction_id is not None else self.next_transaction_id()
        row = labor_ticket_values(
            tid,
            operation,
            site_id=self.site_id,
            ticket_type=ticket_type,
            employee_id=employee_id,
            resource_id=resource_id,
            clock_in=at,
            INDIRECT_ID=indirect_id,
            INDIRECT_CODE="Y" if operation is None else "N",
        )
        self.insert(LABOR_TICKET, [row])
        return tid

    def clock_out(
        self,
        transaction_id: int,
        at: datetime,
        good_qty: Decimal | int = 0,
        bad_qty: Decimal | int = 0,
    ) -> None:
        """Close a ticket: CLOCK_OUT, hours worked and the reported quantities."""
        with self.engine.begin() as conn:
            ticket = LABOR_TICKET.c["TRANSACTION_ID"] == transaction_id
            started = conn.execute(select(LABOR_TICKET.c.CLOCK_IN).where(ticket)).scalar_one()
            hours = None
            if started is not None:
                hours = Decimal((at - started).total_seconds()) / Decimal(3600)
                hours = hours.quantize(Decimal("0.001"))
            conn.execute(
                update(LABOR_TICKET)
                .where(ticket)
                .values(
                    CLOCK_OUT=at,
                    ACT_CLOCK_OUT=at,
                    HOURS_WORKED=hours,
                    GOOD_QTY=good_qty,
                    BAD_QTY=bad_qty,
                )
            )

    def tickets(self, transaction_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """LABOR_TICKET rows as dicts (tests assert on what a sink wrote)."""
        stmt = select(LABOR_TICKET).order_by(LABOR_TICKET.c.TRANSACTION_ID)
        if transaction_ids is not None:
            stmt = stmt.where(LABOR_TICKET.c.TRANSACTION_ID.in_(list(transaction_ids)))
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]


def _dec(value: Decimal | float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))
