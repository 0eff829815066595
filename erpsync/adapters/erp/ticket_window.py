"""What the last complete read of a VISUAL source saw, kept per process between cycles.

`serve` opens a new source for every sync cycle, so this state lives in a process-wide registry
keyed by the source's identity (name, database, schema, site, lookback): the first read of a process
is always a full one. See `VisualSource.read_runs` for how a window turns a full read into a read of
new tickets plus the known ones by primary key.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TicketWindow:
    """The tickets a complete read returned and where the id sequence stood just before it."""

    known: frozenset[int]  # TRANSACTION_IDs returned: open, or closed within the lookback
    watermark: int  # MAX(TRANSACTION_ID) of the whole table, read before the tickets
    full_read_at: datetime  # when the last full read started (the safety net's schedule)


class TicketWindows:
    """Source key -> window of its last complete read; thread-safe, one per process by default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[Hashable, TicketWindow] = {}

    def get(self, key: Hashable) -> TicketWindow | None:
        with self._lock:
            return self._windows.get(key)

    def put(self, key: Hashable, window: TicketWindow) -> None:
        with self._lock:
            self._windows[key] = window

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._windows.pop(key, None)


PROCESS_WINDOWS = TicketWindows()
