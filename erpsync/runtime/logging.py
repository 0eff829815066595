"""structlog set-up: JSON in production, readable on a terminal, secrets scrubbed everywhere.

Every cycle and CLI call binds a correlation id (erpsync/observability/correlation.py); it is in
every log line of that unit of work and in every audit row it writes.

Exceptions are rendered by erpsync, never by a library's pretty printer: no traceback shows local
variables (a database driver's locals hold its connection password). At INFO and above an exception
is one line, ``ErrorClass: message`` (with its causes); at DEBUG the erpsync frames are listed too.
Every rendered line, in both formats, passes through the scrubber last (erpsync/observability/scrub.py).
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import structlog

from erpsync.observability.scrub import scrub, scrub_value
from erpsync.runtime.deferred_logging import set_levels

__all__ = ["configure_logging", "describe_exception", "error_message"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def describe_exception(exc: BaseException, *, frames: bool = False) -> str:
    """``ErrorClass: message``, then each cause; with `frames`, erpsync's own frames first.

    Never local variables, never a library's frames: short, and free of connection parameters.
    """
    lines: list[str] = []
    if frames:
        stack = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(_PACKAGE_DIR)]
        if stack:
            lines.append("Traceback (erpsync frames, most recent call last):")
            lines += [f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in stack]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        prefix = "" if current is exc else "caused by "
        message = str(current).strip()
        lines.append(
            f"{prefix}{type(current).__name__}: {message}" if message else f"{prefix}{type(current).__name__}"
        )
        current = current.__cause__ or current.__context__
    return scrub("\n".join(lines))


def error_message(exc: BaseException) -> str:
    """An exception's message for a log field: scrubbed, without SQLAlchemy's "Background" link."""
    lines = [
        line for line in str(exc).strip().splitlines() if not line.startswith("(Background on this error")
    ]
    return scrub("\n".join(lines)) or type(exc).__name__


def _exc_info_of(value: Any) -> ExcInfo | None:
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value
    if value is True:
        kind, exc, tb = sys.exc_info()
        return (kind, exc, tb) if kind is not None and exc is not None else None
    return None


def _exception_renderer(
    frames: bool,
) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    """Replace `exc_info` by a short, scrubbed `exception` text (see the module docstring)."""

    def render(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        info = _exc_info_of(event_dict.pop("exc_info", None))
        if info is not None:
            event_dict["exception"] = describe_exception(info[1], frames=frames)
        elif isinstance(event_dict.get("exception"), str):
            event_dict["exception"] = scrub(event_dict["exception"])
        return event_dict

    return render


def _scrub_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key != "exc_info":
            event_dict[key] = scrub_value(key, event_dict[key])
    return event_dict


def _scrubbed(renderer: Callable[..., Any]) -> Callable[..., str]:
    """The renderer's output, scrubbed once more as a whole: the last line of defence."""

    def render(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        return scrub(str(renderer(logger, name, event_dict)))

    return render


class _SchedulerDuplicateFilter(logging.Filter):
    """Drop APScheduler's own "Job raised an exception" record: erpsync logs the failure once itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    structlog.get_logger("erpsync").error("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        structlog.get_logger("erpsync").error(
            "uncaught exception in a thread",
            thread=args.thread.name if args.thread else None,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )


def configure_logging(
    level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto", stream: Any = None
) -> None:
    """Route structlog and stdlib logging (SQLAlchemy, httpx, APScheduler) through one pipeline."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub_event,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # level check first: a filtered-out event (e.g. the MM client's per-call debug line) is
        # dropped before the context is merged, stamped and scrubbed, not after
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _exception_renderer(frames=logging.getLevelName(level) == logging.DEBUG),
            _scrubbed(renderer),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = set_levels(level)
    root.handlers[:] = [handler]
    executors = logging.getLogger("apscheduler.executors.default")
    if not any(isinstance(f, _SchedulerDuplicateFilter) for f in executors.filters):
        executors.addFilter(_SchedulerDuplicateFilter())
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
