"""Row values shared by the SQL repositories and the in-memory fake (adapters/state/memory*.py).

Both sides build the same column values from the same domain objects here, so the fake cannot
drift from SQL in what it writes (scrubbing, cuts, JSON encoding); only how rows are stored differs.
Plain functions of plain values: no session, no SQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from erpsync.adapters.state.audit import audit_values
from erpsync.domain.columns import (
    MESSAGE_MAX_BYTES,
    RAW_MAX_BYTES,
    fit_bytes,
    fit_id,
    fit_name,
    fit_optional_id,
)
from erpsync.domain.drift import Drift
from erpsync.domain.lifecycle import (
    MACHINE_MAX,
    MM_MACHINE_MAX,
    REASON_MAX,
    SOURCE_MAX,
    ActionKind,
    BindingStatus,
    BoundRun,
    Intent,
    JournaledAction,
    JournalStamp,
    Outcome,
    RunRef,
)
from erpsync.domain.model import BadRecord
from erpsync.domain.oversized import origin_location
from erpsync.domain.plan import Flag
from erpsync.domain.writeback_rules import LAST_COLUMNS, AuditKey, CountTarget, final_counts_mark, sink_view
from erpsync.observability.scrub import scrub

CHUNK = 500
# `erpsync machines` shows when a resource was last seen to this precision (see `machine_changes`)
MACHINE_SEEN_RESOLUTION = timedelta(minutes=10)
QUARANTINE_KEY_MAX = 255
QUARANTINE_FILE_MAX = 1024
QUARANTINE_FIELD_MAX = 128
ERROR_CLASS_MAX = 64
REJECT_REASON_MAX = 2000
# the longest MM request body the journal keeps whole (`erpsync_action.payload`, a TEXT column:
# 65,535 bytes on MariaDB); a longer one is quarantined before it is journaled or sent


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- the action journal -----------------------------------------------------------------------
def intent_row(
    intent: Intent,
    *,
    now: datetime,
    stamp: JournalStamp,
) -> dict[str, Any]:
    """The ``erpsync_action`` row of a new intent: pending, claimed until `stamp.claim_until`."""
    ref = intent.ref
    return {
        "idempotency_key": intent.idempotency_key,
        "kind": str(intent.kind),
        "status": "pending",
        "source": intent.source,
        "run_key": ref.run_key if ref else None,
        "mm_run_id": ref.mm_run_id if ref else None,
        "erp_job": ref.job if ref else None,
        "erp_operation": ref.operation if ref else None,
        "erp_machine": ref.machine if ref else None,
        "reason": fit_name(intent.reason, REASON_MAX),
        "payload": json.dumps(intent.payload, sort_keys=True, default=str),
        "attempts": 1,
        "next_attempt_at": stamp.claim_until,
        "last_attempt_at": now,
        "fencing_token": stamp.fencing_token,
        "correlation_id": stamp.correlation_id,
        "triggered_by": stamp.trigger,
        "created_at": now,
    }


def with_origins(actions: Sequence[JournaledAction], intents: Sequence[Intent]) -> list[JournaledAction]:
    """Journaled actions with their ERP row's origin (not a column: carried in memory this cycle)."""
    origins = {i.idempotency_key: i.ref.origin for i in intents if i.ref is not None and i.ref.origin}
    return [
        replace(a, ref=replace(a.ref, origin=origins[a.idempotency_key]))
        if a.ref is not None and a.idempotency_key in origins
        else a
        for a in actions
    ]


def latest_bodies(rows: Iterable[tuple[str | None, str | None]]) -> dict[str, dict[str, Any]]:
    """Run id -> request body from (mm_run_id, payload) rows in journal order: the last one wins."""
    bodies: dict[str, dict[str, Any]] = {}
    for mm_run_id, payload in rows:
        if mm_run_id and payload:
            bodies[mm_run_id] = json.loads(payload)
    return bodies


def binding_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """A new binding's row with the MM machine id fitted to its column (ERP names are in its ref)."""
    row = dict(values)
    if row.get("mm_machine_id"):
        row["mm_machine_id"] = fit_id(row["mm_machine_id"], MM_MACHINE_MAX)
    return row


def intent_binding_values(intent: Intent) -> dict[str, Any]:
    """What an intent changes on the existing binding of its run (empty: nothing)."""
    if intent.new_binding or not intent.mm_run_id:
        return {}
    values: dict[str, Any] = binding_row(intent.binding_values or {})
    if intent.binding_status:
        values["status"] = str(intent.binding_status)
    if intent.generation:
        values["key_generation"] = intent.generation
    return values


def journaled_action(row: Mapping[Any, Any]) -> JournaledAction:
    """A journal row (column name -> value) as the service sees it."""
    ref = None
    if row["mm_run_id"]:
        ref = RunRef(
            source=row["source"] or "",
            run_key=row["run_key"] or "",
            mm_run_id=row["mm_run_id"],
            job=row["erp_job"] or "",
            operation=row["erp_operation"] or "",
            machine=row["erp_machine"] or "",
        )
    return JournaledAction(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        kind=ActionKind(row["kind"]),
        source=row["source"],
        ref=ref,
        reason=row["reason"] or "",
        payload=json.loads(row["payload"]) if row["payload"] else {},
        attempts=row["attempts"],
        fencing_token=row["fencing_token"],
    )


def action_values(outcome: Outcome, now: datetime) -> dict[str, Any]:
    """The journal columns a settlement writes (``a_`` parameters of the settle statement)."""
    return {
        "a_id": outcome.action.id,
        "a_status": outcome.status,
        "a_http_status": outcome.http_status,
        "a_error_class": fit_optional_id(outcome.error_class, ERROR_CLASS_MAX),
        "a_error_message": fit_bytes(scrub(outcome.error_message), MESSAGE_MAX_BYTES)
        if outcome.error_message
        else None,
        "a_next_attempt_at": outcome.next_attempt_at,
        "a_settled_at": now if outcome.final else None,
    }


def binding_values(outcome: Outcome) -> dict[str, Any] | None:
    """The binding change an outcome implies (None values keep the column), or None for none."""
    values = {
        "b_status": outcome.binding_status or None,
        "b_mm_start_at": outcome.mm_start_at,
        "b_mm_end_at": outcome.mm_end_at,
        "b_in_setup": outcome.in_setup,
    }
    if not outcome.action.mm_run_id or all(v is None for v in values.values()):
        return None
    return {**values, "b_run_id": outcome.action.mm_run_id}


def by_run_id(values: Mapping[str, Any]) -> str:
    """Sort key of binding changes: rows are locked in mm_run_id order (see `SqlBindings.lock`)."""
    return str(values["b_run_id"])


def settle_audit(outcome: Outcome, fencing_token: int | None) -> dict[str, Any]:
    """The audit row of a settled outcome."""
    entry = outcome.action
    ref = entry.ref
    return audit_values(
        action=entry.kind,
        outcome=outcome.audit,
        fencing_token=fencing_token,
        http_status=outcome.http_status,
        error=outcome.error_message,
        error_class=outcome.error_class,
        after=outcome.after,
        detail=outcome.detail or entry.reason,
        source=entry.source,
        erp_job=ref.job if ref else None,
        erp_operation=ref.operation if ref else None,
        erp_machine=ref.machine if ref else None,
        mm_run_id=ref.mm_run_id if ref else None,
        action_id=entry.id,
    )


# -- run bindings -----------------------------------------------------------------------------
# the columns `bound_runs` unpacks, in order
BOUND_COLUMNS = (
    "run_key",
    "mm_run_id",
    "erp_machine",
    "mm_machine_id",
    "status",
    "in_setup",
    "payload_hash",
    "erp_start_at",
    "erp_end_at",
    "erp_job",
    "erp_operation",
    "key_generation",
    "mm_end_at",
)


# a dict lookup, not BindingStatus(value): the no-change cycle loads every open binding
_BINDING_STATUS = {str(status): status for status in BindingStatus}


def bound_runs(result: Iterable[Any]) -> dict[str, BoundRun]:
    """Rows of `BOUND_COLUMNS` as the reconciler's bindings, by run key."""
    # positional unpacking: a no-change cycle loads every open binding, ~25% faster than Row attributes
    return {
        run_key: BoundRun(
            run_key=run_key,
            mm_run_id=mm_run_id,
            erp_machine=erp_machine,
            mm_machine_id=mm_machine_id,
            status=_BINDING_STATUS[status],
            in_setup=bool(in_setup),
            payload_hash=payload_hash,
            erp_start_at=erp_start_at,
            erp_end_at=erp_end_at,
            job=job,
            operation=operation,
            generation=generation or "",
            mm_end_at=mm_end_at,
        )
        for (
            run_key,
            mm_run_id,
            erp_machine,
            mm_machine_id,
            status,
            in_setup,
            payload_hash,
            erp_start_at,
            erp_end_at,
            job,
            operation,
            generation,
            mm_end_at,
        ) in result
    }


def flag_values(flag: Flag) -> dict[str, Any]:
    """What remembering a flag sets on its binding (empty: nothing)."""
    values: dict[str, Any] = {}
    if flag.binding_status:
        values["status"] = str(flag.binding_status)
    if flag.payload_hash:
        values["payload_hash"] = flag.payload_hash
    if flag.generation:
        values["key_generation"] = flag.generation
    if flag.binding_status and flag.mm_end_at:
        values["mm_end_at"] = flag.mm_end_at
    return values


def flag_final_counts(flag: Flag, values: Mapping[str, Any], now: datetime) -> datetime | None:
    """The `final_counts_since` remembering `flag` sets (None: unchanged): a run recorded stopped
    has its final counts due, unless MM no longer has the run (nothing to read)."""
    return final_counts_mark(values.get("status"), now) if flag.final_counts else None


def drift_values(drift: Drift) -> dict[str, Any]:
    """What recording a drifted run sets on its binding (domain/drift.py)."""
    return {
        "status": str(drift.status),
        "mm_end_at": drift.mm_end_at,
        "final_counts_since": drift.final_counts_since,
    }


# -- quarantine -------------------------------------------------------------------------------
def quarantine_raw(record: BadRecord) -> str | None:
    """The stored raw payload: text as is, anything else as JSON, scrubbed of secrets, and cut
    to `RAW_MAX_BYTES` with a marker saying how much was cut (a 10 MB cell is not kept whole)."""
    raw = (
        record.raw
        if isinstance(record.raw, str) or record.raw is None
        else json.dumps(record.raw, default=str)
    )
    return fit_bytes(scrub(raw), RAW_MAX_BYTES) if raw else raw


def quarantine_values(record: BadRecord) -> dict[str, Any]:
    """The columns a quarantine entry takes from its record, each fitted to its column."""
    return {
        "source": fit_id(record.source, SOURCE_MAX),
        "record_key": fit_id(record.record_key, QUARANTINE_KEY_MAX),
        "file_name": fit_name(record.file, QUARANTINE_FILE_MAX) if record.file else record.file,
        "line_number": record.line,
        "field": fit_name(record.field, QUARANTINE_FIELD_MAX) if record.field else record.field,
        "raw_payload": quarantine_raw(record),
        "error_class": fit_id(record.error_class, ERROR_CLASS_MAX),
        "message": fit_bytes(scrub(record.reason), MESSAGE_MAX_BYTES),
    }


def quarantine_key(source: str, record_key: str) -> tuple[str, str]:
    """(source, record_key) as stored: what a lookup of a record compares with."""
    return fit_id(source, SOURCE_MAX), fit_id(record_key, QUARANTINE_KEY_MAX)


def refused_record(outcome: Outcome) -> BadRecord:
    """The quarantine record of an action MM refused (or erpsync gave up on), named by its ERP row
    (``file:line`` or ticket, when this cycle planned it) and its run."""
    entry = outcome.action
    ref = entry.ref
    file, line = origin_location(ref.origin if ref else "")
    reason = outcome.error_message or "refused by MachineMetrics"
    if ref is not None:
        reason = f"run {ref.run_key} ({ref.job} op {ref.operation} on {ref.machine}): {reason}"
    return BadRecord(
        source=entry.source or "mm",
        record_key=entry.mm_run_id or entry.idempotency_key,
        reason=reason,
        error_class=f"mm_{entry.kind}",
        file=file,
        line=line,
        raw=entry.payload,
        job=ref.job if ref else None,
        operation=ref.operation if ref else None,
        machine=ref.machine if ref else None,
        mm_run_id=entry.mm_run_id,
    )


def reject_reason(outcome: Outcome) -> str:
    return fit_bytes(scrub(outcome.error_message or "refused by MM"), REJECT_REASON_MAX)


# -- machines ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MachineChanges:
    """What noting the machines seen in a cycle writes to ``erpsync_machine``."""

    new: list[dict[str, Any]]  # rows to insert
    changed: list[dict[str, Any]]  # m_machine / m_mm / m_runs: mapping or run count changed
    remapped: list[str]  # sent to another MM id: MM's refusal of the old id is cleared
    seen_again: list[str]  # unchanged, last seen more than `MACHINE_SEEN_RESOLUTION` ago


def machine_changes(
    machines: Mapping[str, tuple[str | None, int]],
    known: Mapping[str, tuple[str | None, int, datetime]],
    now: datetime,
) -> MachineChanges:
    """Compare the machines seen (resource -> MM id, runs) with the stored ones (+ last seen).

    `last_seen_at` is refreshed at most every `MACHINE_SEEN_RESOLUTION` for a machine whose mapping
    and run count did not change: at 100,000 machines, rewriting every row each cycle cost more
    than the rest of a no-change cycle's state work (bench/).
    """
    wanted = {
        fit_id(erp_machine, MACHINE_MAX): (fit_optional_id(mm, MM_MACHINE_MAX), runs)
        for erp_machine, (mm, runs) in machines.items()
    }
    stale = now - MACHINE_SEEN_RESOLUTION
    changes = MachineChanges([], [], [], [])
    for machine, (mm_machine_id, runs) in wanted.items():
        found = known.get(machine)
        if found is None:
            changes.new.append(
                {
                    "erp_machine": machine,
                    "mm_machine_id": mm_machine_id,
                    "first_seen_at": now,
                    "last_seen_at": now,
                    "runs_seen": runs,
                }
            )
        elif found[:2] != (mm_machine_id, runs):
            changes.changed.append({"m_machine": machine, "m_mm": mm_machine_id, "m_runs": runs})
            if found[0] != mm_machine_id:
                changes.remapped.append(machine)
        elif found[2] <= stale:
            changes.seen_again.append(machine)
    changes.remapped.sort()
    changes.seen_again.sort()
    return changes


def count_target(
    binding: Mapping[str, Any], sink_row: Mapping[str, Any] | None, any_sink: bool
) -> CountTarget:
    """A binding as a write-back cycle sees it for one sink: its counts row there (None: none yet)
    and whether any sink has a row for it (otherwise the binding's own `last_*` columns count)."""
    last, in_doubt = sink_view(binding, sink_row, any_sink)
    return CountTarget(
        binding["id"],
        binding["mm_run_id"],
        binding["run_key"],
        binding["source"],
        binding["erp_job"],
        binding["erp_operation"],
        binding["erp_machine"],
        last,
        in_doubt,
        status=binding.get("status") or "",
    )


SINK_COUNT_COLUMNS = (*LAST_COLUMNS, "counts_in_doubt")  # what `count_target` reads of a sink's row


def audit_key(outcome: str, error_class: str | None, after_json: str | None) -> AuditKey:
    """The latest write-back audit row of a run, as the cycle compares it."""
    return (outcome, error_class, json.loads(after_json) if after_json else None)
