"""What every command shares: loading config, errors as one line and an exit code, output helpers.

Start-up time matters here (`erpsync --help` and `status` should answer in well under a second), so
this module and the command modules import the heavy libraries (SQLAlchemy, pydantic-settings,
httpx, structlog, APScheduler) inside the commands that need them, not at import time.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, cast

import typer
from rich.console import Console

from erpsync.cli.exit_codes import ExitCode, for_error
from erpsync.observability.scrub import scrub

if TYPE_CHECKING:
    from erpsync.config import Settings
    from erpsync.runtime.deferred_logging import LogFormat

# the `--json` flag of the commands that print a record or a table
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

P = ParamSpec("P")
R = TypeVar("R")


class _Scrubbed:
    """The process's stdout or stderr (looked up at each write, as tests swap them), scrubbed."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _stream(self) -> Any:
        return getattr(sys, self._name)

    def write(self, text: str) -> int:
        self._stream().write(scrub(text))
        return len(text)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._stream(), attribute)


# Everything a command prints goes through the scrubber, whatever it prints.
stdout = Console(file=cast("IO[str]", _Scrubbed("stdout")), soft_wrap=True, highlight=False)
stderr = Console(file=cast("IO[str]", _Scrubbed("stderr")), soft_wrap=True, highlight=False)


@dataclass
class CliState:
    config_file: Path | None = None
    log_level: str | None = None
    # a command that usually logs nothing: the pipeline (structlog) is imported at the first record
    logging_on_first_use: bool = False
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """Load (once) and validate the configuration; logging is configured from it."""
        if self._settings is None:
            from erpsync.config import load_settings  # noqa: PLC0415 - start-up time

            settings = load_settings(self.config_file)  # registers every secret with the scrubber
            self.configure_logging(self.log_level or settings.logging.level, settings.logging.format)
            self._settings = settings
        return self._settings

    def configure_logging(self, level: str = "INFO", fmt: LogFormat = "auto") -> None:
        """erpsync's logging pipeline, now or (`logging_on_first_use`) when something logs."""
        if self.logging_on_first_use:
            from erpsync.runtime.deferred_logging import configure_logging_on_first_use  # noqa: PLC0415

            configure_logging_on_first_use(level, fmt)
        else:
            from erpsync.runtime.logging import configure_logging  # noqa: PLC0415 - start-up time

            configure_logging(level, fmt)


def state_of(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def fail(message: str, code: ExitCode = ExitCode.NOT_DONE) -> typer.Exit:
    stderr.print(f"error: {message}", markup=False)  # stderr scrubs what it prints
    return typer.Exit(code)


def exit_if_not_done(not_done: Sequence[str]) -> None:
    """Each thing the command could not do, on stderr; then exit 1 (cli/exit_codes.py) if any."""
    for what in not_done:
        stderr.print(f"error: {what}", markup=False)
    if not_done:
        raise typer.Exit(ExitCode.NOT_DONE)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn erpsync's errors into a one-line message and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            code = for_error(exc)
            if code is None:
                raise
            raise fail(_message(exc), code) from None

    return wrapper


def _message(exc: Exception) -> str:
    """The one line for an error `for_error` knows: erpsync's own message, or a database error's
    naming the configuration key of its database (SQLAlchemy is imported if it raised it)."""
    if "sqlalchemy.exc" not in sys.modules:
        return str(exc)
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError  # noqa: PLC0415

    from erpsync.adapters.state.db import describe_db_error  # noqa: PLC0415

    if isinstance(exc, NoSuchModuleError | ArgumentError):
        return f"{exc}; install the driver extra, e.g. pip install 'erpsync[postgres]'"
    if isinstance(exc, DBAPIError):
        return f"database error: {describe_db_error(exc)}"
    return str(exc)


def print_json(data: Any) -> None:
    sys.stdout.write(scrub(json.dumps(data, indent=2, default=str, sort_keys=False)) + "\n")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table for people on a terminal; tab-separated lines, never cut, when piped or redirected.

    A Rich table is laid out to the terminal's width; without a terminal that width is 80 columns
    and long values (run ids, error messages) would be cut. Piped output is for `grep`, `cut -f`,
    a log file or a ticket, so every value is printed whole: a header line, then one line per row,
    tabs between fields (tabs and line breaks inside a value become spaces).
    """
    if stdout.is_terminal:
        from rich.table import Table  # noqa: PLC0415 - start-up time
        from rich.text import Text  # noqa: PLC0415

        table = Table(*columns)
        for row in rows:
            table.add_row(*(Text(value) for value in row))  # values are data, never markup
        stdout.print(table)
        return
    lines = ["\t".join(columns), *("\t".join(_tsv_cell(value) for value in row) for row in rows)]
    sys.stdout.write(scrub("\n".join(lines)) + "\n")
    sys.stdout.flush()


def _tsv_cell(value: str) -> str:
    return " ".join(value.replace("\t", " ").splitlines())


def counted(n: int, noun: str) -> str:
    """`1 run`, `2 runs`: a count as people read it."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def plain(value: Any) -> str:
    """A mapping of counts as people read it (`running 3, stopped 1`), not a Python repr."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {plain(item)}" for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(plain(item) for item in value)
    return str(value)
