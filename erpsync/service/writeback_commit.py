"""Write-back step 5: the state transaction after the ERP transaction.

What was written becomes this sink's last-written counts (its writes in doubt cleared; the binding
mirrors the counts last written by any sink), every outcome gets its audit row, and a conflict
(the ERP value is neither what erpsync last wrote nor one of its writes in doubt: a person changed
it) is quarantined, which keeps erpsync's hands off that run until a person lets go of it.
Implausible counts MM sent for a run are quarantined (the entry updated each cycle, so a person's
retry re-opens it while MM still sends them) and audited once per distinct answer.
A stopped run's final-counts marker moves as the cycle decided (`Done.final`); a run erpsync gives
up on (its final read or write kept failing) is quarantined with what to do, and audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from erpsync.domain.drift import Drift, DriftKind
from erpsync.domain.model import BadRecord, PartCounts
from erpsync.domain.plausible_counts import IMPLAUSIBLE_OUTCOME, implausible_record
from erpsync.domain.writeback_rules import (
    CONFLICT_CLASS,
    FINAL_COUNTS_CLASS,
    WRITE_ACTION,
    AuditKey,
    CountTarget,
    FinalStep,
)
from erpsync.observability.metrics import QUARANTINE_OPEN
from erpsync.service.ports import AuditRecord, UnitOfWork
from erpsync.service.writeback_report import MISSING_OUTCOME, maybe_counts

log = structlog.get_logger(__name__)

# outcomes that can repeat every cycle: audited when they first happen (or change), not each time
REPEATING = frozenset({"no_data", "decrease_refused", "failed", IMPLAUSIBLE_OUTCOME})


@dataclass(slots=True)
class Done:
    """A run's outcome waiting for the state commit."""

    target: CountTarget
    outcome: str
    counts: PartCounts | None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    message: str | None = None
    error_class: str | None = None
    http_status: int | None = None
    final: FinalStep | None = None  # a stopped run's final-counts marker after this cycle
    drift: Drift | None = None  # MM lost or ended the run while erpsync had it running

    def key(self) -> AuditKey:
        """What makes a repeated outcome the same as last time (then it is not audited again)."""
        return (self.outcome, self.error_class, self.after)


def commit_state(uow: UnitOfWork, sink: str, done: list[Done], now: datetime, token: int | None) -> None:
    """Record a batch's outcomes in the (fenced) unit of work `uow`."""
    done = sorted(done, key=lambda d: d.target.mm_run_id)  # binding lock order, as a sync's
    written = [d for d in done if d.outcome in ("written", "already_written")]
    # the ERP already held these values, so none of the run's writes in doubt changed it: the
    # doubt is settled, and nothing is recorded as written (no audit row would back it)
    doubt_settled = [d.target for d in done if d.outcome == "unchanged" and d.target.in_doubt]
    marks = [
        (d.target, d.final.since)
        for d in done
        if d.final is not None and d.final.since != d.target.final_since
    ]
    # several statements update bindings below: lock them all first, in one order
    drifted = [d for d in done if d.drift is not None]
    uow.bindings.lock(
        [d.target.mm_run_id for d in written]
        + [t.mm_run_id for t in doubt_settled]
        + [t.mm_run_id for t, _ in marks]
        + [d.target.mm_run_id for d in drifted]
    )
    if written:
        uow.counts.save_written(sink, [(d.target, _counts(d)) for d in written], now)
        uow.counts.resolve_retried([d.target.mm_run_id for d in written])
    if doubt_settled:
        uow.counts.clear_doubt(sink, doubt_settled)
    if marks:
        uow.counts.set_final_since(marks)
    last = uow.counts.last_audited([d.target for d in done if d.outcome in REPEATING])
    quarantined = 0
    for d in done:
        reopened = False
        if d.outcome == IMPLAUSIBLE_OUTCOME:
            quarantined += 1
            record = implausible_record(d.target, d.after or {}, d.message or "")
            reopened = uow.quarantine.upsert(record, now)
        repeated = d.outcome in REPEATING and last.get(d.target.mm_run_id) == d.key() and not reopened
        if d.outcome in ("unchanged", MISSING_OUTCOME) or repeated:  # a lost run: its drift row says it
            continue
        if d.outcome == "conflict":
            quarantined += 1
            uow.quarantine.upsert(_conflict_record(d), now)
        uow.audit.record(_audit_record(d, sink, token))
    for d in done:
        if d.final is not None and d.final.give_up:
            quarantined += 1
            record = _given_up_record(d, now)
            uow.quarantine.upsert(record, now)
            uow.audit.record(_given_up_audit(d, record.reason, sink, token))
    for d in drifted:
        assert d.drift is not None
        if uow.bindings.record_drift(d.drift):  # still as read: recorded and audited once
            uow.audit.record(_drift_audit(d, d.drift, token))
            log.warning(
                "writeback.drift",
                kind=str(d.drift.kind),
                mm_run_id=d.target.mm_run_id,
                binding_status=str(d.drift.status),
                heal_drift=d.drift.heal,
            )
    if quarantined:
        QUARANTINE_OPEN.set(uow.quarantine.open_count())


def _counts(done: Done) -> PartCounts:
    assert done.counts is not None
    return done.counts


def _audit_record(d: Done, sink: str, token: int | None) -> AuditRecord:
    return _write_audit(
        d,
        token,
        outcome=d.outcome,
        error=d.message if d.outcome not in ("written", "already_written") else None,
        error_class=d.error_class,
        before=d.before,
        after=d.after,
        detail=f"sink {sink}" + (f": {d.message}" if d.message else ""),
    )


def _write_audit(d: Done, token: int | None, **what: Any) -> AuditRecord:
    """A write-back audit row about `d`'s run; `what` says what happened to it."""
    t = d.target
    return AuditRecord(
        action=WRITE_ACTION,
        source=t.source,
        erp_job=t.erp_job,
        erp_operation=t.erp_operation,
        erp_machine=t.erp_machine,
        mm_run_id=t.mm_run_id,
        fencing_token=token,
        http_status=d.http_status,
        **what,
    )


def _drift_audit(d: Done, drift: Drift, token: int | None) -> AuditRecord:
    """The one audit row of a run MM lost or ended (``action`` missing_in_mm / ended_in_mm)."""
    t = d.target
    return AuditRecord(
        action=str(drift.kind),
        outcome="flagged",
        source=t.source,
        erp_job=t.erp_job,
        erp_operation=t.erp_operation,
        erp_machine=t.erp_machine,
        mm_run_id=t.mm_run_id,
        fencing_token=token,
        http_status=404 if drift.kind is DriftKind.MISSING_IN_MM else None,
        before=drift.before(),
        after=drift.after(),
        detail=drift.message,
    )


def _given_up_record(done: Done, now: datetime) -> BadRecord:
    """The quarantine entry of a stopped run whose final counts never reached the ERP."""
    t = done.target
    assert t.final_since is not None
    hours = (now - t.final_since) // timedelta(hours=1)
    why = done.message or done.error_class or done.outcome
    reason = (
        f"final part counts of MM run {t.mm_run_id} (ERP job {t.erp_job} op {t.erp_operation} on "
        f"{t.erp_machine}) did not reach the ERP {hours} h after erpsync stopped the run: {why}. "
        f"Once MM and the ERP answer, run `erpsync writeback --run {t.mm_run_id}`: it writes them "
        "and resolves this entry"
    )
    return BadRecord(
        source=t.source,
        record_key=t.mm_run_id,
        reason=reason,
        error_class=FINAL_COUNTS_CLASS,
        raw={
            "run_key": t.run_key,
            "stopped_or_changed_at": t.final_since.isoformat(),
            "last_written": maybe_counts(t.last),
            "mm_counts": maybe_counts(done.counts),
        },
    )


def _given_up_audit(d: Done, reason: str, sink: str, token: int | None) -> AuditRecord:
    return _write_audit(
        d,
        token,
        outcome="quarantined",
        error=reason,
        error_class=FINAL_COUNTS_CLASS,
        before=maybe_counts(d.target.last),
        after=None,
        detail=f"sink {sink}: final counts given up",
    )


def _conflict_record(done: Done) -> BadRecord:
    return BadRecord(
        source=done.target.source,
        record_key=done.target.mm_run_id,
        reason=done.message or "the ERP value is not what erpsync last wrote: not overwritten",
        error_class=CONFLICT_CLASS,
        raw={
            "run_key": done.target.run_key,
            "erp_value": done.before,
            "last_written": maybe_counts(done.target.last),
            "mm_counts": maybe_counts(done.counts),
        },
    )
