"""The soak's end check: does MM show, on every machine, the most recent clock-in's operation?

Issue #19: after a soak, machines with open tickets had no MM run, or an older ticket's run. Once
the churn has stopped and `serve` has run two more sync cycles, every machine is compared:

- the ERP's open LABOR_TICKET rows on it (CLOCK_OUT NULL; machine = the ticket's RESOURCE_ID, else
  the operation's, as the `infor-visual` preset reads it), and the operation of the most recent
  CLOCK_IN among them (ties: the greater TRANSACTION_ID), named as the preset names it
  (`visual_names`: `BASE/LOT[/SPLIT][-SUB]|SEQ`);
- the runs the MM simulator has open there (no `end_at`).

Counted: machines with open tickets, those where MM has exactly one open run of that operation,
none, one of another operation, more than one; machines without open tickets where MM still has a
run open. And MM run ids started more than once: successful start calls in the simulator's call
log grouped by run id, less the one allowed repeat of a run started in setup and since switched to
production (the call log holds no body, so the phase is the run's own `started_in_setup`/`phase`).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, select

from erpsync.adapters.erp.visual_names import clean, operation_name, seq_text, visual_job_key, visual_job_name
from erpsync.adapters.erp.visual_schema import LABOR_TICKET, OPERATION
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.tables import RunBinding

KINDS = ("no_run", "wrong_operation", "several_runs")
EXAMPLES_PER_KIND = 4


@dataclass(frozen=True)
class OpenTicket:
    transaction_id: int
    ticket_type: str
    machine: str
    operation: str  # `job name|seq`, what MM's run shows as operationName
    clock_in: datetime | None


def open_tickets(erp: Engine) -> dict[str, list[OpenTicket]]:
    """The ERP's open labor tickets by machine (the ticket's RESOURCE_ID, else its operation's)."""
    lt, op = LABOR_TICKET.c, OPERATION.c
    key = ("TYPE", "BASE_ID", "LOT_ID", "SPLIT_ID", "SUB_ID")
    join = and_(
        *(op["WORKORDER_" + k] == lt["WORKORDER_" + k] for k in key), op.SEQUENCE_NO == lt.OPERATION_SEQ_NO
    )
    stmt = (
        select(
            lt.TRANSACTION_ID,
            lt.TYPE,
            *(lt["WORKORDER_" + k] for k in key),
            lt.OPERATION_SEQ_NO,
            lt.CLOCK_IN,
            func.coalesce(lt.RESOURCE_ID, op.RESOURCE_ID),
        )
        .select_from(LABOR_TICKET.outerjoin(OPERATION, join))
        .where(lt.CLOCK_OUT.is_(None))
    )
    found: dict[str, list[OpenTicket]] = defaultdict(list)
    with erp.connect() as conn:
        for tid, ticket_type, *wo, seq, clock_in, machine in conn.execute(stmt):
            job = visual_job_name(visual_job_key(*wo))
            ticket = OpenTicket(
                int(tid),
                clean(ticket_type),
                clean(machine),
                operation_name(job, seq_text(seq) or ""),
                clock_in,
            )
            found[ticket.machine].append(ticket)
    return dict(found)


def latest(tickets: list[OpenTicket]) -> OpenTicket:
    """The most recent clock-in (ties: the greater TRANSACTION_ID): the one MM should show."""
    return max(tickets, key=lambda t: (t.clock_in or datetime.min, t.transaction_id))


def _ticket_row(t: OpenTicket) -> dict[str, Any]:
    return {
        "ticket": t.transaction_id,
        "type": t.ticket_type,
        "operation": t.operation,
        "clock_in": t.clock_in,
    }


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    keep = ("run_id", "operation_name", "phase", "start_at", "end_at", "ended_by")
    return {k: run.get(k) for k in keep}


def bindings_on(state_url: str, machines: list[str]) -> dict[str, list[dict[str, Any]]]:
    """erpsync's bindings on these machines that are not finished (for the examples)."""
    if not machines:
        return {}
    engine = create_db_engine(state_url)
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    RunBinding.erp_machine,
                    RunBinding.run_key,
                    RunBinding.mm_run_id,
                    RunBinding.status,
                    RunBinding.erp_operation,
                    RunBinding.erp_start_at,
                    RunBinding.erp_end_at,
                    RunBinding.updated_at,
                )
                .where(RunBinding.erp_machine.in_(machines))
                .where(RunBinding.status.not_in(("stopped",)))
                .order_by(RunBinding.updated_at)
            )
            for machine, *row in rows:
                found[machine].append(
                    dict(
                        zip(
                            (
                                "run_key",
                                "mm_run_id",
                                "status",
                                "operation",
                                "erp_start",
                                "erp_end",
                                "updated",
                            ),
                            row,
                            strict=True,
                        )
                    )
                )
    finally:
        engine.dispose()
    return dict(found)


def agreement(
    tickets: dict[str, list[OpenTicket]], runs: dict[str, dict[str, Any]], machines: list[str]
) -> dict[str, Any]:
    """Machine by machine: the latest clock-in's operation against MM's open runs there."""
    open_runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    all_runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs.values():
        all_runs[run["machine_id"]].append(run)
        if run.get("end_at") is None:
            open_runs[run["machine_id"]].append(run)
    counts: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in (*KINDS, "idle_with_run")}
    for machine in sorted(set(machines) | set(tickets) | set(open_runs)):
        mine, shown = tickets.get(machine, []), open_runs.get(machine, [])
        if not mine:
            if shown:
                counts["idle_with_run"] += 1
                examples["idle_with_run"].append(
                    {"machine": machine, "open_runs": [_run_row(r) for r in shown]}
                )
            continue
        counts["with_open_tickets"] += 1
        want = latest(mine)
        if len(shown) == 1 and shown[0]["operation_name"] == want.operation:
            counts["agree"] += 1
            continue
        kind = "no_run" if not shown else "wrong_operation" if len(shown) == 1 else "several_runs"
        counts[kind] += 1
        if kind == "wrong_operation" and shown[0]["operation_name"] in {t.operation for t in mine}:
            counts["wrong_operation_an_older_open_ticket"] += 1
        recent = sorted(all_runs.get(machine, []), key=lambda r: str(r.get("start_at")))[-4:]
        examples[kind].append(
            {
                "machine": machine,
                "expected": _ticket_row(want),
                "erp_open_tickets": [_ticket_row(t) for t in sorted(mine, key=lambda t: t.transaction_id)],
                "mm_open_runs": [_run_row(r) for r in shown],
                "mm_last_runs": [_run_row(r) for r in recent],
            }
        )
    return {
        "machines_with_open_tickets": counts["with_open_tickets"],
        "machines_agree": counts["agree"],
        "machines_no_run": counts["no_run"],
        "machines_wrong_operation": counts["wrong_operation"],
        "machines_wrong_operation_an_older_open_ticket": counts["wrong_operation_an_older_open_ticket"],
        "machines_several_open_runs": counts["several_runs"],
        "machines_idle_with_open_run": counts["idle_with_run"],
        "mm_open_runs": sum(len(v) for v in open_runs.values()),
        "disagreement_examples": {k: v[:EXAMPLES_PER_KIND] for k, v in examples.items() if v},
    }


def repeated_starts(calls: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """MM run ids started more than once (a setup -> production switch is the one allowed repeat)."""
    starts: Counter[str] = Counter(
        c["run_id"]
        for c in calls
        if c["operation"] == "start" and c["status"] is not None and c["status"] < 300
    )
    repeated: dict[str, int] = {}
    switches = 0
    for run_id, n in starts.items():
        run = runs.get(run_id, {})
        switched = bool(run.get("started_in_setup")) and run.get("phase") == "production"
        switches += switched
        if n > 1 + switched:
            repeated[run_id] = n
    first_seq = min((c["seq"] for c in calls), default=1)
    return {
        "mm_start_calls_ok": sum(starts.values()),
        "mm_run_ids_started": len(starts),
        "mm_setup_switches": switches,
        "mm_run_ids_started_more_than_once": len(repeated),
        "mm_run_ids_started_more_than_once_examples": dict(list(repeated.items())[:10]),
        "mm_start_conflicts_409": sum(1 for c in calls if c["operation"] == "start" and c["status"] == 409),
        "mm_call_log_calls": len(calls),
        # the log keeps the last N calls: starts before this were dropped (1 = nothing was)
        "mm_call_log_first_seq": first_seq,
    }


def end_check(
    erp: Engine,
    state_url: str,
    runs: dict[str, dict[str, Any]],
    calls: list[dict[str, Any]],
    machines: list[str],
) -> dict[str, Any]:
    """`agreement` and `repeated_starts`, with erpsync's live bindings on the disagreeing machines."""
    found = agreement(open_tickets(erp), runs, machines)
    shown = [e["machine"] for v in found["disagreement_examples"].values() for e in v]
    bound = bindings_on(state_url, shown)
    for kind in found["disagreement_examples"].values():
        for example in kind:
            example["erpsync_bindings_not_stopped"] = bound.get(example["machine"], [])
    return {**found, **repeated_starts(calls, runs)}


def summary_line(found: dict[str, Any]) -> str:
    return (
        f"agreement: {found['machines_agree']} of {found['machines_with_open_tickets']} machines with open "
        f"tickets show the latest clock-in's operation; no run {found['machines_no_run']}, wrong "
        f"operation {found['machines_wrong_operation']} (an older open ticket's: "
        f"{found['machines_wrong_operation_an_older_open_ticket']}), several open runs "
        f"{found['machines_several_open_runs']}, idle machines with a run open "
        f"{found['machines_idle_with_open_run']}; MM run ids started more than once "
        f"{found['mm_run_ids_started_more_than_once']} (of {found['mm_run_ids_started']}, "
        f"{found['mm_setup_switches']} setup -> production switches; call log from seq "
        f"{found['mm_call_log_first_seq']})"
    )


def agrees(found: dict[str, Any]) -> bool:
    wrong = ("machines_no_run", "machines_wrong_operation", "machines_several_open_runs")
    return (
        not any(
            found[k] for k in (*wrong, "machines_idle_with_open_run", "mm_run_ids_started_more_than_once")
        )
        and found["machines_agree"] == found["machines_with_open_tickets"]
    )


def settle(proc: Any, cycles_logged: Any, cycles: int, max_seconds: float) -> dict[str, Any]:
    """Let `serve` run, the ERP now still, until `cycles` more sync cycles are logged (a cycle
    under way at the stop may have read before the last change: the second one began after it)."""
    began, before = time.monotonic(), cycles_logged()
    seen = 0
    while time.monotonic() - began < max_seconds and proc.poll() is None:
        seen = cycles_logged() - before
        if seen >= cycles:
            break
        time.sleep(0.5)
    return {"settle_cycles_seen": seen, "settle_seconds": round(time.monotonic() - began, 1)}
