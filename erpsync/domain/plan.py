"""What a reconcile decides: actions to send to MM, flags for a person, counts.

The planner (domain/reconcile.py) makes these; the service journals the actions (intent first),
applies the flags to bindings and the audit, and the dispatcher sends the actions to MM.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeAlias

from erpsync.domain.lifecycle import REASON_MAX, ActionKind, BindingStatus, RunRef
from erpsync.domain.model import BadRecord, JobOperationRun


class FlagKind(enum.StrEnum):
    """Things a human should know about, each audited once (see `Flag.dedupe_key`)."""

    VANISHED = "vanished"
    EXCLUDED = "excluded"
    JOB_FIELDS_CHANGED = "job_fields_changed"
    SUPERSEDED = "superseded"
    PRODUCTION_TO_SETUP = "production_to_setup"
    REBIND = "rebind"
    ENDED_IN_MM = "ended_in_mm"
    MISSING_IN_MM = "missing_in_mm"
    RETURNED = "returned"  # a run the ERP had lost is back: erpsync manages its MM run again


class _RefName:
    """An action's name that is its `RunRef`'s (the ref is the one place the run is named)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, action: _OnRun, owner: type[_OnRun] | None = None) -> str:
        value: str = getattr(action.ref, self.name)
        return value


class _OnRun:
    """What other modules read of an action on one run: its `RunRef`'s names."""

    __slots__ = ()
    ref: RunRef

    source = _RefName("source")
    run_key = _RefName("run_key")
    mm_run_id = _RefName("mm_run_id")
    job = _RefName("job")
    operation = _RefName("operation")
    erp_machine = _RefName("machine")


@dataclass(frozen=True, slots=True, kw_only=True)
class StartAction(_OnRun):
    """Start an MM run: a new run (in setup or production), a resync's restart, or the switch of a
    run in setup to production (the same MM run id with ``startInSetup=false``).

    The MM client must send ``erpMachineId = mm_machine_id`` (not a re-mapping of ``run.machine``):
    a production switch goes to the machine the run was started on.
    """

    kind: ClassVar[Literal[ActionKind.START]] = ActionKind.START
    ref: RunRef
    mm_machine_id: str
    in_setup: bool
    run: JobOperationRun  # the ERP row the request body is made from
    payload_hash: str  # the job fields' fingerprint; the binding stores it (rule 4)
    reason: str
    idempotency_key: str
    generation: str = ""  # the generation in ``idempotency_key``; the binding stores it
    # the setup -> production switch: MM takes it only with the values the run was started with
    # (an edit of the ticket since is flagged, not sent: rule 4), so the body repeats that start
    switch: bool = False

    def __post_init__(self) -> None:
        # where the ERP row is rides on the ref, to the quarantine entry of a start MM refuses
        origin = self.run.origin or self.run.operation.origin
        if origin and not self.ref.origin:
            object.__setattr__(self, "ref", replace(self.ref, origin=origin))


@dataclass(frozen=True, slots=True, kw_only=True)
class StopAction(_OnRun):
    """Stop an MM run at ``end_at`` (already clamped to [MM start, now])."""

    kind: ClassVar[Literal[ActionKind.STOP]] = ActionKind.STOP
    ref: RunRef
    mm_machine_id: str
    end_at: datetime
    in_setup: bool  # the phase the run is stopped in, for display
    reason: str
    idempotency_key: str
    generation: str = ""
    # the ERP lost the run (rule 5) rather than ended it: a stop a suspect snapshot must not make
    vanished: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportAction:
    """Upload one job CSV (MM's "import jobs via file"); no run of its own."""

    kind: ClassVar[Literal[ActionKind.IMPORT]] = ActionKind.IMPORT
    source: str
    content_sha256: str
    rows: int
    reason: str
    idempotency_key: str


# What a reconcile plans (on runs), and everything that is journaled.
RunAction: TypeAlias = StartAction | StopAction
PlannedAction: TypeAlias = StartAction | StopAction | ImportAction


@dataclass(frozen=True, slots=True)
class Flag:
    """Something to audit, not to send. ``binding_status``/``payload_hash``, when set, are what the
    service should store on the binding so the same flag is not raised again next cycle;
    ``dedupe_key`` identifies the situation for flags that have no binding to update."""

    kind: str
    run_key: str
    mm_run_id: str
    erp_machine: str
    job: str
    operation: str
    message: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    binding_status: BindingStatus | None = None
    payload_hash: str | None = None
    dedupe_key: str = ""
    generation: str | None = None
    # with binding_status: when MM's run ended (or was found gone), so a next run generation starts
    # after it (domain/shop_floor.py), and whether a stopped run's final counts are still to be read
    # (not for a run MM no longer has)
    mm_end_at: datetime | None = None
    final_counts: bool = True


@dataclass(slots=True)
class PlanStats:
    """Counts for the cycle summary and metrics."""

    started: int = 0
    switched: int = 0
    stopped: int = 0
    unchanged: int = 0
    vanished: int = 0
    quarantined: int = 0
    superseded: int = 0
    flagged: int = 0
    skipped_ignored: int = 0
    skipped_ended: int = 0
    skipped_excluded: int = 0
    unknown: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Plan:
    """What one reconcile decided: ordered actions, quarantined runs, flags, counts."""

    actions: list[RunAction] = field(default_factory=list)
    quarantined: list[BadRecord] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    stats: PlanStats = field(default_factory=PlanStats)

    def by_machine(self) -> dict[str, list[RunAction]]:
        """Each MM machine's actions in the order to send them (stops first)."""
        groups: dict[str, list[RunAction]] = {}
        for action in self.actions:
            groups.setdefault(action.mm_machine_id, []).append(action)
        for group in groups.values():
            group.sort(key=lambda a: 0 if a.kind is ActionKind.STOP else 1)
        return groups


def import_action(*, source: str, content_sha256: str, generation: str, rows: int) -> ImportAction:
    """The journal entry for one job-CSV upload.

    The service plans it only when the content differs from the last upload; ``generation`` makes
    A -> B -> A a new action, the content hash makes the row say what was sent.
    """
    if not generation:
        raise ValueError("import_action needs a generation token")
    return ImportAction(
        source=source,
        content_sha256=content_sha256,
        rows=rows,
        reason=cut_reason(f"job import: {rows} rows, sha256 {content_sha256[:12]}"),
        idempotency_key=f"{ActionKind.IMPORT}:{source}:{content_sha256}@{generation}",
    )


def cut_reason(text: str) -> str:
    """A reason that fits the journal's column, marked as cut."""
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"
