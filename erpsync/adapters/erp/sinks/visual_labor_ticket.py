"""The `visual-labor-ticket` sink (opt-in): the run's counts set on its own VISUAL labor ticket.

Each VISUAL run erpsync starts in MM is one labor ticket (run key ``LT<TRANSACTION_ID>``), so the
MM run's absolute totals go on that ticket: ``GOOD_QTY = good``, ``BAD_QTY = scrap + nonconform``
(MM's two kinds of rejected part are both bad pieces to VISUAL). Replays set the same values.

The risk (docs/staging.md says why a table is safer): this is a direct SQL UPDATE of LABOR_TICKET,
the job Infor's API Toolkit (`EditLaborTicket`) does with its own checks. It skips VISUAL's business
logic: OPERATION.COMPLETED_QTY / DEVIATED_QTY and costs are ticket-fed rollups that VISUAL may only
recompute when its own code touches the ticket, and posted tickets should not change at all. Use
it only with the customer's approval, after a trial on a test copy of their database.

Safety: erpsync writes a ticket only while it still holds what erpsync last wrote (0/0 before the
first write) or a value it set out to write before a crash. Any other value was typed by a person
and is never overwritten (a conflict).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, MetaData, Select, Table, Update, inspect

from erpsync.adapters.erp.sinks._db import (
    CheckedTarget,
    erp_transaction,
    guarded_update,
    locked_rows,
    update_guarded,
)
from erpsync.adapters.erp.sinks.base import CountWrite, WriteResult
from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import PartCounts
from erpsync.domain.writeback_rules import CountValues, add_counts, describe_values, erp_verdict

# a ticket's run, or a later generation of it (domain/shop_floor.py): both write to the ticket
RUN_KEY_RE = re.compile(r"LT(\d{1,10})(?:#g\d{1,6})?")
BLANK: CountValues = {"GOOD_QTY": 0, "BAD_QTY": 0}


def labor_ticket_table(schema: str | None = None) -> Table:
    """VISUAL's LABOR_TICKET (erpsync.adapters.erp.visual_schema), in `schema` when one is set."""
    return LABOR_TICKET if schema is None else LABOR_TICKET.to_metadata(MetaData(), schema=schema)


def ticket_lock_statement(table: Table, ids: list[int]) -> Select[Any]:
    """The tickets' current counts, row-locked, by primary key in one order for every writer."""
    return locked_rows(table.c.TRANSACTION_ID, (table.c.GOOD_QTY, table.c.BAD_QTY), ids)


def ticket_update_statement(table: Table) -> Update:
    """Set one ticket's counts by primary key, only while it still holds what was read (guard)."""
    guards = {"TRANSACTION_ID": "t_id", "GOOD_QTY": "x_good", "BAD_QTY": "x_bad"}
    return guarded_update(table, guards, {"GOOD_QTY": "GOOD_QTY", "BAD_QTY": "BAD_QTY"})


def ticket_values(counts: PartCounts) -> dict[str, int]:
    """What a ticket holds for these counts: BAD_QTY = scrap + nonconform."""
    return {"GOOD_QTY": counts.good, "BAD_QTY": counts.scrap + counts.nonconform}


def _ticket_sum(counts: PartCounts | None, others: PartCounts | None) -> CountValues:
    """What the ticket holds for one of its runs' counts: the sum over all of its runs (a reopened
    ticket's generations), blank when there is nothing yet."""
    total = add_counts(counts, others)
    return ticket_values(total) if total is not None else BLANK


def _plus(values: CountValues, shift: CountValues) -> CountValues:
    return {key: values[key] + shift[key] for key in BLANK} if any(shift.values()) else values


def _number(value: Any) -> int | Decimal:
    number = Decimal(value)
    return int(number) if number == number.to_integral_value() else number


class VisualLaborTicketSink(CheckedTarget):
    """Sets GOOD_QTY / BAD_QTY on each run's labor ticket, one ERP transaction per batch."""

    name = "visual-labor-ticket"

    def __init__(self, engine: Engine, *, schema: str | None = None, batch_size: int = 500) -> None:
        self.engine = engine
        self.batch_size: int | None = batch_size
        self.table = labor_ticket_table(schema)

    def _require_target(self) -> None:
        if not inspect(self.engine).has_table("LABOR_TICKET", schema=self.table.schema):
            raise ConfigError(
                "writeback.sink = 'visual-labor-ticket': table LABOR_TICKET not found in the write-back "
                "database (check writeback.database and source.visual.schema_name)"
            )

    def check(self) -> str:
        self._check_now("writeback.sink = 'visual-labor-ticket'")
        return "table LABOR_TICKET is in the write-back database"

    def write(self, batch: Sequence[CountWrite]) -> list[WriteResult]:
        if not batch:
            return []
        results: dict[str, WriteResult] = {}
        tickets: dict[str, int] = {}
        for w in batch:
            match = RUN_KEY_RE.fullmatch(w.target.run_key)
            if match is None:
                results[w.mm_run_id] = WriteResult(
                    w.mm_run_id,
                    "failed",
                    message=f"run key {w.target.run_key!r} is not a VISUAL labor ticket (LT<id>[#g<n>])",
                )
            else:
                tickets[w.mm_run_id] = int(match.group(1))
        if tickets:
            self._check_table()
            results.update(self._write_tickets([w for w in batch if w.mm_run_id in tickets], tickets))
        return [results[w.mm_run_id] for w in batch]

    def _write_tickets(self, batch: Sequence[CountWrite], tickets: dict[str, int]) -> dict[str, WriteResult]:
        t = self.table
        results: dict[str, WriteResult] = {}
        updates: list[dict[str, Any]] = []
        with erp_transaction(self.engine, "LABOR_TICKET") as conn:
            rows = conn.execute(ticket_lock_statement(t, sorted(set(tickets.values())))).all()
            current: dict[int, CountValues] = {
                int(r.TRANSACTION_ID): {"GOOD_QTY": _number(r.GOOD_QTY), "BAD_QTY": _number(r.BAD_QTY)}
                for r in rows
            }
            # what this batch already wrote into a ticket, added to the next run of the same ticket
            moved: dict[int, CountValues] = {}
            for w in batch:
                ticket = tickets[w.mm_run_id]
                shift = moved.get(ticket, BLANK)
                new = _plus(_ticket_sum(w.counts, w.target.others), shift)
                before = current.get(ticket)
                if before is None:
                    results[w.mm_run_id] = WriteResult(
                        w.mm_run_id, "failed", after=new, message=f"LABOR_TICKET {ticket} not found"
                    )
                    continue
                expected = _plus(_ticket_sum(w.previous, w.target.others), shift)
                in_doubt = [_plus(_ticket_sum(c, w.target.others), shift) for c in w.in_doubt]
                verdict = erp_verdict(current=before, expected=expected, new=new, in_doubt=in_doubt)
                if verdict == "write":
                    results[w.mm_run_id] = WriteResult(w.mm_run_id, "written", before, new)
                    updates.append(
                        {"t_id": ticket, "x_good": before["GOOD_QTY"], "x_bad": before["BAD_QTY"], **new}
                    )
                    current[ticket] = new
                    moved[ticket] = {k: shift[k] + new[k] - before[k] for k in BLANK}
                elif verdict == "conflict":
                    message = (
                        f"LABOR_TICKET {ticket} holds {describe_values(before)}; erpsync last wrote "
                        f"{describe_values(expected)}: edited outside erpsync"
                    )
                    results[w.mm_run_id] = WriteResult(w.mm_run_id, "conflict", before, new, message)
                else:
                    results[w.mm_run_id] = WriteResult(w.mm_run_id, verdict, before, new)
            if updates:
                update_guarded(conn, ticket_update_statement(t), updates, "LABOR_TICKET", "ticket(s)")
        return results

    def close(self) -> None:
        self.engine.dispose()
