"""Read-only engines on an ERP database, and streaming reads that keep memory flat.

erpsync never writes through a source connection. Besides issuing only SELECTs, every connection
is put in read-only mode where the backend has one, so a bug - or a hostile `generic-sql` query -
cannot write either, and no statement can be stacked behind the SELECT to end that mode:
- PostgreSQL: every transaction is `READ ONLY` (SQLAlchemy's `postgresql_readonly`) and so is the
  session's default (`default_transaction_read_only`); every statement is prepared
  (`prepare_threshold=0`, the extended protocol), which refuses a second statement.
- MySQL / MariaDB: `SET SESSION TRANSACTION READ ONLY` on connect; the client never enables
  `CLIENT.MULTI_STATEMENTS` (even if the URL asks for it), so the server refuses a second statement.
- SQLite: `PRAGMA query_only = ON` on connect; the sqlite3 module executes one statement per call.
  The engine is built here rather than with `create_db_engine`, whose WAL pragma would rewrite the
  ERP file's journal mode.
- SQL Server has no read-only transaction: connect with a login that only has `db_datareader`.
Give the source a database role with SELECT grants only as well (tests do exactly that).

PostgreSQL plans a streamed read (a server-side cursor) for its first 10% of rows by default
(`cursor_tuple_fraction`), e.g. a walk of the whole primary key in ORDER BY order where a plain
SELECT would filter first; erpsync fetches every row it asks for, so its sessions set it to 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Engine, Executable, Row, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from erpsync.adapters.state.db import SQLITE_BUSY_TIMEOUT_MS, create_db_engine, label_engine
from erpsync.config import SourceSettings

MYSQL_CLIENT_MULTI_STATEMENTS = 1 << 16  # pymysql.constants.CLIENT.MULTI_STATEMENTS (the protocol's bit)


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
    if backend == "postgresql":
        event.listen(engine, "do_connect", _postgresql_one_statement_read_only)
    if backend in ("mysql", "mariadb"):
        event.listen(engine, "do_connect", _mysql_one_statement)
        event.listen(engine, "connect", _mysql_read_only)
    if backend == "postgresql":
        event.listen(engine, "connect", _postgresql_whole_result_plans)
    return label_engine(engine, "source.url")


def _postgresql_one_statement_read_only(_: Any, __: Any, ___: Any, cparams: dict[str, Any]) -> None:
    # set last, over whatever the URL's query string asked for
    cparams["prepare_threshold"] = 0
    options = str(cparams.get("options") or "")
    cparams["options"] = f"{options} -c default_transaction_read_only=on".strip()


def _mysql_one_statement(_: Any, __: Any, ___: Any, cparams: dict[str, Any]) -> None:
    cparams["client_flag"] = int(cparams.get("client_flag") or 0) & ~MYSQL_CLIENT_MULTI_STATEMENTS


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


def _postgresql_whole_result_plans(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION cursor_tuple_fraction = 1")
    cursor.close()
    dbapi_connection.commit()  # a SET inside a transaction that is rolled back does not stick


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


def is_statement_refusal(exc: DBAPIError) -> bool:
    """True when the database refused the statement itself (a write in the read-only session, a
    second statement, bad SQL), as opposed to the connection failing."""
    original = getattr(exc, "orig", None)
    sqlstate = getattr(original, "sqlstate", None)
    if isinstance(sqlstate, str):  # PostgreSQL: read-only transaction, syntax / access rule classes
        return sqlstate == "25006" or sqlstate.startswith(("42", "0A"))
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int):  # MySQL / MariaDB error numbers
        return args[0] in _MYSQL_STATEMENT_ERRORS
    name = getattr(original, "sqlite_errorname", None)
    if name is not None or type(original).__module__ == "sqlite3":
        return name in (None, "SQLITE_ERROR", "SQLITE_READONLY", "SQLITE_AUTH")
    return False


# parse error, read-only transaction, unknown table/column/function, command denied, INTO not allowed
_MYSQL_STATEMENT_ERRORS = frozenset({1064, 1792, 1146, 1054, 1305, 1142, 1143, 1370, 1327, 1222, 1248})
