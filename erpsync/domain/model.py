"""The canonical records erpsync reasons about, whatever ERP or file they came from.

A `JobOperation` is one routing step of a job (what MM imports as a job). A `JobOperationRun` is
one run of an operation on a machine, e.g. a VISUAL labor ticket: what MM starts and stops as a job
run. A `BadRecord` is a row that could not become either; it is quarantined, never dropped.
All datetimes are timezone-aware UTC; durations are MM's units (seconds for setup, ms per part).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from erpsync.domain.columns import fit_id
from erpsync.domain.lifecycle import RUN_KEY_MAX


class RunState(enum.StrEnum):
    """Where a run is, as the ERP records it."""

    SETUP = "setup"
    PRODUCTION = "production"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class JobOperation:
    """One operation of an ERP job: the unit MachineMetrics calls a job."""

    job_key: tuple[str, ...]
    operation_seq: str
    machine: str
    job_name: str
    operation_name: str = ""
    part_name: str = ""
    lot_name: str = ""
    description: str = ""
    quantity_required: int | None = None
    expected_setup_seconds: int | None = None
    ideal_part_ms: int | None = None
    expected_part_ms: int | None = None
    due_at: datetime | None = None
    origin: str = ""

    @property
    def job_key_text(self) -> str:
        """The job key as one string, for audit columns and logs."""
        return "/".join(self.job_key)


@dataclass(frozen=True, slots=True)
class JobOperationRun:
    """One run of an operation on one machine; `run_key` is stable across reads."""

    run_key: str
    operation: JobOperation
    state: RunState
    start_at: datetime | None = None
    end_at: datetime | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        # The run key is an identity in the state database (a 255-character column): a longer one
        # gets a stable hash suffix here, once, so bindings, the journal and MM run ids all agree.
        if len(self.run_key) > RUN_KEY_MAX:
            object.__setattr__(self, "run_key", fit_id(self.run_key, RUN_KEY_MAX))

    @property
    def machine(self) -> str:
        return self.operation.machine


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A source row that could not be read, with where it was and how to fix it."""

    source: str
    record_key: str
    reason: str
    error_class: str = "invalid_record"
    file: str | None = None
    line: int | None = None
    field: str | None = None
    raw: dict[str, Any] | str | None = None
    # the run the record is about, when known: its audit row carries them (`audit --machine ...`)
    job: str | None = None
    operation: str | None = None
    machine: str | None = None
    mm_run_id: str | None = None

    def audit_fields(self) -> dict[str, Any]:
        """The audit row that records this row's quarantine (one shape, whoever quarantines it)."""
        return {
            "action": "quarantine",
            "outcome": "quarantined",
            "source": self.source,
            "erp_job": self.job,
            "erp_operation": self.operation,
            "erp_machine": self.machine,
            "mm_run_id": self.mm_run_id,
            "error": self.reason,
            "error_class": self.error_class,
            "detail": f"{self.location}: {self.reason}",
        }

    @property
    def location(self) -> str:
        """`file:line (field)` or the record key: what a person needs to find the row."""
        where = self.file or self.source
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.field:
            where = f"{where} ({self.field})"
        return where


@dataclass(frozen=True, slots=True)
class PartCounts:
    """Part counts of one MM job run; `None` never stands for zero (it means 'no data')."""

    total: int
    good: int
    scrap: int
    nonconform: int
    start_at: datetime | None = None
    end_at: datetime | None = None


@dataclass(slots=True)
class SourceStats:
    """What one read saw, for `sources check` and the cycle summary."""

    rows_read: int = 0
    runs: int = 0
    operations: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    machines: set[str] = field(default_factory=set)
    # set by a source that read something it cannot trust to stop runs (see RunSnapshot.suspect)
    suspect: str | None = None

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def index_runs(desired: Iterable[JobOperationRun]) -> dict[str, JobOperationRun]:
    """ERP runs by run_key; a key seen twice keeps the later run (lookups follow the snapshot)."""
    return {run.run_key: run for run in desired}
