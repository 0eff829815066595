"""Fixtures of the fast service tests: the sync flow on erpsync's in-memory fakes of its ports.

`uow_factory`, `fence` and `mm` are what the tests see of state, leadership and MachineMetrics:
the in-memory unit of work over `tables` (adapters/state/memory.py), a `MemoryFence` holding the
tables' lease, and `FakeMachineMetrics` (the simulator's model in process, machines M1-M3 known).
tests/service/fakes.py has the words to set MM up and read what it got.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.state.memory import MemoryFence, MemoryUnitOfWorkFactory
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.domain.clock import utcnow
from erpsync.domain.lifecycle import BoundRun, JournaledAction
from erpsync.domain.machines import MachineMapper
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, RunState, SourceStats
from erpsync.service.dispatch import DispatchResult
from erpsync.service.policy import SyncPolicy
from erpsync.service.ports import UnitOfWorkFactory
from erpsync.service.sync import SyncService, SyncSummary

SOURCE = "erp"
T0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
TOKEN = 7  # the fencing token of the leader the tests run as
MACHINES = ("M1", "M2", "M3")  # what MM knows


# -- the ERP source -------------------------------------------------------------------------------
@dataclass
class Snapshot:
    items: list[JobOperationRun | BadRecord]
    complete: bool = True
    stats: SourceStats = field(default_factory=SourceStats)
    suspect: str | None = None

    def __iter__(self) -> Iterator[JobOperationRun | BadRecord]:
        return iter(self.items)


class ListSource:
    """An ERP whose current runs are `runs` (a complete snapshot each read); `bad` rows come too."""

    name = SOURCE

    def __init__(self) -> None:
        self.runs: dict[str, JobOperationRun] = {}
        self.bad: list[BadRecord] = []
        self.suspect: str | None = None  # what the next reads cannot be trusted for (RunSnapshot.suspect)
        self.acknowledged = 0

    def put(self, run: JobOperationRun) -> JobOperationRun:
        self.runs[run.run_key] = run
        return run

    def read_runs(self) -> Snapshot:
        return Snapshot([*self.runs.values(), *self.bad], suspect=self.suspect)

    def lookup_runs(self, run_keys: Collection[str]) -> Iterator[JobOperationRun | BadRecord]:
        return iter([self.runs[key] for key in run_keys if key in self.runs])

    def read_operations(self) -> Iterator[JobOperation | BadRecord]:
        return iter([run.operation for run in self.runs.values()])

    def acknowledge(self, snapshot: Any) -> None:
        self.acknowledged += 1

    def close(self) -> None:
        pass


def erp_run(
    key: str, machine: str = "M1", state: RunState = RunState.SETUP, *, end_at: datetime | None = None
) -> JobOperationRun:
    """One ERP run (a clock-in) of job J<key>, operation 10, on `machine`."""
    operation = JobOperation(
        job_key=("W", f"J{key}", "1"), operation_seq="10", machine=machine, job_name=f"J{key}/1"
    )
    if state is RunState.ENDED and end_at is None:
        end_at = T0 + timedelta(hours=2)
    return JobOperationRun(run_key=key, operation=operation, state=state, start_at=T0, end_at=end_at)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def tables() -> MemoryTables:
    """Empty state; the lease is held at `TOKEN`."""
    return MemoryTables(lease_token=TOKEN)


@pytest.fixture
def uow_factory(tables: MemoryTables) -> UnitOfWorkFactory:
    return MemoryUnitOfWorkFactory(tables)


@pytest.fixture
def fence(tables: MemoryTables) -> MemoryFence:
    return MemoryFence(tables, TOKEN)


@pytest.fixture
def mm() -> FakeMachineMetrics:
    fake = FakeMachineMetrics()
    fake.set_machines(MACHINES)
    return fake


@pytest.fixture
def source() -> ListSource:
    return ListSource()


@pytest.fixture
def policy() -> SyncPolicy:
    return SyncPolicy(mapper=MachineMapper(), max_concurrency=2, max_action_attempts=2)


@pytest.fixture
def service(
    uow_factory: UnitOfWorkFactory,
    source: ListSource,
    mm: FakeMachineMetrics,
    fence: MemoryFence,
    policy: SyncPolicy,
) -> SyncService:
    return SyncService(uow_factory, source, mm, fence, policy)


# -- helpers the tests share ----------------------------------------------------------------------
def journal(service: SyncService) -> list[list[JournaledAction]]:
    """Plan and journal (sync.py steps 2-3), without dispatching: what a crash would leave."""
    return service.journal_plan(service.compute_plan(), SyncSummary())


def dispatch(service: SyncService) -> DispatchResult:
    """Plan, journal and dispatch once (a cycle without recovery and acknowledge)."""
    return service.dispatcher().run(journal(service))


def binding(uow_factory: UnitOfWorkFactory, run_key: str) -> BoundRun:
    with uow_factory() as uow:
        return uow.bindings.all_runs(SOURCE)[run_key]


def in_doubt(uow_factory: UnitOfWorkFactory) -> list[JournaledAction]:
    """Every action not settled for good (pending or retryable), whatever its claim or backoff."""
    with uow_factory() as uow:
        return uow.actions.due(utcnow() + timedelta(days=1))


def open_quarantine(uow_factory: UnitOfWorkFactory) -> int:
    with uow_factory() as uow:
        return uow.quarantine.open_count()
