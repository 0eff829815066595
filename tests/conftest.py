"""Shared fixtures: a fresh, throw-away database per test on SQLite, PostgreSQL and MariaDB.

The servers are the real ones on this machine (127.0.0.1:5432 trust auth, 127.0.0.1:3306 root).
A server that is not reachable FAILS the test: database-backed tests never skip.
Override the admin URLs with ERPSYNC_TEST_PG_URL / ERPSYNC_TEST_MARIADB_URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from erpsync.adapters.state import migrate
from erpsync.adapters.state.db import create_db_engine
from erpsync.adapters.state.store import StateStore

pytest_plugins = ["tests.fixtures_mm"]

PG_ADMIN_URL = os.environ.get("ERPSYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN_URL = os.environ.get("ERPSYNC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgresql", "mariadb")


def _admin_engine(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def create_database(backend: str, tmp_path: Path) -> tuple[str, object]:
    """Create an empty database; returns its URL and a token for `drop_database`."""
    name = f"erpsync_t_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / (name + '.db')}", None
    admin_url = PG_ADMIN_URL if backend == "postgresql" else MARIADB_ADMIN_URL
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:
        admin.dispose()
        pytest.fail(
            f"{backend} at {make_url(admin_url).render_as_string(hide_password=True)} is not usable "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); start it (see .ci/run)",
            pytrace=False,
        )
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return url, (admin, name)


def drop_database(backend: str, token: object) -> None:
    if token is None:
        return
    admin, name = token  # type: ignore[misc]
    with admin.connect() as conn:
        if backend == "postgresql":
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        else:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh empty database on each backend in turn."""
    url, token = create_database(backend, tmp_path)
    yield url
    drop_database(backend, token)


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    url, token = create_database("postgresql", tmp_path)
    yield url
    drop_database("postgresql", token)


@pytest.fixture
def mariadb_url(tmp_path: Path) -> Iterator[str]:
    url, token = create_database("mariadb", tmp_path)
    yield url
    drop_database("mariadb", token)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def state_store(database_url: str) -> Iterator[StateStore]:
    """A migrated state store on each backend in turn."""
    engine = create_db_engine(database_url)
    migrate.upgrade(engine)
    store = StateStore(engine)
    yield store
    store.dispose()


@pytest.fixture
def sqlite_state_store(sqlite_url: str) -> Iterator[StateStore]:
    """A migrated SQLite state store, for tests that need state but not every backend."""
    engine = create_db_engine(sqlite_url)
    migrate.upgrade(engine)
    store = StateStore(engine)
    yield store
    store.dispose()
