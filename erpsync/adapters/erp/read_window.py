"""What the last complete read of a SQL source saw, kept per process between cycles.

`serve` opens a new source for every sync cycle, so this state lives in a process-wide registry
keyed by the source's identity (name, database, mapping): the first read of a process is always a
full one. `VisualSource.read_runs` and `GenericSqlSource.read_runs` (with a `watermark` column)
turn a window into a read of new rows plus the known open ones by key.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class ReadWindow:
    """The keys a complete read returned that must be re-read, and where the change column stood."""

    known: Collection[Any]  # VISUAL: TRANSACTION_IDs returned, ascending; generic-sql: open run keys
    watermark: Any  # VISUAL: MAX(TRANSACTION_ID) read first; generic-sql: highest watermark value
    full_read_at: datetime  # when the last full read started (the safety net's schedule)


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
