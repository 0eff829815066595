"""Drift: MachineMetrics no longer shows a run erpsync holds open, and what erpsync does about it.

MM can lose a run (a restore, a purge), or a person can end it by hand in MM while the ERP still has
the ticket open. erpsync finds out only through reads it makes anyway (write-back's get job run,
`erpsync resync`), so a no-change cycle makes no extra MM call. `drift_of` says whether a read shows
drift for a binding, and the `Drift` it returns what is recorded, once, by ``sync.heal_drift``:

- ``restart`` (the default): the binding is recorded ``stopped`` with MM's end (for a lost run, the
  time erpsync found it gone), so the next sync cycle's shop-floor rule starts the ticket's next run
  generation (domain/shop_floor.py: the path of a reopened ticket) from that time on. The new run
  never overlaps the old one, so no part is counted twice, and the counts already written for the
  old run stay in the ticket's sum (domain/writeback_rules.py `with_sibling_counts`);
- ``flag``: the binding is recorded ``failed``; nothing restarts until a person runs
  `erpsync resync`, which reads MM and records the run stopped, so the next cycle starts the next
  generation.

A lost run has no final counts to read (write-back stops asking for it at once); an ended one keeps
its final-counts window, as any stopped run. The binding changes only while it still has the status
the read was made against (`Drift.was`), so a stop or a resync that got there first wins, and the
drift is audited once, never every cycle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from erpsync.domain.lifecycle import BindingStatus, BoundRun, MMRunState

HealDrift = Literal["restart", "flag"]


class DriftKind(enum.StrEnum):
    """What a read found (also the audit row's ``action``)."""

    MISSING_IN_MM = "missing_in_mm"  # MM has no such run (404)
    ENDED_IN_MM = "ended_in_mm"  # MM shows the run ended (endAt set)


# Bindings a read can find drifted: erpsync told MM the run is open and expects it open. A starting
# run's start and a stopping run's stop are in flight: their own answers settle them.
DRIFT_STATUSES = frozenset({BindingStatus.RUNNING, BindingStatus.VANISHED})


@dataclass(frozen=True, slots=True)
class Drift:
    """What to record for one drifted run: the binding change (only while it is still `was`)."""

    kind: DriftKind
    mm_run_id: str
    was: BindingStatus  # the binding's status when MM was read
    status: BindingStatus  # stopped (restart) or failed (flag)
    mm_end_at: datetime  # MM's end, or when erpsync found the run gone: a new generation starts after it
    final_counts_since: datetime | None  # ended: its final counts are still read; lost: nothing to read
    heal: HealDrift
    message: str

    def before(self) -> dict[str, Any]:
        return {"status": str(self.was)}

    def after(self) -> dict[str, Any]:
        return {"status": str(self.status), "mm_end_at": self.mm_end_at.isoformat(), "heal_drift": self.heal}


def drift_of(
    status: str,
    state: MMRunState,
    *,
    mm_run_id: str,
    run_key: str,
    what: str,
    end_at: datetime | None,
    now: datetime,
    heal: HealDrift,
) -> Drift | None:
    """The drift a read of MM shows for a binding of ``status`` (None: no drift).

    ``state``: get job run's answer (``missing``: 404, ``ended``: endAt set, with ``end_at``);
    ``what`` names the run for a person (job, operation, machine).
    """
    if status not in DRIFT_STATUSES or state == "open":
        return None
    was = BindingStatus(status)
    if state == "missing":
        kind, mm_end_at, final_since = DriftKind.MISSING_IN_MM, now, None
        found = f"MachineMetrics has no run {mm_run_id} that erpsync had open ({what})"
    else:
        kind, mm_end_at, final_since = DriftKind.ENDED_IN_MM, end_at or now, now
        found = (
            f"MachineMetrics shows run {mm_run_id} ended at {mm_end_at.isoformat()} "
            f"while erpsync had it open ({what})"
        )
    if heal == "restart":
        return Drift(
            kind,
            mm_run_id,
            was,
            BindingStatus.STOPPED,
            mm_end_at,
            final_since,
            heal,
            f"{found}; recorded as stopped: while the ERP has {run_key} open, the next sync cycle "
            "starts a new MM run for it (the next run generation)",
        )
    return Drift(
        kind,
        mm_run_id,
        was,
        BindingStatus.FAILED,
        mm_end_at,
        final_since,
        heal,
        f"{found}; recorded as failed and not restarted (sync.heal_drift = flag): check the run in "
        f"MachineMetrics, then `erpsync resync --run {run_key}` starts a new MM run for it",
    )


def bound_after_drift(bound: BoundRun, drift: Drift) -> BoundRun:
    """The binding once ``drift`` is recorded: changed only while it is still ``drift.was``."""
    if bound.mm_run_id != drift.mm_run_id or bound.status is not drift.was:
        return bound
    return replace(bound, status=drift.status, mm_end_at=drift.mm_end_at)
