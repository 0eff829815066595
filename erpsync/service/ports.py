"""The ports the service layer runs through: erpsync's state (a unit of work) and MachineMetrics.

The service never sees SQL or HTTP. Each port has a real adapter and an in-memory fake:

- `UnitOfWork`: adapters/state/uow.py (SQLAlchemy, one transaction) and
  adapters/state/memory.py (dicts, for the fast service tests);
- `MachineMetrics`: adapters/mm/client.py (`MMClient`, HTTP) and adapters/mm/fake.py (the
  simulator's own model, called in process).

A unit of work is one transaction: entered with a `Fence`, it checks the fencing token first,
so a former leader's work is refused before it writes anything; it commits when the block ends
normally and rolls back otherwise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeAlias, TypeVar

from erpsync.adapters.mm.schemas import JobFile, JobRun, StartJobRun, StopJobRun
from erpsync.domain.admin_rows import ActionRow, MachineRow, QuarantineRow
from erpsync.domain.drift import Drift
from erpsync.domain.lifecycle import BoundRun, Intent, JournaledAction, JournalStamp, Outcome
from erpsync.domain.model import BadRecord, PartCounts
from erpsync.domain.plan import Flag
from erpsync.domain.writeback_rules import AuditKey, CountTarget


class Fence(Protocol):
    """Proof that this process is the one allowed to act (runtime/leader.py gives it)."""

    @property
    def token(self) -> int | None: ...

    def is_current(self) -> bool:
        """Cheap in-memory check: False once the lease was lost or is about to expire."""

    def check(self, transaction: Any) -> None:
        """Authoritative check inside a unit of work's transaction; raises FencedError when stale."""


# -- what the repositories take and give -------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit row (``erpsync_audit``); the adapter adds actor, correlation id and time."""

    action: str
    outcome: str
    source: str | None = None
    erp_job: str | None = None
    erp_operation: str | None = None
    erp_machine: str | None = None
    mm_run_id: str | None = None
    action_id: int | None = None
    fencing_token: int | None = None
    http_status: int | None = None
    error: str | None = None
    error_class: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    detail: str | None = None


# -- repositories -------------------------------------------------------------------------------
class ActionRepository(Protocol):
    """The action journal (``erpsync_action``): intent before an MM call, outcome after it."""

    def existing_keys(self, keys: Collection[str]) -> set[str]: ...

    def record(self, intents: Sequence[Intent], stamp: JournalStamp) -> list[JournaledAction]:
        """Journal the intents (claimed until `claim_until`) and the binding rows they imply."""

    def due(self, now: datetime, limit: int = 10_000) -> list[JournaledAction]:
        """Pending or retryable actions whose claim or backoff has run out."""

    def claim(self, action: JournaledAction, now: datetime, claim_until: datetime) -> JournaledAction | None:
        """Take a due action for one attempt; None when another settler holds it."""

    def settle(self, outcomes: Sequence[Outcome], *, fencing_token: int | None) -> list[Outcome]:
        """Write each outcome (action, binding, audit, quarantine, machine refusal) while the
        action is still due; returns the outcomes written (a second settler's are dropped)."""

    def release(self, action_ids: Collection[int]) -> None:
        """Hand back claims on actions that were not sent, so the next cycle sends them."""

    def started_bodies(self, mm_run_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """The body of the latest start MM took (succeeded) for each run id that has one."""


class BindingRepository(Protocol):
    """Run bindings (``erpsync_run_binding``): which MM run erpsync made for which ERP run."""

    def open_runs(self, source: str) -> dict[str, BoundRun]:
        """Bindings MM may still have open (`RECONCILE_BINDING_STATUSES`), by run key."""

    def by_keys(self, source: str, run_keys: Collection[str]) -> dict[str, BoundRun]: ...

    def generations(self, source: str, anchors: Collection[str]) -> dict[str, BoundRun]:
        """Every run generation of these anchor tickets (domain/shop_floor.py `generation_key`)."""

    def all_runs(self, source: str) -> dict[str, BoundRun]:
        """Every binding of `source` (resync: an explicit, whole-history request)."""

    def latest_ends(
        self, source: str, mm_machines: Collection[str], since: datetime, until: datetime
    ) -> dict[str, datetime]:
        """Per MM machine, the latest end (``mm_end_at``, else ``erp_end_at``) in (since, until]
        of a run MM no longer has open (not `MM_OPEN_BINDING_STATUSES`): when erpsync last freed
        the machine. A machine without one is absent. Asked only for machines with new starts."""

    def exists(self, mm_run_id: str) -> bool: ...

    def lock(self, mm_run_ids: Collection[str]) -> None:
        """Lock these bindings in mm_run_id order before updating them in several statements."""

    def remember_flag(self, flag: Flag) -> None:
        """Store what `flag` changes on its binding (`flag.mm_run_id`), so it is not raised again."""

    def record_drift(self, drift: Drift) -> bool:
        """Record a run MM lost or ended (domain/drift.py) on its binding: its status, MM's end and
        its final-counts marker, only while the binding is still `drift.was`. True when it changed
        (the caller audits it then: once per drift, never every cycle)."""


class QuarantineRepository(Protocol):
    """The dead-letter queue (``erpsync_quarantine``)."""

    def upsert(self, record: BadRecord, now: datetime, action_id: int | None = None) -> bool:
        """Quarantine a record; True when new or re-opened (callers audit it once, not each cycle)."""

    def resolve_retried(self, source: str, still_bad: Collection[tuple[str, str]]) -> int:
        """Source rows a person marked for retry that a full read did not find bad again."""

    def open_count(self) -> int: ...


class AuditRepository(Protocol):
    def record(self, entry: AuditRecord) -> None: ...

    def flags_audited(self, flags: Collection[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """(kind, mm_run_id, detail) already audited for these (kind, job, mm_run_id) flags."""


class MachineRepository(Protocol):
    def note(self, machines: Mapping[str, tuple[str | None, int]], now: datetime) -> None:
        """Remember each ERP resource seen: its MM machine id and how many runs used it."""

    def rejected(self) -> set[str]:
        """MM machine ids MM refused: runs on them are quarantined, not sent."""


class CycleRepository(Protocol):
    """``erpsync_cycle``: one row per cycle, what `erpsync status` and /readyz read."""

    def start(self, kind: str, *, correlation_id: str, trigger: str | None, started_at: datetime) -> int: ...

    def finish(
        self, cycle_id: int, *, finished_at: datetime, outcome: str, summary: str, error: str | None
    ) -> None: ...


class CheckpointRepository(Protocol):
    """``erpsync_source_checkpoint``: what a stream last delivered (here: job-file digests)."""

    def digest(self, source: str, stream: str) -> str | None: ...

    def remember_digest(self, source: str, stream: str, digest: str, rows: int) -> None: ...


class CountsRepository(Protocol):
    """Write-back state: what erpsync last wrote (and set out to write) to each count sink, per run.

    Kept per sink (``erpsync_sink_counts``): a sink is only compared with what erpsync wrote into
    *that* sink. The binding mirrors the counts last written by any sink, for the views; its
    updates leave the binding's version alone (the sync loop owns the other columns).
    """

    def targets(self, sink: str, *, run_id: str | None) -> list[CountTarget]:
        """The runs a cycle reads, in binding order, each with `sink`'s view (`sink_view`):
        `run_id` alone, or the active runs and the stopped ones whose final counts are due."""

    def blocking_conflicts(self) -> set[tuple[str, str]]:
        """(source, mm_run_id) of the write-back conflicts a person has not let go of."""

    def quarantined_runs(self, error_class: str) -> set[str]:
        """mm_run_ids with an open (or sent back for retry) quarantine entry of `error_class`."""

    def resolve_quarantined(self, error_class: str, mm_run_ids: Sequence[str]) -> None:
        """Those runs' open (or retry) entries of `error_class` are resolved: the cause is gone."""

    def record_intents(self, sink: str, intents: Sequence[tuple[CountTarget, Sequence[PartCounts]]]) -> None:
        """Each run's writes in doubt for `sink`, before the ERP transaction (given in mm_run_id
        order, the one lock order of every multi-row update)."""

    def save_written(
        self, sink: str, written: Sequence[tuple[CountTarget, PartCounts]], now: datetime
    ) -> None:
        """The counts now in `sink` (its writes in doubt cleared), mirrored on the binding."""

    def clear_doubt(self, sink: str, targets: Sequence[CountTarget]) -> None:
        """The runs' writes in doubt are settled without a write: the ERP held the value."""

    def set_final_since(self, marks: Sequence[tuple[CountTarget, datetime | None]]) -> None:
        """Each stopped run's final-counts marker (None: its final counts are in the ERP), only
        where it is still the `CountTarget.final_since` the cycle read."""

    def resolve_retried(self, mm_run_ids: Sequence[str]) -> None:
        """Conflicts a person sent back for retry, and final counts erpsync gave up on, that have
        now been written are resolved."""

    def last_audited(self, targets: Sequence[CountTarget]) -> dict[str, AuditKey]:
        """Each run's latest write-back audit row as (outcome, error class, after), by mm_run_id."""


class AuditedWork(Protocol):
    """A state transaction that audits what it does: the cycles' and the commands' both do.
    (Read-only members, so an adapter's own repository classes satisfy them.)"""

    @property
    def audit(self) -> AuditRepository: ...


class UnitOfWork(AuditedWork, Protocol):
    """One state transaction of the cycles and its repositories."""

    @property
    def actions(self) -> ActionRepository: ...

    @property
    def bindings(self) -> BindingRepository: ...

    @property
    def quarantine(self) -> QuarantineRepository: ...

    @property
    def machines(self) -> MachineRepository: ...

    @property
    def cycles(self) -> CycleRepository: ...

    @property
    def checkpoints(self) -> CheckpointRepository: ...

    @property
    def counts(self) -> CountsRepository: ...


_Work_co = TypeVar("_Work_co", covariant=True)


class WorkFactory(Protocol[_Work_co]):
    """Opens a unit of work; with a fence, the fencing token is checked before anything else."""

    def __call__(self, fence: Fence | None = None) -> AbstractContextManager[_Work_co]: ...


UnitOfWorkFactory: TypeAlias = WorkFactory[UnitOfWork]


# -- MachineMetrics ------------------------------------------------------------------------------
class MachineMetrics(Protocol):
    """Every effect erpsync has on MachineMetrics; the signatures are `MMClient`'s.

    Errors (erpsync/adapters/mm/errors.py), each also an erpsync error category:

    - `MMConfigError` (401/403 with MM's JSON error, 405): stop calling MM;
    - `MMRecordError`, with `MMNotFoundError` (404) and `MMConflictError` (409): MM refused this one
      record (400/422, e.g. code ``MachineNotFound``), or erpsync refused to send it
      (code ``ClientValidation``): quarantine it;
    - `MMRetryableError`, with `MMCircuitOpenError` and `MMUnexpectedAnswerError`: a passing fault
      (408/429/5xx, network, the call's deadline, open breaker) or an answer that is not MM's own
      (HTML, a redirect, a get that is not a job run: never a success or "not found"): a later
      cycle tries again.
    """

    def start_job_run(self, request: StartJobRun) -> None:
        """Start a run; the same start again is a no-op. Other values for the id: MMConflictError."""

    def stop_job_run(self, request: StopJobRun) -> None:
        """Stop a run; a stopped run stays as it is. Unknown run: MMNotFoundError."""

    def get_job_run(self, run_id: str) -> JobRun | None:
        """The run's times and part counts; None when MM does not have it (404 raises nothing)."""

    def import_jobs(self, job_file: JobFile) -> None:
        """Upload a job file; ``auto_archive`` archives the jobs it does not name."""


# ===============================================================================================
# -- the commands a person runs: quarantine, retention, status ----------------------------------
# These repositories serve `erpsync quarantine | machines | retention | status`, not the cycles,
# so they are not part of `UnitOfWork` (whose in-memory fake the fast service tests use): an
# `AdminUnitOfWork` has them and the audit (adapters/state/uow.py's unit of work is one). The rows
# they give are domain/admin_rows.py's.
class QuarantineAdmin(Protocol):
    """What `erpsync quarantine` and `erpsync machines` read and change; the rules are the service's."""

    def entries(self, status: str | None, limit: int) -> Sequence[QuarantineRow]:
        """Entries in id order, of one status (None: all)."""

    def entry(self, entry_id: int) -> QuarantineRow | None: ...

    def action(self, action_id: int) -> ActionRow | None: ...

    def set_status(self, entry_id: int, status: str, *, seen_at: datetime | None = None) -> None:
        """Give an entry a new status (and, with `seen_at`, a new last-seen time)."""

    def rearm(
        self,
        action_id: int,
        *,
        idempotency_key: str | None = None,
        payload: Mapping[str, Any] | None = None,
        erp_machine: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Make an action pending with no attempts (the next cycle settles it), with these changes."""

    def supersede(self, action_id: int, now: datetime) -> None:
        """Settle an action as superseded: it is never sent."""

    def key_generation(self, mm_run_id: str) -> str | None:
        """The resync generation the run's binding keys carry; None without a binding."""

    def key_taken(self, idempotency_key: str) -> bool: ...

    def move_binding(
        self,
        mm_run_id: str,
        *,
        from_status: str,
        to_status: str,
        now: datetime,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """Move the run's binding from one status to another (with these columns); else nothing."""

    def clear_rejection(self, mm_machine: str | None, erp_machine: str | None = None) -> None:
        """Forget MM's refusal of a machine, matched by MM machine id or ERP resource."""

    def remap_machine(self, erp_machine: str, mm_machine_id: str | None) -> None:
        """Record the ERP resource's MM machine id now, and forget any refusal of it."""

    def machines(self) -> Sequence[MachineRow]:
        """Every ERP resource seen, by name."""


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Which history rows are past retention: the service's statuses, the adapter's queries.

    A binding is finished (its status in `finished_bindings`, no counts in doubt) and untouched
    since the cutoff; an action is settled before it (`final_actions`) and neither its run is open
    (`open_bindings`) nor a live quarantine entry (`live_quarantine`) is behind it; a quarantine
    entry is closed (`closed_quarantine`) and not seen since; a cycle started before it and is not
    its kind's newest; a heartbeat is older than it.
    """

    cutoff: datetime
    finished_bindings: frozenset[str]
    final_actions: frozenset[str]
    open_bindings: frozenset[str]
    live_quarantine: frozenset[str]
    closed_quarantine: frozenset[str]


class HistoryStore(Protocol):
    """Deletes what grows with time, by id and in batches the service sizes."""

    def count_audit(self, before: datetime) -> int: ...

    def audit_ids(self, before: datetime, limit: int) -> list[int]:
        """The oldest audit row ids that occurred before `before`, in id order."""

    def delete_audit(self, ids: Sequence[int]) -> None:
        """Delete audit rows past the trail's append-only guard, and put the guard back."""

    def count_expired(self, table: str, rule: RetentionRule) -> int:
        """Rows of a history table (`HISTORY_TABLES`) past retention."""

    def expired_ids(self, table: str, rule: RetentionRule, limit: int) -> list[int]: ...

    def delete(self, table: str, ids: Sequence[int]) -> None: ...

    def count_heartbeats(self, before: datetime) -> int: ...

    def delete_heartbeats(self, before: datetime) -> int:
        """Heartbeat rows of instances silent since `before`, deleted at once (one per instance)."""


# the history tables a `HistoryStore` purges by id, in the order they are purged
HISTORY_TABLES = ("erpsync_action", "erpsync_run_binding", "erpsync_cycle", "erpsync_quarantine")


class AdminUnitOfWork(AuditedWork, Protocol):
    """The repositories of the commands a person runs, in one state transaction."""

    @property
    def quarantine_admin(self) -> QuarantineAdmin: ...

    @property
    def history(self) -> HistoryStore: ...


AdminUnitOfWorkFactory: TypeAlias = WorkFactory[AdminUnitOfWork]


class CycleRow(Protocol):
    kind: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None


class LeaseRow(Protocol):
    holder: str | None
    expires_at: datetime | None
    fencing_token: int | None


class StatusReader(Protocol):
    """What `erpsync status` reads: quick, read-only (SQLAlchemy Core, no ORM, in the adapter)."""

    def binding_counts(self) -> dict[str, int]:
        """Run bindings by status."""

    def action_counts(self) -> dict[str, int]:
        """Journaled actions by status."""

    def quarantine_count(self, status: str) -> int: ...

    def cycle_kinds(self) -> list[str]: ...

    def last_cycle(self, kind: str) -> CycleRow: ...

    def last_finished(self, kind: str, outcome: str) -> datetime | None:
        """When the newest cycle of `kind` with this outcome finished."""

    def lease(self) -> LeaseRow | None: ...
