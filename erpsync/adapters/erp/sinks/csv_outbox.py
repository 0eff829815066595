"""The `csv` sink: outbox files for ERPs fed by CSV imports, one file per cycle that changed.

Each file holds the absolute totals of the runs whose counts changed, keyed by RUN_ID, so the
ERP's import must apply a row as "this run's totals are now ..." (an upsert), never add it to what
it has: a file written again after a crash (same totals) then changes nothing.
A file appears whole or not at all: it is written under a dot-prefixed temporary name, flushed to
disk (fsync), then renamed into place; importers must ignore dot files.
There is no read-back, so this sink cannot see a person's edit in the ERP; the import owns that.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from erpsync.adapters.erp.sinks.base import RUN_COUNT_COLUMNS, CountWrite, WriteResult, unread_result
from erpsync.domain.errors import ConfigError, RetryableError
from erpsync.observability.crashpoints import crash_point


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else ""


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (POSIX); Windows has no directory handles to sync."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CsvOutboxSink:
    """Writes each batch (a whole cycle) as one CSV file in `outbox_dir`, atomically."""

    name = "csv"
    batch_size: int | None = None

    def __init__(self, outbox_dir: Path) -> None:
        self.outbox_dir = outbox_dir

    def check(self) -> str:
        folder = self.outbox_dir
        if folder.is_dir():
            if os.access(folder, os.W_OK | os.X_OK):
                return f"writeback.outbox_dir {folder} is writable"
            raise ConfigError(f"writeback.outbox_dir {folder}: erpsync's user cannot write into it")
        parent = next((p for p in folder.parents if p.exists()), None)
        if folder.exists() or parent is None or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"writeback.outbox_dir {folder}: not a folder, and erpsync cannot create it")
        return f"writeback.outbox_dir {folder} does not exist yet; the first write creates it"

    def write(self, batch: Sequence[CountWrite]) -> list[WriteResult]:
        if not batch:
            return []
        now = datetime.now(UTC)
        try:
            self.outbox_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"writeback.outbox_dir {self.outbox_dir}: cannot create it: {exc.strerror}"
            ) from None
        name = f"erpsync_counts_{now:%Y%m%dT%H%M%S%fZ}_{uuid.uuid4().hex[:8]}.csv"
        final = self.outbox_dir / name
        temp = self.outbox_dir / f".{name}.tmp"
        try:
            with temp.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(RUN_COUNT_COLUMNS)
                for w in batch:
                    c = w.counts
                    counts = (c.total, c.good, c.scrap, c.nonconform)
                    times = (_iso(c.start_at), _iso(c.end_at), _iso(now))
                    writer.writerow((*w.run_columns().values(), *counts, *times))
                fh.flush()
                os.fsync(fh.fileno())
            crash_point("writeback.before_erp_commit")
            temp.replace(final)
            _fsync_dir(self.outbox_dir)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise RetryableError(
                f"writeback.outbox_dir {self.outbox_dir}: cannot write {name}: {exc.strerror}"
            ) from None
        return [unread_result(w, "written", f"in {name}") for w in batch]

    def close(self) -> None:
        """Nothing to release: every file is closed when written."""
