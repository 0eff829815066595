"""The `state` fixture: every state unit of work under test (tests/contract/test_state_*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.memory import MemoryUnitOfWorkFactory
from erpsync.adapters.state.memory_tables import MemoryTables
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.uow import SqlUnitOfWorkFactory
from tests.conftest import create_database, drop_database
from tests.contract.state_backends import Backend


@pytest.fixture(params=["memory", "sqlite", "postgresql", "mariadb"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = str(request.param)
    if name == "memory":
        tables = MemoryTables()
        yield Backend(name, MemoryUnitOfWorkFactory(tables), tables=tables)
        return
    url, token = create_database(name, tmp_path)
    engine = create_db_engine(url)
    migrate.upgrade(engine)
    store = StateStore(engine)
    try:
        yield Backend(name, SqlUnitOfWorkFactory(store), store=store)
    finally:
        store.dispose()
        drop_database(name, token)
