"""structlog set-up: JSON in production, readable on a terminal, secrets scrubbed everywhere.

Every cycle and CLI call binds a correlation id; it is in every log line of that unit of work and
in every audit row it writes, so a log line and an audit row can be joined.
"""

from __future__ import annotations

import logging
import sys
import threading
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal

import structlog

SECRET_KEY_WORDS = ("api_key", "apikey", "password", "authorization", "secret", "token")
MASK = "**********"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked wherever it would appear in a log line."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    """Mask every registered secret inside `text`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _scrub_value(key: str, value: Any) -> Any:
    if any(word in key.lower() for word in SECRET_KEY_WORDS) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return scrub(value)
    return value


def _scrub_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = _scrub_value(key, event_dict[key])
    return event_dict


def _scrub_rendered(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # exc_info is rendered to text by format_exc_info; mask secrets inside tracebacks too
    if isinstance(event_dict.get("exception"), str):
        event_dict["exception"] = scrub(event_dict["exception"])
    return event_dict


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
    final: list[Any] = [structlog.processors.format_exc_info, _scrub_rendered] if use_json else []
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
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apscheduler", "sqlalchemy.engine", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def new_correlation_id() -> str:
    return uuid.uuid4().hex[:16]


def current_correlation_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(value) if value is not None else None


def current_trigger() -> str | None:
    value = structlog.contextvars.get_contextvars().get("trigger")
    return str(value) if value is not None else None


@contextmanager
def correlation(trigger: str, correlation_id: str | None = None) -> Iterator[str]:
    """Bind a correlation id and trigger (schedule / cli / startup_recovery) for one unit of work."""
    cid = correlation_id or new_correlation_id()
    with structlog.contextvars.bound_contextvars(correlation_id=cid, trigger=trigger):
        yield cid
