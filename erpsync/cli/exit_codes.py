"""erpsync's exit codes: one table for every command (README, "Exit codes").

A script or a scheduler decides from the code alone whether to alert, so each command exits with
the code of what actually happened, never 0 when something was left undone:

- 0 OK: everything the command set out to do is done (bad rows quarantined and reported count
  as done: they wait for a person, see `erpsync quarantine list`);
- 1 NOT_DONE: something could not be done (MM unreachable, actions left retrying, unsent or given
  up, MM runs a resync could not read, write-back reads that failed or counts quarantined as
  implausible, the ERP or the state database unreadable);
- 2 CONFIG: the configuration or the credentials are wrong (a bad config file or value, a missing
  key, MM refusing the API key with 401/403, a bad database URL or a refused database login).

`for_error` maps erpsync's error categories (erpsync/domain/errors.py) and database errors to a
code; the commands decide NOT_DONE from their result (cli/common.py `exit_if_not_done`).
"""

from __future__ import annotations

import sys
from enum import IntEnum

from erpsync.domain.errors import ConfigError, ErpsyncError


class ExitCode(IntEnum):
    OK = 0
    NOT_DONE = 1
    CONFIG = 2


def for_error(exc: BaseException) -> ExitCode | None:
    """The exit code of a command that ends on `exc`; None for an error erpsync does not know
    (a bug: it is left to show its traceback)."""
    if isinstance(exc, ConfigError):  # MMConfigError (401/403) too
        return ExitCode.CONFIG
    if isinstance(exc, ErpsyncError):  # RetryableError, RecordError, FencedError
        return ExitCode.NOT_DONE
    if "sqlalchemy.exc" not in sys.modules:  # never imported: it cannot be one of its errors
        return None
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError  # noqa: PLC0415

    from erpsync.adapters.state.db import is_login_refused  # noqa: PLC0415 - start-up time

    if isinstance(exc, NoSuchModuleError | ArgumentError):  # a bad URL, a driver not installed
        return ExitCode.CONFIG
    if isinstance(exc, DBAPIError):
        return ExitCode.CONFIG if is_login_refused(exc) else ExitCode.NOT_DONE
    return None
