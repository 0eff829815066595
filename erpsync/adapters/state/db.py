"""Engines for erpsync's databases, tuned per backend so every one behaves the same."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000


def create_db_engine(url: URL | str, connect_timeout_seconds: float = 10, **kwargs: Any) -> Engine:
    """Create an engine: WAL + busy timeout on SQLite, pre-ping and timeouts on servers."""
    engine_url = make_url(url) if isinstance(url, str) else url
    backend = engine_url.get_backend_name()
    options: dict[str, Any] = {"future": True}
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_MS / 1000
        connect_args["check_same_thread"] = False
    else:
        options["pool_pre_ping"] = True
        options["pool_recycle"] = 1800
        timeout = max(1, int(connect_timeout_seconds))
        if backend == "postgresql":
            connect_args["connect_timeout"] = timeout
            if engine_url.get_driver_name() == "psycopg":
                # no server-side prepared statements: erpsync's statements vary (IN lists of every
                # length), so psycopg's per-connection caches of them (100 statements each, on both
                # sides) only filled up and kept a long-running service growing
                connect_args["prepare_threshold"] = None
        elif backend in ("mysql", "mariadb"):
            connect_args["connect_timeout"] = timeout
            connect_args.setdefault("charset", "utf8mb4")
        elif backend == "mssql":
            connect_args["login_timeout"] = timeout
    options.update(kwargs)
    options["connect_args"] = {**connect_args, **options.get("connect_args", {})}
    engine = create_engine(engine_url, **options)
    if backend == "sqlite" and engine_url.database not in (None, "", ":memory:"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def side_engine(engine: Engine, timeout_seconds: float) -> Engine:
    """A small engine of its own on `engine`'s database, for work that must never queue.

    The leader lease is renewed through it: a renewal must not wait for a connection behind a busy
    shared pool, nor hang on a lock; each wait is bounded by `timeout_seconds` (connection checkout,
    lock waits), so a slow answer becomes an error the lease loop retries while its term is safe.
    SQLite serialises writers whatever the engine (its busy timeout applies); an in-memory SQLite
    database exists once per engine, so that one is shared, not copied.
    """
    url = engine.url
    backend = url.get_backend_name()
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        return engine
    wait = max(0.1, timeout_seconds)
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        ms = round(wait * 1000)
        connect_args["options"] = f"-c lock_timeout={ms} -c statement_timeout={ms}"
    elif backend in ("mysql", "mariadb"):
        connect_args["init_command"] = f"SET SESSION innodb_lock_wait_timeout = {math.ceil(wait)}"
    return create_db_engine(
        url,
        connect_timeout_seconds=max(1.0, wait),
        pool_size=1,
        max_overflow=1,
        pool_timeout=wait,
        connect_args=connect_args,
    )


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
