"""The sync cycle's side of snapshot trust (domain/snapshot_trust.py): which stops a read may make.

`guard_plan` runs right after reconcile: the stops of runs that look vanished are held back when
the snapshot is suspect or would stop too many open runs at once; `report` logs the hold and sets
the `erpsync_stops_held` gauge. The hold's `Flag` is in the plan, so the cycle audits it with the
other flags (once while it lasts). A held snapshot is not acknowledged (sync.py): a CSV file is
read again next cycle, so `erpsync resync --confirm-stops` (a cycle with ``confirm_stops``) acts
on the same file, and a good file replacing it clears the hold by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import structlog

from erpsync.domain.lifecycle import MM_OPEN_BINDING_STATUSES, BoundRun
from erpsync.domain.model import BadRecord
from erpsync.domain.plan import Plan
from erpsync.domain.snapshot_trust import HOLD_KINDS, StopHold, trust_plan
from erpsync.observability.metrics import STOPS_HELD

log = structlog.get_logger(__name__)


def held_keys(bad: Iterable[BadRecord], bindings: Mapping[str, BoundRun]) -> frozenset[str]:
    """Run keys of this read's bad rows (reconcile keeps their bindings as they are).

    A source names the run by `record_key` (VISUAL: the ticket's run key) or, when it knows it,
    by `mm_run_id`; a key that names no binding is harmless.
    """
    keys: set[str] = set()
    run_ids: set[str] = set()
    for record in bad:
        keys.add(record.record_key)
        if record.mm_run_id:
            run_ids.add(record.mm_run_id)
    if run_ids:
        keys.update(key for key, bound in bindings.items() if bound.mm_run_id in run_ids)
    return frozenset(keys)


def open_runs(bindings: Mapping[str, BoundRun]) -> int:
    """Runs MM has open for the source (the denominator of ``sync.max_vanished_share``)."""
    return sum(1 for bound in bindings.values() if bound.status in MM_OPEN_BINDING_STATUSES)


def guard_plan(
    plan: Plan,
    *,
    source: str,
    suspect: str | None,
    bindings: Mapping[str, BoundRun],
    max_share: float,
    confirmed: bool,
) -> tuple[Plan, StopHold | None]:
    """The plan this snapshot may carry out (see domain/snapshot_trust.py), and what it held."""
    return trust_plan(
        plan,
        source=source,
        suspect=suspect,
        open_runs=open_runs(bindings),
        max_share=max_share,
        confirmed=confirmed,
    )


def report(hold: StopHold | None, source: str) -> tuple[int, int]:
    """Log the hold (or its confirmation) and set the gauge; returns (stops held, confirmed)."""
    held = hold.held if hold is not None else 0
    for kind in HOLD_KINDS:
        STOPS_HELD.labels(reason=kind).set(held if hold is not None and hold.kind == kind else 0)
    if hold is None:
        return 0, 0
    run_ids = [s.mm_run_id for s in hold.stops][:20]
    if hold.confirmed:
        log.warning(
            "stops_confirmed",
            source=source,
            hold=hold.kind,
            reason=hold.reason,
            stops=len(hold.stops),
            run_ids=run_ids,
        )
        return 0, len(hold.stops)
    log.warning(
        "stops_held",
        source=source,
        hold=hold.kind,
        reason=hold.reason,
        stops=held,
        flags=len(hold.flags),
        open_runs=hold.open_runs,
        run_ids=run_ids,
        confirm="erpsync resync --confirm-stops",
    )
    return held, 0
