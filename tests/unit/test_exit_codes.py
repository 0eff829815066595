"""The one exit-code table (erpsync/cli/exit_codes.py): erpsync's error categories and database
errors as each driver raises them, mapped to 0/1/2. The commands themselves are run in
tests/integration/test_cli_exit_codes.py."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from erpsync.adapters.mm.errors import MMCircuitOpenError, MMConfigError, MMNotFoundError, MMRetryableError
from erpsync.cli.exit_codes import ExitCode, for_error
from erpsync.domain.errors import ConfigError, FencedError, RecordError, RetryableError


class DriverError(Exception):
    """A DB-API error as a driver raises it: its args, and psycopg's `sqlstate`."""

    def __init__(self, *args: object, sqlstate: str | None = None) -> None:
        super().__init__(*args)
        self.sqlstate = sqlstate


def db_error(*args: object, sqlstate: str | None = None) -> OperationalError:
    return OperationalError("SELECT 1", {}, DriverError(*args, sqlstate=sqlstate))


def test_the_codes() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("mm.api_key: required"), ExitCode.CONFIG),
        (MMConfigError("HTTP 401", operation="get", http_status=401), ExitCode.CONFIG),
        (RetryableError("timeout"), ExitCode.NOT_DONE),
        (MMRetryableError("refused", operation="start"), ExitCode.NOT_DONE),
        (MMCircuitOpenError("paused", operation="start"), ExitCode.NOT_DONE),
        (RecordError("no quarantine entry 9"), ExitCode.NOT_DONE),
        (MMNotFoundError("404", operation="get", http_status=404), ExitCode.NOT_DONE),
        (FencedError("another leader"), ExitCode.NOT_DONE),
        (ValueError("a bug"), None),  # not erpsync's: its traceback is shown
    ],
)
def test_error_categories(error: BaseException, code: ExitCode | None) -> None:
    assert for_error(error) == code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ArgumentError("Could not parse SQLAlchemy URL"), ExitCode.CONFIG),
        (NoSuchModuleError("Can't load plugin: sqlalchemy.dialects:nosuch"), ExitCode.CONFIG),
        # MySQL/MariaDB (PyMySQL): access denied, unknown database; refused, gone away
        (db_error(1045, "Access denied for user 'root'@'127.0.0.1' (using password: YES)"), ExitCode.CONFIG),
        (db_error(1049, "Unknown database 'vmfg'"), ExitCode.CONFIG),
        (db_error(2003, "Can't connect to MySQL server on '127.0.0.1' (Connection refused)"), 1),
        (db_error(2013, "Lost connection to MySQL server during query"), ExitCode.NOT_DONE),
        # PostgreSQL (psycopg): before a connection there is no SQLSTATE, only libpq's message
        (db_error('connection failed: ... FATAL:  password authentication failed for user "erp"'), 2),
        (db_error('connection failed: ... FATAL:  role "erp" does not exist'), ExitCode.CONFIG),
        (db_error('connection failed: ... FATAL:  database "vmfg" does not exist'), ExitCode.CONFIG),
        (db_error("connection failed: ... FATAL:  no pg_hba.conf entry for host"), ExitCode.CONFIG),
        (db_error("invalid password", sqlstate="28P01"), ExitCode.CONFIG),
        (db_error("connection failed: ... port 5432 failed: Connection refused"), ExitCode.NOT_DONE),
        (db_error("terminating connection due to administrator command", sqlstate="57P01"), 1),
        # SQL Server (pymssql): login failed; SQLite: a file that cannot be opened
        (db_error(18456, b"Login failed for user 'erp'."), ExitCode.CONFIG),
        (db_error("unable to open database file"), ExitCode.NOT_DONE),
    ],
)
def test_database_errors(error: BaseException, code: int) -> None:
    assert for_error(error) == code
