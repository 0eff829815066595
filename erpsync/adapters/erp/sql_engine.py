"""Read-only engines on an ERP database, and streaming reads that keep memory flat.

erpsync never writes through a source connection. Besides issuing only SELECTs, every connection
is put in read-only mode where the backend has one, so a bug cannot write either:
- PostgreSQL: every transaction is `READ ONLY` (SQLAlchemy's `postgresql_readonly`).
- MySQL / MariaDB: `SET SESSION TRANSACTION READ ONLY` on connect.
- SQLite: `PRAGMA query_only = ON` on connect. The engine is built here rather than with
  `create_db_engine`, whose WAL pragma would rewrite the ERP file's journal mode.
- SQL Server has no read-only transaction: connect with a login that only has `db_datareader`.
Give the source a database role with SELECT grants only as well (tests do exactly that).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Engine, Executable, Row, create_engine, event
from sqlalchemy.engine import URL

from erpsync.adapters.state.db import SQLITE_BUSY_TIMEOUT_MS, create_db_engine, label_engine
from erpsync.config import SourceSettings


def create_source_engine(settings: SourceSettings) -> Engine:
    """An engine on the ERP database whose connections cannot write (see module docstring)."""
    url = settings.sqlalchemy_url()
    backend = url.get_backend_name()
    if backend == "sqlite":
        return label_engine(_sqlite_engine(url), "source.url")
    options: dict[str, Any] = {}
    if backend == "postgresql":
        options["execution_options"] = {"postgresql_readonly": True}
    engine = create_db_engine(url, settings.connect_timeout_seconds, **options)
    if backend in ("mysql", "mariadb"):
        event.listen(engine, "connect", _mysql_read_only)
    return label_engine(engine, "source.url")


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    event.listen(engine, "connect", _sqlite_query_only)
    return engine


def _sqlite_query_only(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _mysql_read_only(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION TRANSACTION READ ONLY")
    cursor.close()


def stream_rows(
    engine: Engine,
    statement: Executable,
    params: Mapping[str, Any] | None = None,
    *,
    batch_size: int,
    schema_map: Mapping[str | None, str | None] | None = None,
) -> Iterator[Row[Any]]:
    """Rows of one SELECT, fetched `batch_size` at a time through a server-side cursor.

    The connection lives as long as the iteration; closing the generator releases it.
    """
    options: dict[str, Any] = {"stream_results": True, "yield_per": batch_size}
    if schema_map:
        options["schema_translate_map"] = dict(schema_map)
    with engine.connect() as conn:
        result = conn.execution_options(**options).execute(statement, dict(params or {}))
        try:
            yield from result
        finally:
            result.close()
