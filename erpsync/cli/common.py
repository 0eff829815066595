"""What every command shares: loading config, error → exit code mapping, output helpers."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar, cast

import typer
from rich.console import Console
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from erpsync.config import Settings, load_settings
from erpsync.domain.errors import ConfigError, ErpsyncError
from erpsync.observability.scrub import scrub
from erpsync.runtime.logging import configure_logging

EXIT_ERROR = 1
EXIT_CONFIG = 2

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
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """Load (once) and validate the configuration; logging is configured from it."""
        if self._settings is None:
            settings = load_settings(self.config_file)  # registers every secret with the scrubber
            configure_logging(self.log_level or settings.logging.level, settings.logging.format)
            self._settings = settings
        return self._settings


def state_of(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    stderr.print(f"error: {message}", markup=False)
    return typer.Exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn erpsync's errors into a one-line message and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise fail(str(exc), EXIT_CONFIG) from None
        except ErpsyncError as exc:
            raise fail(str(exc), EXIT_ERROR) from None
        except (NoSuchModuleError, ArgumentError) as exc:
            raise fail(
                f"{exc}; install the driver extra, e.g. pip install 'erpsync[postgres]'", EXIT_CONFIG
            ) from None
        except (OperationalError, DBAPIError) as exc:
            raise fail(f"database error: {describe_db_error(exc)}", EXIT_ERROR) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(scrub(json.dumps(data, indent=2, default=str, sort_keys=False)) + "\n")


def describe_db_error(exc: DBAPIError) -> str:
    """The driver's own first line (e.g. 'connection refused'), without SQL or parameters."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__
