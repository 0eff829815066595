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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, or_, select

from erpsync.adapters.erp.visual_schema import LABOR_TICKET
from erpsync.adapters.mm.simulator import MMSimulator
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import AuditEntry, QuarantineEntry, RunBinding, SyncAction
from tests.campaign.oracle import TOLERANCE, anchor_of, mm_time, op_key
from tests.campaign.scenarios import ScenarioShop
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


# -- scenario worlds (tests/campaign/scenarios.py, oracle.py): against MM's and the ERP's own truth ----

FINAL_OUTCOMES = ("succeeded", "noop", "quarantined", "failed")  # docs/audit.md: an action's last word
IMPLAUSIBLE_CLASS = "writeback_implausible_counts"  # erpsync/domain/plausible_counts.py
DRIFT_ACTIONS = ("missing_in_mm", "ended_in_mm")

Counts4 = tuple[int, int, int, int]  # total, good, scrap, nonconform


@dataclass
class MMExpectations:
    """What the MM-fault generator (tests/campaign/mm_faults.py) did to MM, and so what erpsync must
    have recorded: the invariants below read it."""

    lost: dict[str, Counts4 | None] = field(default_factory=dict)  # run id -> its counts (if any) then
    implausible: dict[str, dict[str, int]] = field(default_factory=dict)  # run id -> MM's counts as sent
    plausible: dict[str, Counts4] = field(default_factory=dict)  # implausible run id -> its counts before
    restored: set[str] = field(default_factory=set)  # implausible once, plausible again: resolved
    drifts: dict[str, tuple[str, str]] = field(default_factory=dict)  # run id -> (audit action, binding)
    excused_actions: dict[int, tuple[str, str]] = field(default_factory=dict)  # action -> (run, why)
    stop_refused: set[str] = field(default_factory=set)  # runs whose stop MM refused (quarantined)
    unconfirmed: set[str] = field(default_factory=set)  # starts given up unread (MM may have them)
    switch_refused: set[str] = field(default_factory=set)  # runs whose switch MM answered 409


def machine_timelines(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """MM's own history per machine: at most one open run, and no two runs share any time (a run
    that starts and ends at one moment covers none)."""
    found = []
    forever = datetime.max.replace(tzinfo=UTC)
    by_machine: dict[str, list[tuple[datetime, datetime, str]]] = {}
    for rid, run in runs.items():
        start = mm_time(run["start_at"])
        assert start is not None
        by_machine.setdefault(run["machine_id"], []).append((start, mm_time(run["end_at"]) or forever, rid))
    for machine, spans in by_machine.items():
        open_ = [rid for _, end, rid in spans if end is forever]
        if len(open_) > 1:
            found.append(f"timeline: {len(open_)} runs open on {machine}: {sorted(open_)}")
        spans.sort()
        for i, (s1, e1, r1) in enumerate(spans):
            for s2, e2, r2 in spans[i + 1 :]:
                if max(s1, s2) + TOLERANCE < min(e1, e2):
                    until = "open" if e1 is forever else f"{e1:%H:%M:%S}"
                    first = f"{r1} ({s1:%H:%M:%S}..{until})"
                    found.append(f"timeline: on {machine} {first} overlaps {r2} (from {s2:%H:%M:%S})")
    return found


def started_twice(calls: list[dict[str, Any]]) -> list[str]:
    """No start answered 409 (a re-send with other fields) and no start of a run MM had stopped."""
    found = [
        f"MM answered 409 to {c['operation']} of {c['run_id']} (call {c['seq']})"
        for c in calls
        if c["status"] == 409
    ]
    return found + start_after_stop(calls)


def open_after_erp_closed(
    shop: ScenarioShop,
    runs: Mapping[str, Mapping[str, Any]],
    policy: str,
    expect: MMExpectations | None = None,
) -> list[str]:
    """Every run MM has open is explained by an open ticket of its operation on its machine (its
    anchor counts wherever an edit moved it); a deleted anchor's run only under `flag`; a run whose
    stop MM refused only with that stop quarantined (`MMExpectations.stop_refused`)."""
    found = []
    refused = expect.stop_refused if expect is not None else set()
    for rid, run in runs.items():
        if run["end_at"] is not None or rid in refused:
            continue
        anchor = shop.tickets.get(anchor_of(rid) or -1)
        if anchor is None:
            continue  # not a ticket's run: the oracle reports it
        if anchor.deleted:
            if policy != "flag":
                found.append(
                    f"{rid} open in MM though its ticket LT{anchor.id} was deleted (vanished_runs=stop)"
                )
            continue
        key = op_key(anchor)
        crew = [
            t
            for t in shop.open_tickets()
            if op_key(t) == key and (t.machine == run["machine_id"] or t is anchor)
        ]
        if not crew:
            found.append(f"{rid} open in MM on {run['machine_id']} though the ERP closed every ticket of it")
    return found


def audit_claims(
    store: StateStore, runs: Mapping[str, Mapping[str, Any]], lost: Mapping[str, Any] | None = None
) -> list[str]:
    """Every `succeeded` start/stop audit row says something MM shows: the run started (in
    production when the action was the production start), the run ended; a run MM lost (a campaign
    fault, `lost`) is the only one MM may lack."""
    found = []
    with store.session() as session:
        rows = session.execute(
            select(AuditEntry.id, AuditEntry.action, AuditEntry.mm_run_id, SyncAction.idempotency_key)
            .join(SyncAction, SyncAction.id == AuditEntry.action_id)
            .where(AuditEntry.outcome == "succeeded", AuditEntry.action.in_(("start_run", "stop_run")))
        ).all()
    for row in rows:
        run = runs.get(row.mm_run_id or "")
        if run is None and (row.mm_run_id or "") in (lost or {}):
            continue
        if run is None:
            found.append(f"audit {row.id}: {row.action} of {row.mm_run_id} succeeded, MM never had the run")
        elif row.action == "stop_run" and run["end_at"] is None:
            found.append(f"audit {row.id}: stop_run of {row.mm_run_id} succeeded, MM shows it open")
        elif (
            row.action == "start_run"
            and ":production" in row.idempotency_key
            and run["production_at"] is None
        ):
            found.append(f"audit {row.id}: production start of {row.mm_run_id} succeeded, MM has it in setup")
    return found


def journal_outcomes(store: StateStore, excused: Mapping[int, Any] | None = None) -> list[str]:
    """Every journal action succeeded (but one an MM fault made a person's job, `excused`: given
    up or refused, quarantined), and has exactly one final audit row (whatever its outcome)."""
    found = []
    with store.session() as session:
        for a in session.scalars(select(SyncAction).where(SyncAction.status != "succeeded")):
            if a.id in (excused or {}) and a.status in ("quarantined", "failed_permanent"):
                continue
            found.append(
                f"action {a.id} {a.kind} {a.mm_run_id} is {a.status}: {a.error_class} {a.error_message}"[:300]
            )
        finals = dict(
            session.execute(
                select(AuditEntry.action_id, func.count())
                .where(AuditEntry.action_id.is_not(None), AuditEntry.outcome.in_(FINAL_OUTCOMES))
                .group_by(AuditEntry.action_id)
            ).all()
        )
        for action_id, kind in session.execute(select(SyncAction.id, SyncAction.kind)):
            if finals.get(action_id, 0) != 1:
                found.append(f"action {action_id} {kind} has {finals.get(action_id, 0)} final audit rows")
    return found


def ticket_counts(
    shop: ScenarioShop,
    runs: Mapping[str, Mapping[str, Any]],
    store: StateStore,
    erp: Engine,
    expect: MMExpectations | None = None,
) -> list[str]:
    """A ticket holds the sum of the counts of every run anchored on it (crews' parts go to the
    anchor, generations add up), and erpsync's last written counts per run are MM's. A deleted
    ticket's counts were written before it went, or cannot be written: then they need a reason on
    record, a quarantine entry or a failed `write_counts` audit row (erpsync quarantines it only
    after writeback.final_counts_max_hours; FINDINGS.md O2). MM faults (`expect`): a run MM lost
    keeps the counts written before (they stay in the ticket's sum); a run whose counts MM answers
    implausibly keeps its last plausible ones, and the implausible values never reach the ERP; a
    start given up while MM could not be read (`unconfirmed`, quarantined) has its counts written
    once it is stopped."""
    expect = expect or MMExpectations()
    with erp.connect() as conn:
        held = {
            int(r.TRANSACTION_ID): (int(r.GOOD_QTY), int(r.BAD_QTY))
            for r in conn.execute(
                select(LABOR_TICKET.c.TRANSACTION_ID, LABOR_TICKET.c.GOOD_QTY, LABOR_TICKET.c.BAD_QTY).where(
                    shop.history_rows < LABOR_TICKET.c.TRANSACTION_ID
                )
            )
        }
    with store.session() as session:
        bindings = session.scalars(select(RunBinding)).all()
        last = {
            b.mm_run_id: (b.last_total_parts, b.last_good_parts, b.last_scrap_parts, b.last_nonconform_parts)
            for b in bindings
        }
        unread = {
            b.mm_run_id for b in bindings if b.status == "unconfirmed" and b.mm_run_id in expect.unconfirmed
        }
        explained = set(
            session.scalars(
                select(AuditEntry.mm_run_id).where(
                    AuditEntry.action == "write_counts", AuditEntry.outcome == "failed"
                )
            )
        ) | set(session.scalars(select(QuarantineEntry.record_key).where(QuarantineEntry.status == "open")))
    sums: dict[int, tuple[int, int]] = {}
    found = []
    counted: dict[str, Counts4] = {}
    for rid, run in runs.items():
        if run["manual_counts"]:
            m = run["metrics"]
            counted[rid] = (m["totalParts"], m["goodParts"], m["scrapParts"], m["nonconformParts"])
    for rid in unread & set(counted):  # given up unread: counted only once stopped (FINDINGS.md O5)
        del counted[rid]
        total, good, scrap, nonconform = last[rid]
        if total is not None:  # what was written before stays in the ticket's sum
            counted[rid] = (total, good or 0, scrap or 0, nonconform or 0)
    kept = [(rid, c, "MM lost it") for rid, c in expect.lost.items() if c is not None]
    kept += [(rid, c, "MM answered implausible counts") for rid, c in expect.plausible.items()]
    for rid, before, what in kept:
        if last.get(rid) != before:
            found.append(f"counts: {rid}: erpsync last wrote {last.get(rid)}, {before} when {what}")
        counted[rid] = before  # what the ticket's sum keeps of it
    for rid, mine in counted.items():
        anchor = anchor_of(rid)
        ticket = shop.tickets.get(anchor or -1)
        if ticket is None:
            continue
        if ticket.deleted:  # written before the ticket went, or the reason why not is on record
            if last.get(rid) != mine and rid not in explained and f"LT{ticket.id}" not in explained:
                found.append(
                    f"counts: {rid} (ticket LT{ticket.id} deleted): counts neither written nor explained"
                )
            continue
        good, bad = sums.get(ticket.id, (0, 0))
        sums[ticket.id] = (good + mine[1], bad + mine[2] + mine[3])
        if last.get(rid) != mine:
            found.append(f"counts: {rid}: erpsync last wrote {last.get(rid)}, MM has {mine}")
    for tid, want in sums.items():
        if held.get(tid) != want:
            found.append(f"counts: LT{tid} holds GOOD/BAD {held.get(tid)}, its runs in MM add up to {want}")
    return found


def quarantine_expected(
    shop: ScenarioShop, store: StateStore, expect: MMExpectations | None = None
) -> list[str]:
    """Every ticket with a bad cell is quarantined, keyed by its ticket and naming the field; every
    run MM answers implausible counts for is quarantined with the values MM sent, and resolved once
    MM answers plausible ones; every action an MM fault made a person's job is quarantined; nothing
    else is (but a deleted ticket's counts, which have nowhere to go)."""
    expect = expect or MMExpectations()
    want = {f"LT{t.id}": t.bad for t in shop.tickets.values() if t.bad is not None and not t.deleted}
    with store.session() as session:
        entries = session.scalars(select(QuarantineEntry).where(QuarantineEntry.status == "open")).all()
    found = []
    implausible = {e.record_key: e for e in entries if e.error_class == IMPLAUSIBLE_CLASS}
    for rid, sent in expect.implausible.items():
        entry = implausible.get(rid)
        if entry is None:
            found.append(f"quarantine: {rid}'s implausible counts {sent} are not quarantined")
        elif json.loads(entry.raw_payload or "{}").get("mm_counts") != sent:
            found.append(f"quarantine: {rid} quarantined with {entry.raw_payload}, MM sent {sent}"[:300])
    for rid in expect.restored & set(implausible):
        found.append(f"quarantine: {rid} still quarantined as implausible after MM answered plausible counts")
    refused = {e.record_key for e in entries if e.action_id is not None}  # MM refused, or given up
    for action_id, (rid, why) in expect.excused_actions.items():
        if rid not in refused:
            found.append(f"quarantine: action {action_id} on {rid} ({why}) is not in erpsync_quarantine")
    excused = {rid for rid, _ in expect.excused_actions.values()}
    entries = [
        e
        for e in entries
        if not (e.error_class == IMPLAUSIBLE_CLASS and e.record_key in expect.implausible)
        and not (e.action_id is not None and e.record_key in excused)
    ]
    got = {e.record_key: e for e in entries}
    for key, field_name in want.items():
        entry = got.get(key)
        if entry is None:
            found.append(f"quarantine: {key} (bad {field_name}) is not quarantined")
        elif entry.field != field_name:
            found.append(f"quarantine: {key} quarantined for {entry.field!r}, its bad cell is {field_name}")
    gone = {f"LT{t.id}" for t in shop.tickets.values() if t.deleted}
    for key, entry in got.items():
        if key not in want and key.split("#")[0] not in gone:  # a deleted ticket's counts may be
            found.append(f"quarantine: {key} {entry.error_class} {entry.field}: {entry.message}"[:300])
    return found


def drift_records(store: StateStore, drifts: Mapping[str, tuple[str, str]]) -> list[str]:
    """Every run MM lost or a person ended there while erpsync had it open: exactly one drift audit
    row (`missing_in_mm` / `ended_in_mm`, outcome `flagged`) and its binding as `sync.heal_drift`
    says (`stopped`: restart; `failed`: flag, a person's job)."""
    if not drifts:
        return []
    with store.session() as session:
        rows = Counter(
            (r.mm_run_id, r.action, r.outcome)
            for r in session.execute(
                select(AuditEntry.mm_run_id, AuditEntry.action, AuditEntry.outcome).where(
                    AuditEntry.action.in_(DRIFT_ACTIONS), AuditEntry.mm_run_id.in_(list(drifts))
                )
            )
        )
        status = dict(
            session.execute(
                select(RunBinding.mm_run_id, RunBinding.status).where(RunBinding.mm_run_id.in_(list(drifts)))
            ).all()
        )
    found = []
    for rid, (action, binding) in drifts.items():
        mine = {k: n for k, n in rows.items() if k[0] == rid}
        if mine != {(rid, action, "flagged"): 1}:
            found.append(
                f"drift: {rid} has drift audit rows {sorted(mine.items())}, expected one {action} flagged"
            )
        if status.get(rid) != binding:
            found.append(f"drift: {rid}'s binding is {status.get(rid)}, expected {binding}")
    return found


def refused_switches(
    runs: Mapping[str, Mapping[str, Any]], store: StateStore, refused: set[str]
) -> list[str]:
    """A switch to production MM answered 409 is never a success: the run is in erpsync_quarantine
    (a person checks), or MM shows it ended (settled with MM's end) or lacks it."""
    if not refused:
        return []
    with store.session() as session:
        quarantined = set(
            session.scalars(
                select(QuarantineEntry.record_key).where(
                    QuarantineEntry.record_key.in_(list(refused)), QuarantineEntry.action_id.is_not(None)
                )
            )
        )
    return [
        f"switch: MM answered 409 to {rid}'s switch to production, not in erpsync_quarantine"
        for rid in sorted(refused)
        if rid not in quarantined and rid in runs and runs[rid]["end_at"] is None
    ]


def scenario_violations(
    shop: ScenarioShop,
    policy: str,
    sim: MMSimulator,
    runs: Mapping[str, Mapping[str, Any]],
    store: StateStore,
    erp: Engine,
    expect: MMExpectations | None = None,
) -> list[str]:
    """Every invariant of a scenario world violated right now, besides the oracle's own compare."""
    expect = expect or MMExpectations()
    found = machine_timelines(runs)
    found += started_twice(sim.calls())
    found += open_after_erp_closed(shop, runs, policy, expect)
    found += audit_claims(store, runs, expect.lost)
    found += journal_outcomes(store, expect.excused_actions)
    found += ticket_counts(shop, runs, store, erp, expect)
    found += quarantine_expected(shop, store, expect)
    found += drift_records(store, expect.drifts)
    found += refused_switches(runs, store, expect.switch_refused)
    return found


SECRET_COLUMNS = (
    (
        AuditEntry,
        (AuditEntry.detail, AuditEntry.error_message, AuditEntry.before_json, AuditEntry.after_json),
    ),
    (SyncAction, (SyncAction.error_message, SyncAction.payload, SyncAction.reason)),
    (QuarantineEntry, (QuarantineEntry.message, QuarantineEntry.raw_payload)),
)


def secrets_leaked(outputs: list[Path], secrets: list[str], store: StateStore) -> list[str]:
    """No secret (MM API key, database password) in erpsync's output or in what it stored."""
    found = []
    for path in outputs:
        content = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        found += [f"secret #{i} appears in {path.name}" for i, s in enumerate(secrets) if s in content]
    with store.session() as session:
        for table, columns in SECRET_COLUMNS:
            for i, secret in enumerate(secrets):
                hit = session.scalar(
                    select(func.count()).select_from(table).where(or_(*(c.contains(secret) for c in columns)))
                )
                if hit:
                    found.append(f"secret #{i} stored in {table.__tablename__} ({hit} rows)")
    return found
