"""Engines for erpsync's databases, tuned per backend so every one behaves the same.

erpsync talks to up to three databases (its state, the ERP source, the ERP write-back target). An
error must say which one, so each engine is labelled with its configuration key (`state.url`,
`source.url`, `writeback.database.url`) and every error raised through it carries that label.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url

if TYPE_CHECKING:
    from erpsync.config import StateSettings

SQLITE_BUSY_TIMEOUT_MS = 30_000
_KEY_ATTRIBUTE = "erpsync_database_key"


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


def label_engine(engine: Engine, key: str) -> Engine:
    """Mark every error raised through `engine` (connecting included) with the config key it uses."""

    def _label(context: ExceptionContext) -> None:
        setattr(context.sqlalchemy_exception, _KEY_ATTRIBUTE, key)

    event.listen(engine, "handle_error", _label)
    return engine


def state_engine(settings: StateSettings) -> Engine:
    """The engine of erpsync's own database (`state.url`), for the state store and read-only commands."""
    engine = create_db_engine(settings.sqlalchemy_url(), settings.connect_timeout_seconds)
    return label_engine(engine, "state.url")


def database_key(exc: BaseException) -> str | None:
    """The configuration key of the database an error came from (see `label_engine`), if known."""
    key = getattr(exc, _KEY_ATTRIBUTE, None)
    return key if isinstance(key, str) else None


def driver_message(exc: BaseException) -> str:
    """The driver's own message, readable, without the SQL or its parameters.

    Most drivers put it in the first line. PyMySQL and pymssql raise `(code, message)` tuples, and
    pymssql's message is bytes with line breaks (its str() is a bytes repr with literal `\\n`):
    those are decoded, their lines joined, repeats dropped, and the code put at the end.
    """
    original = getattr(exc, "orig", None) or exc
    args: tuple[Any, ...] = getattr(original, "args", ())
    if len(args) == 1 and isinstance(args[0], tuple):  # pymssql wraps (code, message) once more
        args = args[0]
    if len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], str | bytes):
        text = args[1].decode("utf-8", "replace") if isinstance(args[1], bytes) else args[1]
        lines = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
        return f"{' '.join(lines) or type(original).__name__} (error {args[0]})"
    first = str(original).strip().splitlines()
    return first[0] if first else type(original).__name__


def describe_db_error(exc: BaseException) -> str:
    """`<config key>: <driver message>`, e.g. `state.url: connection failed: ... Connection refused`."""
    key = database_key(exc)
    return f"{key}: {driver_message(exc)}" if key else driver_message(exc)


# "table not found" as each backend says it: PostgreSQL's SQLSTATE, MySQL/MariaDB's and SQL
# Server's error numbers, SQLite's message
_MISSING_TABLE_SQLSTATE = "42P01"
_MISSING_TABLE_CODES = frozenset({1146, 208})


def is_missing_table(exc: BaseException) -> bool:
    """True when the database said a table (or view) the statement names does not exist."""
    original = getattr(exc, "orig", None) or exc
    if getattr(original, "sqlstate", None) == _MISSING_TABLE_SQLSTATE:
        return True
    args: tuple[Any, ...] = getattr(original, "args", ())
    if len(args) == 1 and isinstance(args[0], tuple):
        args = args[0]
    if args and isinstance(args[0], int):
        return args[0] in _MISSING_TABLE_CODES
    return str(original).lower().startswith("no such table")


# "this login or database name is wrong" as each backend says it: SQLSTATE class 28 (invalid
# authorization) and 3D000 (no such database), MySQL/MariaDB's and SQL Server's error numbers,
# and libpq's connection messages (psycopg has no SQLSTATE before a connection exists)
_LOGIN_SQLSTATES = frozenset({"28000", "28P01", "3D000"})
_LOGIN_CODES = frozenset({1044, 1045, 1049, 1698, 18456, 4060})
_LOGIN_MESSAGE = re.compile(
    r'fatal:\s+(password authentication failed|role "[^"]*" does not exist'
    r'|database "[^"]*" does not exist|no pg_hba\.conf entry)'
)


def is_login_refused(exc: BaseException) -> bool:
    """True when the database refused the configured login (user, password, database name):
    a configuration error, unlike an outage that a later attempt may get past."""
    original = getattr(exc, "orig", None) or exc
    if getattr(original, "sqlstate", None) in _LOGIN_SQLSTATES:
        return True
    args: tuple[Any, ...] = getattr(original, "args", ())
    if len(args) == 1 and isinstance(args[0], tuple):
        args = args[0]
    if args and isinstance(args[0], int):
        return args[0] in _LOGIN_CODES
    return _LOGIN_MESSAGE.search(str(original).lower()) is not None
