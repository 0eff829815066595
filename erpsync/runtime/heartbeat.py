"""The heartbeat row: one per running instance, so IT can see in SQL who runs, in which role, how fresh.

`beat_at` uses the database clock (like the lease), so the age of a heartbeat can be judged against
the database's now whatever host wrote it. `last_sync_ok_at` / `last_writeback_ok_at` carry the time
the runtime saw those loops succeed (a scheduled run that returned normally).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, literal_column, update
from sqlalchemy.exc import IntegrityError

from erpsync import __version__
from erpsync.adapters.state.tables import Heartbeat
from erpsync.adapters.state.types import UTCDateTime
from erpsync.runtime.leader import now_sql

# Loops whose last success has its own heartbeat column.
LOOP_COLUMNS = {"sync": "last_sync_ok_at", "writeback": "last_writeback_ok_at"}


def default_instance_name() -> str:
    """hostname-pid: unique per process, readable in `erpsync status` and the heartbeat table."""
    return f"{socket.gethostname()}-{os.getpid()}"


class HeartbeatWriter:
    """Writes this instance's heartbeat row; each call is its own short transaction."""

    def __init__(self, engine: Engine, instance: str) -> None:
        self.engine = engine
        self.instance = instance
        self._now = literal_column(now_sql(engine.dialect.name), UTCDateTime())

    def start(self, role: str) -> None:
        """Claim the row for this process (a restarted instance with the same name takes it over)."""
        self._write(
            role,
            {
                "started_at": self._now,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "app_version": __version__,
            },
        )

    def beat(self, role: str, last_ok: Mapping[str, datetime] | None = None) -> None:
        """Record that this instance is alive in `role`, with the loop successes it has seen."""
        values: dict[str, Any] = {}
        for loop, when in (last_ok or {}).items():
            if loop in LOOP_COLUMNS:
                values[LOOP_COLUMNS[loop]] = when
        self._write(role, values)

    def _write(self, role: str, extra: Mapping[str, Any]) -> None:
        values = {"role": role, "beat_at": self._now, **extra}
        where = Heartbeat.instance == self.instance
        for _ in range(2):
            with self.engine.begin() as conn:
                if conn.execute(update(Heartbeat).where(where).values(**values)).rowcount == 1:
                    return
            if self._insert(values):
                return

    def _insert(self, values: Mapping[str, Any]) -> bool:
        """Create the row; False when it was created meanwhile (same instance name), so update it."""
        try:
            with self.engine.begin() as conn:
                row = {
                    "instance": self.instance,
                    "started_at": self._now,
                    "hostname": socket.gethostname(),
                    "pid": os.getpid(),
                    "app_version": __version__,
                    **values,
                }
                conn.execute(insert(Heartbeat).values(**row))
        except IntegrityError:
            return False
        return True
