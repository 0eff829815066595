"""Fixtures of the fast service tests: the sync flow on in-memory stand-ins of its ports.

`uow_factory` and `mm` are what the tests see of state and MachineMetrics: a `UnitOfWorkFactory`
and a `MachineMetrics`. For now they are the SQL unit of work on an in-memory SQLite database
(migrated once per session, copied per test) and `StubMM` below; the in-memory unit of work
(adapters/state/memory.py) and adapters/mm/fake.py replace them without changing a test.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict, deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from erpsync.adapters.mm.errors import MMConflictError, MMError, MMNotFoundError, MMRecordError
from erpsync.adapters.mm.schemas import ImportType, JobRun, StartJobRun, StopJobRun
from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
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


# -- MachineMetrics ------------------------------------------------------------------------------
class StubMM:
    """MachineMetrics' job-run API in memory: the runs it holds, the calls it got, scripted errors.

    Like MM: a start on an unknown machine is refused (422 MachineNotFound), an identical start of
    a run it holds is a no-op and a different one a 409, a stop of a run it lacks is a 404.
    """

    def __init__(self, machines: Collection[str] = ("M1", "M2", "M3")) -> None:
        self.machines = set(machines)
        self.runs: dict[str, JobRun] = {}
        self.starts: dict[str, StartJobRun] = {}
        self.calls: list[tuple[str, str]] = []  # (operation, run id)
        self.imports: list[bytes] = []
        self._errors: dict[tuple[str, str], deque[MMError]] = defaultdict(deque)
        self._lock = threading.Lock()

    def fail(self, operation: str, run_id: str, *errors: MMError) -> None:
        """The next calls of `operation` ("start", "stop", "get") on `run_id` raise these, in turn."""
        self._errors[(operation, run_id)].extend(errors)

    def hold(self, run_id: str, *, start_at: datetime = T0, end_at: datetime | None = None) -> None:
        """MM holds this run already (started, maybe ended), as if an earlier call had reached it."""
        self.runs[run_id] = JobRun(start_at=start_at, end_at=end_at)

    def sent(self, operation: str) -> list[str]:
        return [run_id for op, run_id in self.calls if op == operation]

    def _enter(self, operation: str, run_id: str) -> None:
        with self._lock:
            self.calls.append((operation, run_id))
            errors = self._errors.get((operation, run_id))
            if errors:
                raise errors.popleft()

    def start_job_run(self, request: StartJobRun) -> None:
        run_id = request.erp_job_operation_run_id
        self._enter("start", run_id)
        if request.erp_machine_id not in self.machines:
            raise MMRecordError(
                f"unknown erpMachineId {request.erp_machine_id!r}",
                operation="start",
                http_status=422,
                code="MachineNotFound",
                run_id=run_id,
            )
        held = self.starts.get(run_id)
        if held is not None and held.model_copy(update={"start_in_setup": request.start_in_setup}) != request:
            raise MMConflictError("run id already used", operation="start", http_status=409, run_id=run_id)
        self.starts[run_id] = request
        if run_id not in self.runs:
            self.runs[run_id] = JobRun(start_at=request.start_at or T0)

    def stop_job_run(self, request: StopJobRun) -> None:
        run_id = request.erp_job_operation_run_id
        self._enter("stop", run_id)
        run = self.runs.get(run_id)
        if run is None:
            raise MMNotFoundError("no such run", operation="stop", http_status=404, run_id=run_id)
        self.runs[run_id] = run.model_copy(update={"end_at": request.end_at or T0 + timedelta(hours=9)})

    def get_job_run(self, run_id: str) -> JobRun | None:
        self._enter("get", run_id)
        return self.runs.get(run_id)

    def import_jobs(
        self,
        csv_content: bytes,
        *,
        import_type: ImportType = "mm",
        auto_archive: bool = False,
        filename: str = "jobs.csv",
    ) -> None:
        self._enter("import", filename)
        self.imports.append(csv_content)


# -- the ERP source and the fence -----------------------------------------------------------------
@dataclass
class Snapshot:
    items: list[JobOperationRun | BadRecord]
    complete: bool = True
    stats: SourceStats = field(default_factory=SourceStats)

    def __iter__(self) -> Iterator[JobOperationRun | BadRecord]:
        return iter(self.items)


class ListSource:
    """An ERP whose current runs are `runs` (a complete snapshot each read); `bad` rows come too."""

    name = SOURCE

    def __init__(self) -> None:
        self.runs: dict[str, JobOperationRun] = {}
        self.bad: list[BadRecord] = []
        self.acknowledged = 0

    def put(self, run: JobOperationRun) -> JobOperationRun:
        self.runs[run.run_key] = run
        return run

    def read_runs(self) -> Snapshot:
        return Snapshot([*self.runs.values(), *self.bad])

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


class StubFence:
    token = 7

    def is_current(self) -> bool:
        return True

    def check(self, transaction: Any) -> None:
        pass


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def _migrated_template() -> Iterator[Engine]:
    engine = create_db_engine("sqlite://", poolclass=StaticPool)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def uow_factory(_migrated_template: Engine) -> Iterator[UnitOfWorkFactory]:
    """A fresh, empty state: a copy of the migrated in-memory database."""
    engine = create_db_engine("sqlite://", poolclass=StaticPool)
    template = _migrated_template.raw_connection().driver_connection
    copy = engine.raw_connection().driver_connection
    assert isinstance(template, sqlite3.Connection) and isinstance(copy, sqlite3.Connection)
    template.backup(copy)
    store = StateStore(engine)
    yield SqlUnitOfWorkFactory(store)
    store.dispose()


@pytest.fixture
def mm() -> StubMM:
    return StubMM()


@pytest.fixture
def fence() -> StubFence:
    return StubFence()


@pytest.fixture
def source() -> ListSource:
    return ListSource()


@pytest.fixture
def policy() -> SyncPolicy:
    return SyncPolicy(mapper=MachineMapper(), max_concurrency=2, max_action_attempts=2)


@pytest.fixture
def service(
    uow_factory: UnitOfWorkFactory, source: ListSource, mm: StubMM, fence: StubFence, policy: SyncPolicy
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
