"""What the last complete read of a SQL source saw, kept per process between cycles.

`serve` opens a new source for every sync cycle, so this state lives in a process-wide registry
keyed by the source's identity (name, database, mapping): the first read of a process is always a
full one. `VisualSource.read_runs` and `GenericSqlSource.read_runs` (with a `watermark` column)
turn a window into a read of new rows plus the known open ones by key; `WindowedSqlSource` is
what both hold for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from erpsync.adapters.erp.sql_engine import create_source_engine
from erpsync.config import SourceSettings
from erpsync.domain.model import SourceStats


@dataclass(frozen=True, slots=True)
class ReadWindow:
    """The keys a complete read returned that must be re-read, and where the change column stood."""

    known: Collection[Any]  # VISUAL: TRANSACTION_IDs returned, ascending; generic-sql: open run keys
    watermark: Any  # VISUAL: MAX(TRANSACTION_ID) read first; generic-sql: highest watermark value
    full_read_at: datetime  # when the last full read started (the safety net's schedule)

    def full_read_due(self, now: datetime, interval_minutes: int) -> bool:
        """Time for the safety net's full read: the interval has passed (0: every read is full), or
        the clock went back since the last one."""
        elapsed = now - self.full_read_at
        return (
            interval_minutes == 0 or elapsed < timedelta(0) or elapsed >= timedelta(minutes=interval_minutes)
        )


class ReadWindows:
    """Source key -> window of its last complete read; thread-safe, one per process by default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[Hashable, ReadWindow] = {}

    def get(self, key: Hashable) -> ReadWindow | None:
        with self._lock:
            return self._windows.get(key)

    def put(self, key: Hashable, window: ReadWindow) -> None:
        with self._lock:
            self._windows[key] = window

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._windows.pop(key, None)


PROCESS_WINDOWS = ReadWindows()


def utcnow() -> datetime:
    return datetime.now(UTC)


class WindowedSqlSource:
    """What a SQL source with a read window holds: its settings, a read-only engine, the clock and
    the key of its window, so a window is only reused by a source reading the same rows."""

    def __init__(
        self,
        settings: SourceSettings,
        engine: Engine | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        windows: ReadWindows = PROCESS_WINDOWS,
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.operation_stats = SourceStats()
        self._clock = clock
        self._windows = windows
        mapping = self._configure()  # before the engine: a mapping error is told before a driver's
        self.engine = engine or create_source_engine(settings)
        self._window_key = (self.name, self.engine.url.render_as_string(hide_password=True), *mapping)

    def _configure(self) -> tuple[Hashable, ...]:
        """Check and prepare what the source's own settings say; returns what identifies the rows
        it reads (besides the name and the database) for the window's key."""
        raise NotImplementedError

    def close(self) -> None:
        self.engine.dispose()
