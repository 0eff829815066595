"""What the database sinks share: their own writable engine and one error vocabulary.

The write-back connection is separate from the source's: the source connection may be (and should
be) read-only, and a write must never ride on a reader's session or transaction settings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Column, Connection, Engine, Select, Table, Update, bindparam, select
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchTableError,
    OperationalError,
    ProgrammingError,
)

from erpsync.adapters.state.db import create_db_engine, describe_db_error, label_engine
from erpsync.config import Settings
from erpsync.domain.errors import ConfigError, RecordError, RetryableError
from erpsync.observability.crashpoints import crash_point


def open_writeback_engine(settings: Settings) -> Engine:
    """An engine for `writeback.database`, else a new one on the source database's URL."""
    database = settings.writeback.database or settings.source
    if database is None:
        raise ConfigError(
            f"writeback.sink = {settings.writeback.sink!r} needs a database: "
            "set writeback.database.url (or configure [source] with a database URL)"
        )
    if database.sqlalchemy_url().get_backend_name() == "sqlite" and not database.sqlalchemy_url().database:
        raise ConfigError("writeback database: an in-memory SQLite URL cannot hold ERP rows")
    engine = create_db_engine(database.sqlalchemy_url(), database.connect_timeout_seconds, pool_size=2)
    # without its own [writeback.database] the write-back connects with the source's URL
    key = "writeback.database.url" if settings.writeback.database else "source.url (write-back)"
    return label_engine(engine, key)


# MySQL/MariaDB errors that drivers report as "operational" but that no retry can fix: access
# denied (db, user, table, column, privilege) and unknown column.
_MYSQL_SETUP_ERRORS = frozenset({1044, 1045, 1054, 1142, 1143, 1146, 1227})
# SQLite reports statement and permission errors as OperationalError too.
_SQLITE_SETUP_PREFIXES = ("no such table", "no such column", "near ", "attempt to write a readonly")


def locked_rows(key: Column[Any], values: Iterable[Column[Any]], keys: list[Any]) -> Select[Any]:
    """The rows' key and current `values`, row-locked in key order: one lock order for every
    writer, so two writers cannot deadlock."""
    return select(key, *values).where(key.in_(keys)).order_by(key).with_for_update()


def guarded_update(table: Table, guards: Mapping[str, str], values: Mapping[str, str]) -> Update:
    """Set one row's `values` (column -> bound parameter) only while every `guards` column still
    equals its parameter: the row as read, not edited since."""
    return (
        table.update()
        .where(*(table.c[column] == bindparam(param) for column, param in guards.items()))
        .values({column: bindparam(param) for column, param in values.items()})
    )


def update_guarded(
    conn: Connection, statement: Update, rows: list[dict[str, Any]], where: str, unit: str
) -> None:
    """Run a `guarded_update` for every row, in one executemany where the driver counts its rows;
    a row whose guard failed was edited while locked: ConcurrentEditError ("`where`: n `unit`")."""
    if conn.dialect.supports_sane_multi_rowcount:
        matched = conn.execute(statement, rows).rowcount
    else:
        matched = sum(conn.execute(statement, row).rowcount for row in rows)
    if matched != len(rows):
        raise ConcurrentEditError(f"{where}: {len(rows) - matched} {unit} changed while locked")


def _is_setup_problem(exc: OperationalError) -> bool:
    """An OperationalError caused by the statement or the ERP user's rights, not by an outage."""
    if exc.connection_invalidated:
        return False
    original = exc.orig
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _MYSQL_SETUP_ERRORS
    message = str(original).strip().lower()
    return message.startswith(_SQLITE_SETUP_PREFIXES) or "syntax error" in message


@contextmanager
def erp_transaction(engine: Engine, what: str) -> Iterator[Connection]:
    """One ERP transaction; DB errors come out as erpsync's categories (rolled back, nothing kept).

    The crash point `writeback.before_erp_commit` fires after the last statement, before COMMIT.
    """
    with erp_errors(what), engine.begin() as conn:
        yield conn
        crash_point("writeback.before_erp_commit")


class CheckedTarget:
    """What the table sinks share: their target is checked on the first write (a catalog read, a
    round trip) and again on every `check`, never once per batch."""

    _checked = False

    def _require_target(self) -> None:
        """Raise ConfigError when the target table is missing or not as the sink needs it."""
        raise NotImplementedError

    def _check_table(self) -> None:
        if not self._checked:
            self._require_target()
            self._checked = True

    def _check_now(self, what: str) -> None:
        """Check again (the table may have changed since), errors told as `what`'s."""
        self._checked = False
        with erp_errors(what):
            self._check_table()


@contextmanager
def erp_errors(what: str) -> Iterator[None]:
    """ERP database errors as erpsync's categories: set-up (ConfigError), outage, bad row."""
    try:
        yield
    except (NoSuchTableError, ProgrammingError) as exc:
        raise ConfigError(f"{what}: the ERP refused the statement: {describe_db_error(exc)}") from None
    except OperationalError as exc:
        if _is_setup_problem(exc):
            raise ConfigError(f"{what}: the ERP refused the statement: {describe_db_error(exc)}") from None
        raise RetryableError(f"{what}: ERP database unavailable: {describe_db_error(exc)}") from None
    except InterfaceError as exc:
        raise RetryableError(f"{what}: ERP database unavailable: {describe_db_error(exc)}") from None
    except (IntegrityError, DataError) as exc:
        raise RecordError(f"{what}: the ERP refused a row: {describe_db_error(exc)}") from None
    except DBAPIError as exc:
        raise RecordError(f"{what}: ERP error: {describe_db_error(exc)}") from None


class ConcurrentEditError(RecordError):
    """A guarded UPDATE matched fewer rows than were read: someone wrote in between.

    The batch is rolled back; written again one run at a time, each run is re-read and the edit
    is seen as a conflict, never overwritten.
    """
