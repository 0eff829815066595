"""The invariants checked after every trial, as a list of violations (empty = all hold).

tests/sync_helpers.assert_converged covers: no 409 (a blind re-send with other fields), every run
the ERP has open present in MM on the right machine and open, every run the ERP closed not open in
MM (absent is fine: opened and closed between two cycles), one open run per machine, every journal
action succeeded with exactly one final audit row. Added here: no start of a run id after MM
stopped it, no MM run erpsync cannot account for, ERP counts = MM counts = erpsync's last written
counts for every run MM counted, a write audit row for every value written, no quarantine entry
and no write-back conflict.
"""

from __future__ import annotations

import json
import traceback
from collections import Counter
from typing import Any

from sqlalchemy import Engine, select

from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding, SyncAction
from tests.campaign.shopfloor import ShopFloor
from tests.sync_helpers import assert_converged

APPLIED_FAULTS = ("apply_then_fail", "drop_after_apply")


def _applied(call: dict[str, Any]) -> bool:
    status = call["status"]
    return (status is not None and 200 <= status < 300) or call["fault"] in APPLIED_FAULTS


def start_after_stop(calls: list[dict[str, Any]]) -> list[str]:
    """A start sent for a run id MM had already stopped: the run would be started twice."""
    stopped: set[str] = set()
    found = []
    for call in calls:
        rid = call["run_id"]
        if call["operation"] == "stop" and _applied(call):
            stopped.add(rid)
        elif call["operation"] == "start" and rid in stopped:
            found.append(f"start of {rid} sent after MM stopped it (call {call['seq']})")
    return found


def repeated_starts(calls: list[dict[str, Any]]) -> int:
    """Start calls for a run MM already had (retries after a lost answer; MM treats them as no-ops)."""
    seen: Counter[str] = Counter(c["run_id"] for c in calls if c["operation"] == "start" and _applied(c))
    return sum(n - 1 for n in seen.values() if n > 1)


def _assertion(exc: AssertionError) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{frame.line} -> {str(exc).splitlines()[0] if str(exc) else 'false'}"[:400]


def count_mismatches(floor: ShopFloor, sim: MMSimulator, store: StateStore, erp: Engine) -> list[str]:
    """For every run MM counted: ticket GOOD/BAD = MM counts, and erpsync's state agrees."""
    runs = sim.runs()
    with erp.connect() as conn:
        tickets = {
            int(r.TRANSACTION_ID): (int(r.GOOD_QTY), int(r.BAD_QTY))
            for r in conn.execute(
                select(LABOR_TICKET.c.TRANSACTION_ID, LABOR_TICKET.c.GOOD_QTY, LABOR_TICKET.c.BAD_QTY)
            )
        }
    with store.session() as session:
        last = {
            b.mm_run_id: (b.last_total_parts, b.last_good_parts, b.last_scrap_parts, b.last_nonconform_parts)
            for b in session.scalars(select(RunBinding))
        }
    found = []
    for rid in floor.counts:
        metrics = runs[rid]["metrics"]
        good, scrap, nc = metrics["goodParts"], metrics["scrapParts"], metrics["nonconformParts"]
        ticket = tickets.get(int(rid.removeprefix("erp:LT")))
        if ticket != (good, scrap + nc):
            found.append(f"{rid}: ERP ticket GOOD/BAD {ticket} but MM good {good}, bad {scrap + nc}")
        if last.get(rid) != (metrics["totalParts"], good, scrap, nc):
            found.append(f"{rid}: erpsync last wrote {last.get(rid)}, MM has {metrics}")
    return found


def audit_gaps(store: StateStore) -> list[str]:
    """Every count erpsync says it wrote has a write audit row saying so.

    The row's `after` is what the sink wrote: the four counts, or a VISUAL ticket's GOOD/BAD.
    """
    found = []
    with store.session() as session:
        written: dict[str, list[Any]] = {}
        for row in session.execute(
            select(AuditEntry.mm_run_id, AuditEntry.after_json).where(
                AuditEntry.action == "write_counts", AuditEntry.outcome.in_(("written", "already_written"))
            )
        ):
            written.setdefault(row.mm_run_id, []).append(json.loads(row.after_json or "{}"))
        for b in session.scalars(select(RunBinding).where(RunBinding.last_total_parts.is_not(None))):
            counts = {
                "total": b.last_total_parts,
                "good": b.last_good_parts,
                "scrap": b.last_scrap_parts,
                "nonconform": b.last_nonconform_parts,
            }
            ticket = {
                "GOOD_QTY": b.last_good_parts,
                "BAD_QTY": (b.last_scrap_parts or 0) + (b.last_nonconform_parts or 0),
            }
            rows = written.get(b.mm_run_id, [])
            if counts not in rows and ticket not in rows:
                found.append(f"{b.mm_run_id}: counts {counts} written without a write_counts audit row")
    return found


def erp_ahead(store: StateStore, erp: Engine) -> int:
    """Tickets whose ERP values are not what erpsync's state says it last wrote (a crash between
    the ERP commit and the state commit leaves exactly this; the next cycle must settle it)."""
    with erp.connect() as conn:
        tickets = {
            int(r.TRANSACTION_ID): (int(r.GOOD_QTY), int(r.BAD_QTY))
            for r in conn.execute(
                select(LABOR_TICKET.c.TRANSACTION_ID, LABOR_TICKET.c.GOOD_QTY, LABOR_TICKET.c.BAD_QTY)
            )
        }
    with store.session() as session:
        bindings = session.scalars(select(RunBinding)).all()
    ahead = 0
    for b in bindings:
        last = (
            (0, 0)
            if b.last_good_parts is None
            else (b.last_good_parts, (b.last_scrap_parts or 0) + (b.last_nonconform_parts or 0))
        )
        if tickets.get(int(b.run_key.removeprefix("LT")), last) != last:
            ahead += 1
    return ahead


def quarantine_and_conflicts(store: StateStore) -> list[str]:
    with store.session() as session:
        entries = session.scalars(select(QuarantineEntry).where(QuarantineEntry.status == "open")).all()
        conflicts = session.scalar(select(AuditEntry.id).where(AuditEntry.outcome == "conflict").limit(1))
    found = [f"quarantined {e.error_class} {e.record_key}: {e.message}"[:300] for e in entries]
    if conflicts is not None:
        found.append("a write-back conflict was audited (erpsync saw a value it did not write)")
    return found


def stray_runs(floor: ShopFloor, sim: MMSimulator) -> list[str]:
    return [
        f"MM holds {rid}, which no ERP ticket explains" for rid in sim.runs() if rid not in floor.machine_of
    ]


def violations(floor: ShopFloor, sim: MMSimulator, store: StateStore, erp: Engine) -> list[str]:
    """Every invariant violated right now (empty when all hold)."""
    found: list[str] = []
    try:
        assert_converged(sim, store, floor.open_runs(), floor.closed)
    except AssertionError as exc:
        found.append(f"assert_converged: {_assertion(exc)}")
    calls = sim.calls()
    found += start_after_stop(calls)
    found += stray_runs(floor, sim)
    found += count_mismatches(floor, sim, store, erp)
    found += audit_gaps(store)
    found += quarantine_and_conflicts(store)
    return found


def pending_actions(store: StateStore) -> int:
    """Journal actions without an outcome (a crash left them in doubt)."""
    with store.session() as session:
        return len(session.scalars(select(SyncAction.id).where(SyncAction.status != "succeeded")).all())
