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
from typing import Any, Protocol

from erpsync.adapters.mm.schemas import ImportType, JobRun, StartJobRun, StopJobRun
from erpsync.domain.lifecycle import BindingStatus, BoundRun, Intent, JournaledAction, Outcome
from erpsync.domain.model import BadRecord, PartCounts
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

    def record(
        self,
        intents: Sequence[Intent],
        *,
        fencing_token: int | None,
        correlation_id: str | None,
        trigger: str | None,
        claim_until: datetime,
    ) -> list[JournaledAction]:
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


class BindingRepository(Protocol):
    """Run bindings (``erpsync_run_binding``): which MM run erpsync made for which ERP run."""

    def open_runs(self, source: str) -> dict[str, BoundRun]:
        """Bindings MM may still have open (`RECONCILE_BINDING_STATUSES`), by run key."""

    def by_keys(self, source: str, run_keys: Collection[str]) -> dict[str, BoundRun]: ...

    def all_runs(self, source: str) -> dict[str, BoundRun]:
        """Every binding of `source` (resync: an explicit, whole-history request)."""

    def exists(self, mm_run_id: str) -> bool: ...

    def lock(self, mm_run_ids: Collection[str]) -> None:
        """Lock these bindings in mm_run_id order before updating them in several statements."""

    def remember_flag(
        self,
        mm_run_id: str,
        *,
        status: BindingStatus | None = None,
        payload_hash: str | None = None,
        generation: str | None = None,
    ) -> None:
        """Store what a flag changes on the binding, so the same flag is not raised again."""


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

    def targets(self, sink: str, *, run_id: str | None, ended_after: datetime) -> list[CountTarget]:
        """The runs a cycle reads, in binding order, each with `sink`'s view (`sink_view`):
        `run_id` alone, or the active runs and those ended after `ended_after`."""

    def blocking_conflicts(self) -> set[tuple[str, str]]:
        """(source, mm_run_id) of the write-back conflicts a person has not let go of."""

    def record_intents(self, sink: str, intents: Sequence[tuple[CountTarget, Sequence[PartCounts]]]) -> None:
        """Each run's writes in doubt for `sink`, before the ERP transaction (given in mm_run_id
        order, the one lock order of every multi-row update)."""

    def save_written(
        self, sink: str, written: Sequence[tuple[CountTarget, PartCounts]], now: datetime
    ) -> None:
        """The counts now in `sink` (its writes in doubt cleared), mirrored on the binding."""

    def clear_doubt(self, sink: str, targets: Sequence[CountTarget]) -> None:
        """The runs' writes in doubt are settled without a write: the ERP held the value."""

    def resolve_retried(self, mm_run_ids: Sequence[str]) -> None:
        """Conflicts a person sent back for retry that have now been written are resolved."""

    def last_audited(self, targets: Sequence[CountTarget]) -> dict[str, AuditKey]:
        """Each run's latest write-back audit row as (outcome, error class, after), by mm_run_id."""


class UnitOfWork(Protocol):
    """One state transaction and its repositories (read-only members, so an adapter's own
    repository classes satisfy them)."""

    @property
    def actions(self) -> ActionRepository: ...

    @property
    def bindings(self) -> BindingRepository: ...

    @property
    def quarantine(self) -> QuarantineRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def machines(self) -> MachineRepository: ...

    @property
    def cycles(self) -> CycleRepository: ...

    @property
    def checkpoints(self) -> CheckpointRepository: ...

    @property
    def counts(self) -> CountsRepository: ...


class UnitOfWorkFactory(Protocol):
    """Opens a unit of work; with a fence, the fencing token is checked before anything else."""

    def __call__(self, fence: Fence | None = None) -> AbstractContextManager[UnitOfWork]: ...


# -- MachineMetrics ------------------------------------------------------------------------------
class MachineMetrics(Protocol):
    """Every effect erpsync has on MachineMetrics; the signatures are `MMClient`'s.

    Errors (erpsync/adapters/mm/errors.py), each also an erpsync error category:

    - `MMConfigError` (401/403, or an answer that means the setup is wrong): stop calling MM;
    - `MMRecordError`, with `MMNotFoundError` (404) and `MMConflictError` (409): MM refused this one
      record (400/422, e.g. code ``MachineNotFound``), or erpsync refused to send it
      (code ``ClientValidation``): quarantine it;
    - `MMRetryableError`, with `MMCircuitOpenError`: a passing fault (408/429/5xx, network, open
      breaker): a later cycle tries again.
    """

    def start_job_run(self, request: StartJobRun) -> None:
        """Start a run; the same start again is a no-op. Other values for the id: MMConflictError."""

    def stop_job_run(self, request: StopJobRun) -> None:
        """Stop a run; a stopped run stays as it is. Unknown run: MMNotFoundError."""

    def get_job_run(self, run_id: str) -> JobRun | None:
        """The run's times and part counts; None when MM does not have it (404 raises nothing)."""

    def import_jobs(
        self,
        csv_content: bytes,
        *,
        import_type: ImportType = "mm",
        auto_archive: bool = False,
        filename: str = "jobs.csv",
    ) -> None:
        """Upload a job file; ``auto_archive`` archives the jobs it does not name."""
