"""Which CSV files a source has processed, by checksum: so a file is never read twice.

One `SourceCheckpoint` row per processed file, stream `file:<sha256>`, written when a snapshot is
acknowledged (when a StateStore is given) and remembered in memory either way.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import SourceCheckpoint


class FileCheckpoints:
    """The processed files of one source, in memory and (with a store) in the state database."""

    def __init__(self, source: str, store: StateStore | None) -> None:
        self._source = source
        self._store = store
        self._done: set[str] = set()

    def seen(self, sha: str) -> bool:
        """A file with this checksum was processed already."""
        if sha in self._done:
            return True
        if self._store is None:
            return False
        with self._store.session() as session:
            row = session.scalar(
                select(SourceCheckpoint.id).where(
                    SourceCheckpoint.source == self._source, SourceCheckpoint.stream == f"file:{sha}"
                )
            )
        if row is not None:
            self._done.add(sha)
        return row is not None

    def record(self, path: Path, sha: str, position: str, rows_read: int | None) -> None:
        """Mark the file processed: `position` is read, quarantined or superseded."""
        self._done.add(sha)
        if self._store is None:
            return
        stream = f"file:{sha}"
        with self._store.session() as session:
            existing = session.scalar(
                select(SourceCheckpoint).where(
                    SourceCheckpoint.source == self._source, SourceCheckpoint.stream == stream
                )
            )
            if existing is None:
                existing = SourceCheckpoint(source=self._source, stream=stream)
                session.add(existing)
            existing.position = position
            existing.file_name = str(path)[:1024]
            existing.file_sha256 = sha
            existing.rows_read = rows_read
