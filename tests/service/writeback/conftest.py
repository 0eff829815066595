"""The write-back service on its fakes: the in-memory unit of work, an in-memory sink and
`FakeMachineMetrics` (the simulator's model; each run on a machine of its own, so no start ends
another)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from erpsync.adapters.mm.fake import FakeMachineMetrics
from erpsync.adapters.state.memory import MemoryUnitOfWorkFactory
from erpsync.adapters.state.memory_tables import MemoryTables, new_row
from erpsync.adapters.state.tables import RunBinding
from tests.service.fakes import MemorySink, hold

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def bind(tables: MemoryTables, mm_run_id: str, status: str = "running", **columns: Any) -> None:
    """A binding row as the sync loop leaves it (column names of erpsync_run_binding)."""
    tables.bindings[mm_run_id] = new_row(
        RunBinding,
        {
            "id": tables.next_id(),
            "source": "erp",
            "run_key": f"key-{mm_run_id}",
            "mm_run_id": mm_run_id,
            "erp_job": f"J-{mm_run_id}",
            "erp_operation": "10",
            "erp_machine": "MILL-1",
            "status": status,
            "updated_at": NOW,
            "mm_end_at": None,
            "erp_end_at": None,
            "last_total_parts": None,
            "last_good_parts": None,
            "last_scrap_parts": None,
            "last_nonconform_parts": None,
            "counts_written_at": None,
            "counts_in_doubt": None,
            **columns,
        },
    )


@pytest.fixture
def tables() -> MemoryTables:
    return MemoryTables()


@pytest.fixture
def uow(tables: MemoryTables) -> MemoryUnitOfWorkFactory:
    return MemoryUnitOfWorkFactory(tables)


def counts(mm: FakeMachineMetrics, run_id: str, total: int, scrap: int = 0) -> None:
    """MM's counts of the run, exactly (the model starts the run first when it has none)."""
    if run_id not in mm.runs():
        hold(mm, run_id, start_at=NOW.replace(hour=6), machine=f"machine-of-{run_id}")
    mm.set_counts(run_id, total=total, scrap=scrap)


@pytest.fixture
def mm() -> FakeMachineMetrics:
    return FakeMachineMetrics()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()
