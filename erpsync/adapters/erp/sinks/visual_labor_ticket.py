"""The `visual-labor-ticket` sink (opt-in): the run's counts set on its own VISUAL labor ticket.

Each VISUAL run erpsync starts in MM is one labor ticket (run key ``LT<TRANSACTION_ID>``), so the
MM run's absolute totals go on that ticket: ``GOOD_QTY = good``, ``BAD_QTY = scrap + nonconform``
(MM's two kinds of rejected part are both bad pieces to VISUAL). Replays set the same values.
A reopened ticket's run generations (``LT<id>#g<n>``) share the ticket, which holds their sum.

The risk (docs/staging.md says why a table is safer): this is a direct SQL UPDATE of LABOR_TICKET,
the job Infor's API Toolkit (`EditLaborTicket`) does with its own checks. It skips VISUAL's business
logic: OPERATION.COMPLETED_QTY / DEVIATED_QTY and costs are ticket-fed rollups that VISUAL may only
recompute when its own code touches the ticket, and posted tickets should not change at all. Use
it only with the customer's approval, after a trial on a test copy of their database.

Safety: erpsync writes a ticket only while it still holds what erpsync last wrote (0/0 before the
first write) or a value it set out to write before a crash; with several runs, any sum of one such
value per run (domain/ticket_shares.py). Any other value was typed by a person and is never
overwritten (a conflict).
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
from erpsync.adapters.erp.sinks.base import CountWrite, Outcome, WriteResult
from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import PartCounts
from erpsync.domain.ticket_shares import ticket_shares
from erpsync.domain.writeback_rules import CountValues, Sibling, describe_values, erp_verdict

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


def _values(counts: PartCounts | None) -> CountValues:
    """One run's part of its ticket (blank before its first write)."""
    return ticket_values(counts) if counts is not None else BLANK


def _own_values(w: CountWrite) -> list[CountValues]:
    """What a run being written may hold in its ticket, preferred first: the new value (written
    before a crash), what erpsync last wrote, its writes in doubt (`ticket_shares`)."""
    return [_values(w.counts), _values(w.previous), *(_values(c) for c in w.in_doubt)]


def _sibling_values(sibling: Sibling) -> list[CountValues]:
    """What a run of the ticket that is not being written may hold in it, preferred first."""
    return [_values(sibling.last), *(_values(c) for c in sibling.in_doubt)]


def _sum(values: Sequence[CountValues]) -> CountValues:
    return {key: sum((v[key] for v in values), start=BLANK[key]) for key in BLANK}


def _shift(value: CountValues, old: CountValues, new: CountValues) -> CountValues:
    """The ticket's value once one run's part goes from `old` to `new`."""
    return {key: value[key] - old[key] + new[key] for key in BLANK}


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
        by_ticket: dict[int, list[CountWrite]] = {}
        for w in batch:
            by_ticket.setdefault(tickets[w.mm_run_id], []).append(w)
        results: dict[str, WriteResult] = {}
        updates: list[dict[str, Any]] = []
        with erp_transaction(self.engine, "LABOR_TICKET") as conn:
            rows = conn.execute(ticket_lock_statement(self.table, sorted(by_ticket))).all()
            current: dict[int, CountValues] = {
                int(r.TRANSACTION_ID): {"GOOD_QTY": _number(r.GOOD_QTY), "BAD_QTY": _number(r.BAD_QTY)}
                for r in rows
            }
            for ticket, writes in by_ticket.items():
                results.update(_ticket_results(ticket, current.get(ticket), writes, updates))
            if updates:
                update_guarded(
                    conn, ticket_update_statement(self.table), updates, "LABOR_TICKET", "ticket(s)"
                )
        return results

    def close(self) -> None:
        self.engine.dispose()


def _ticket_results(
    ticket: int, before: CountValues | None, writes: Sequence[CountWrite], updates: list[dict[str, Any]]
) -> dict[str, WriteResult]:
    """One ticket's runs in this batch, written in turn; each write's guarded UPDATE joins `updates`.

    The ticket holds the sum of all of its runs: those being written and their `siblings` that are
    not. Which of erpsync's own values each run has in it (`ticket_shares`) says, run by run, what
    the write replaces; when no combination makes the ticket's value, a person edited it.
    """
    written = {w.mm_run_id for w in writes}
    every = {s.mm_run_id: s for w in writes for s in w.target.siblings}
    siblings = [s for s in every.values() if s.mm_run_id not in written]
    # the ticket as erpsync last wrote it, and each run's write alone on top of that (for messages)
    last = _sum([_values(w.previous) for w in writes] + [_values(s.last) for s in siblings])
    alone = {w.mm_run_id: _shift(last, _values(w.previous), _values(w.counts)) for w in writes}
    if before is None:
        message = f"LABOR_TICKET {ticket} not found"
        return {
            w.mm_run_id: WriteResult(w.mm_run_id, "failed", after=alone[w.mm_run_id], message=message)
            for w in writes
        }
    shares = ticket_shares(before, [_own_values(w) for w in writes], [_sibling_values(s) for s in siblings])
    if shares.verdict != "own":
        holds = f"LABOR_TICKET {ticket} holds {describe_values(before)}"
        if shares.verdict == "conflict":
            message = f"{holds}; erpsync last wrote {describe_values(last)}: edited outside erpsync"
        else:
            others = ", ".join(s.mm_run_id for s in siblings)
            message = (
                f"{holds}, a sum of erpsync's own counts, but which part of it is {others}'s (not "
                "written in this transaction, a write in doubt) is not known: not written, tried "
                "again next cycle"
            )
        outcome: Outcome = "conflict" if shares.verdict == "conflict" else "failed"
        return {
            w.mm_run_id: WriteResult(w.mm_run_id, outcome, before, alone[w.mm_run_id], message)
            for w in writes
        }
    results: dict[str, WriteResult] = {}
    value = before
    for w, share in zip(writes, shares.writing, strict=True):
        new = _values(w.counts)
        in_doubt = [_values(c) for c in w.in_doubt]
        # the run's share is one of its own values: never a conflict
        verdict = erp_verdict(current=share, expected=_values(w.previous), new=new, in_doubt=in_doubt)
        if verdict == "write":
            after = _shift(value, share, new)
            results[w.mm_run_id] = WriteResult(w.mm_run_id, "written", value, after)
            updates.append({"t_id": ticket, "x_good": value["GOOD_QTY"], "x_bad": value["BAD_QTY"], **after})
            value = after
        else:
            results[w.mm_run_id] = WriteResult(w.mm_run_id, verdict, value, value)
    return results
