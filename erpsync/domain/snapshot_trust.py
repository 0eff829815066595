"""Which ERP snapshots may stop runs: a run that *looks* vanished is stopped only on a snapshot we trust.

Transient bad data (a CSV export caught mid-rewrite, a header-only export from a failed job, many
tickets gone at once) must not stop live MM runs for good: a stopped MM run id is never re-opened.
`trust_plan` takes a reconcile `Plan` and holds back its *vanished* stops (`StopAction.vanished`,
rule 5 with ``sync.vanished_runs = "stop"``) when

- the snapshot is suspect (`RunSnapshot.suspect`: truncated, header-only, ...): kind
  ``untrusted_snapshot``; its vanished *flags* (policy ``"flag"``) are held too, so the bindings
  stay live;
- or it would stop more than ``max_share`` of the runs MM has open at once, and at least
  `MASS_MINIMUM` of them: kind ``mass_vanish`` (one run of a one-run shop may still vanish).

Every other action (starts, stops of runs the ERP ended, a new run taking a machine) goes ahead.
The hold is a `Flag` for the audit; it lasts until a person confirms (``confirmed``: the stops go
ahead and a ``stops_confirmed`` flag records it) or a snapshot that is trusted and under the share
comes (then nothing is held). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from erpsync.domain.lifecycle import ActionKind, BindingStatus
from erpsync.domain.plan import Flag, FlagKind, Plan, RunAction, StopAction

UNTRUSTED_SNAPSHOT = "untrusted_snapshot"
MASS_VANISH = "mass_vanish"
STOPS_CONFIRMED = "stops_confirmed"
HOLD_KINDS = (UNTRUSTED_SNAPSHOT, MASS_VANISH)
# Fewer vanished stops than this are never a "mass" vanish, whatever the share: a shop with one or
# two open runs must still be able to lose one.
MASS_MINIMUM = 2
# How many held run ids the audit row lists (the count is always there).
LISTED = 50
CONFIRM_HINT = "erpsync resync --confirm-stops"


@dataclass(frozen=True, slots=True)
class StopHold:
    """What a snapshot was not trusted to stop, and why (or, ``confirmed``, what a person let go)."""

    kind: str  # UNTRUSTED_SNAPSHOT or MASS_VANISH
    reason: str
    stops: tuple[StopAction, ...]  # the vanished stops held back (or confirmed)
    flags: tuple[Flag, ...]  # vanished flags not raised (untrusted snapshots only)
    open_runs: int
    confirmed: bool = False

    @property
    def held(self) -> int:
        """Stops held back by this plan (0 once confirmed)."""
        return 0 if self.confirmed else len(self.stops)

    def flag(self, source: str) -> Flag:
        """The audit row: held (kind = the hold's kind) or confirmed (``stops_confirmed``)."""
        run_ids = [s.mm_run_id for s in self.stops]
        after = {
            "reason": self.reason,
            "stops": len(self.stops),
            "flags": len(self.flags),
            "open_runs": self.open_runs,
            "run_ids": run_ids[:LISTED],
        }
        if self.confirmed:
            return _flag(
                STOPS_CONFIRMED,
                source,
                f"a person confirmed {len(self.stops)} stop(s) of runs that look vanished, held "
                f"because {self.reason}; stopping them in MM",
                {**after, "hold": self.kind},
            )
        what = (
            f"{len(self.stops)} stop(s) of runs that look vanished held" if self.stops else "nothing stopped"
        )
        if self.flags:
            what += f", {len(self.flags)} vanished flag(s) not raised"
        return _flag(
            self.kind,
            source,
            f"{self.reason}: {what}; the runs stay open in MM until a good ERP snapshot comes or a "
            f"person runs `{CONFIRM_HINT}`",
            after,
        )


def trust_plan(
    plan: Plan,
    *,
    source: str,
    suspect: str | None,
    open_runs: int,
    max_share: float,
    confirmed: bool = False,
) -> tuple[Plan, StopHold | None]:
    """``plan`` without the vanished stops the snapshot cannot be trusted to make, plus the hold.

    ``suspect``: why the snapshot cannot be trusted, or None; ``open_runs``: runs MM has open for
    this source (the share's denominator); ``max_share`` in (0, 1]; ``confirmed``: a person said the
    stops are right (the stops stay in the plan, and a ``stops_confirmed`` flag records it).
    Returns ``(plan, None)`` (the same object) when there is nothing to hold: a trusted snapshot
    under the share, or a confirmed one without a vanished stop. Otherwise a new `Plan` that
    carries the hold's flag for the audit; ``plan`` itself is not changed.
    """
    if not 0 < max_share <= 1:
        raise ValueError(f"max_share must be in (0, 1], got {max_share}")
    stops = tuple(a for a in plan.actions if isinstance(a, StopAction) and a.vanished)
    flags: tuple[Flag, ...] = ()
    if suspect:
        kind, reason = UNTRUSTED_SNAPSHOT, f"the ERP snapshot cannot be trusted: {suspect}"
        flags = tuple(f for f in plan.flags if _vanished_flag(f))
    elif len(stops) >= MASS_MINIMUM and len(stops) > max_share * open_runs:
        kind = MASS_VANISH
        reason = (
            f"{len(stops)} of {open_runs} open runs vanished from the ERP at once "
            f"(more than sync.max_vanished_share = {max_share:g})"
        )
    else:
        return plan, None
    if confirmed:
        if not stops:
            return plan, None
        hold = StopHold(kind, reason, stops, (), open_runs, confirmed=True)
        return _planned(plan, list(plan.actions), list(plan.flags), hold, source), hold
    hold = StopHold(kind, reason, stops, flags, open_runs)
    held = {id(s) for s in stops} | {id(f) for f in flags}
    actions = [a for a in plan.actions if id(a) not in held]
    kept = [f for f in plan.flags if id(f) not in held]
    return _planned(plan, actions, kept, hold, source), hold


def _vanished_flag(flag: Flag) -> bool:
    """A vanished/excluded flag that would mark the binding vanished (policy "flag")."""
    return (
        flag.kind in (FlagKind.VANISHED, FlagKind.EXCLUDED) and flag.binding_status is BindingStatus.VANISHED
    )


def _planned(plan: Plan, actions: list[RunAction], flags: list[Flag], hold: StopHold, source: str) -> Plan:
    """A copy of ``plan`` with these actions and flags (plus the hold's), its counts to match."""
    stats = replace(plan.stats)
    stats.stopped = sum(1 for a in actions if a.kind is ActionKind.STOP)
    stats.vanished -= hold.held + (0 if hold.confirmed else len(hold.flags))
    flags = [*flags, hold.flag(source)]
    stats.flagged = len(flags)
    return Plan(actions=actions, quarantined=list(plan.quarantined), flags=flags, stats=stats)


def _flag(kind: str, source: str, message: str, after: dict[str, object]) -> Flag:
    return Flag(
        kind=kind,
        run_key="",
        mm_run_id="",
        erp_machine="",
        job=source,
        operation="",
        message=message,
        before=None,
        after=after,
        dedupe_key=f"{kind}:{source}:{message}",
    )
