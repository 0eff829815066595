"""The one clock the service layer reads: timezone-aware UTC, so every stored time compares."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
