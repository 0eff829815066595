"""erpsync's logging pipeline, set up when first needed: for commands that usually log nothing.

The pipeline (erpsync/runtime/logging.py) needs structlog, a sizeable import for `erpsync status`
or `audit`, which should answer at once and normally log nothing. For them the levels are set at
once, exactly as the pipeline sets them, and a stand-in handler and exception hooks set the
pipeline up when a record arrives or an exception goes uncaught, then pass it on: what is printed
is what the pipeline set up front would print.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import Literal

NOISY_LOGGERS = ("httpx", "httpcore", "apscheduler", "sqlalchemy.engine", "alembic")
LogFormat = Literal["auto", "json", "console"]


def set_levels(level: str) -> logging.Logger:
    """The root logger at `level`, chatty libraries at WARNING or above; the root logger."""
    root = logging.getLogger()
    root.setLevel(level)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return root


def configure_logging_on_first_use(level: str = "INFO", fmt: LogFormat = "auto") -> None:
    """`configure_logging(level, fmt)` at the first log record or uncaught exception, not before."""
    root = set_levels(level)
    root.handlers[:] = [_PipelineOnFirstUse(level, fmt)]

    def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _configure(level, fmt)
        sys.excepthook(kind, exc, tb)

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        _configure(level, fmt)
        threading.excepthook(args)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


def _configure(level: str, fmt: LogFormat) -> None:
    from erpsync.runtime.logging import configure_logging  # noqa: PLC0415 - the point of this module

    configure_logging(level, fmt)


class _PipelineOnFirstUse(logging.Handler):
    """Sets the pipeline up (which replaces this handler) and hands it the first record."""

    def __init__(self, level: str, fmt: LogFormat) -> None:
        super().__init__()
        self._level, self._fmt = level, fmt

    def emit(self, record: logging.LogRecord) -> None:
        _configure(self._level, self._fmt)
        for handler in logging.getLogger().handlers:
            if handler is not self and record.levelno >= handler.level:
                handler.handle(record)
