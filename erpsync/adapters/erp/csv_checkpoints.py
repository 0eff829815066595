"""Which CSV files a source has processed, by checksum, and which one it processed LAST.

One `SourceCheckpoint` row per processed file, stream `file:<sha256>`, written when a snapshot is
acknowledged (when a StateStore is given) and remembered in memory either way.

A file is skipped (inbox: archived unread) only when its bytes equal the LAST file processed
(read or quarantined; superseded files do not count): that file says nothing new. A file equal to
an OLDER one is read: state A, then B, then A again is a real change back to A. "Last" is the
most recently acknowledged checkpoint row (`updated_at`, then id) after a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
        self._last: str | None = None
        self._last_loaded = store is None

    def is_last(self, sha: str) -> bool:
        """The last file processed (read or quarantined) had these bytes: nothing new in it."""
        if not self._last_loaded:
            self._last_loaded = True
            assert self._store is not None
            with self._store.session() as session:
                self._last = session.scalar(
                    select(SourceCheckpoint.file_sha256)
                    .where(
                        SourceCheckpoint.source == self._source,
                        SourceCheckpoint.stream.like("file:%"),
                        SourceCheckpoint.position.in_(("read", "quarantined")),
                    )
                    .order_by(SourceCheckpoint.updated_at.desc(), SourceCheckpoint.id.desc())
                    .limit(1)
                )
        return sha == self._last

    def record(self, path: Path, sha: str, position: str, rows_read: int | None) -> None:
        """Mark the file processed: `position` is read, quarantined or superseded."""
        self._done.add(sha)
        if position != "superseded":
            self._last, self._last_loaded = sha, True
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
            existing.updated_at = datetime.now(UTC)  # also when nothing else changed: "last" is by time
