"""Correlation of one unit of work: every log line and audit row it writes carries the same id.

Each cycle and CLI call binds a correlation id and its trigger (schedule / cli / startup_recovery);
structlog's context variables carry them into log lines, and the state adapters read them into the
audit rows they write, so a log line and an audit row can be joined.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog


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
