"""CSV operation exports (Infor VISUAL / Infor LN) as a JobSource: one file, or a watched inbox.

- `csv.path`: the file the ERP rewrites. It is read when its content (SHA-256) differs from the last
  acknowledged one; it is never moved.
- `csv.inbox`: export files dropped into a folder (when a file is ready: csv_inbox.py). The NEWEST
  ready file is the current snapshot (size and mtime are checked again after hashing); on
  `acknowledge` it moves to `archive/`, older pending files move there too (superseded, never
  read), and a file that cannot be read at all moves to `quarantine/` with a `<name>.reason.txt`.
  A file whose bytes equal the LAST file processed (csv_checkpoints.py) is archived without being
  read; one equal to an older file is read (state A, then B, then A again is a change back to A).
- `csv.path`: likewise the file is read when its content differs from the last one processed.
- A snapshot of a readable file is `complete=True` (the file is the full current set). A file that
  cannot be read gives `complete=False` and one BadRecord; no runs.
- Suspect (`RunSnapshot.suspect`, the export looks cut or failed, so it must not stop runs): an
  empty or unreadable file, a header-only file, a cut-off last line, a file that changed or broke
  off while read (csv_rows.py). A suspect snapshot stops no run that looks vanished
  (service/stop_guard.py).
Row rules (what is a run, what is skipped, duplicates) are in `csv_rows` and `csv_presets`; value
rules in `values`/`csv_file`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from erpsync.adapters.erp.csv_checkpoints import FileCheckpoints
from erpsync.adapters.erp.csv_file import FileInfo, UnreadableFileError, inspect_file
from erpsync.adapters.erp.csv_inbox import (
    ARCHIVE,
    QUARANTINE,
    CsvFiles,
    SourceFileMissingError,
    sha_or_name,
    still_same,
)
from erpsync.adapters.erp.csv_presets import PRESETS, CsvPreset
from erpsync.adapters.erp.csv_rows import UNREADABLE, CsvRowReader
from erpsync.adapters.erp.row_streams import operations_of, runs_of
from erpsync.adapters.erp.snapshot import StreamSnapshot, count_items
from erpsync.adapters.state.store import StateStore
from erpsync.config import SourceSettings
from erpsync.domain.errors import ConfigError
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, SourceStats

log = structlog.get_logger(__name__)


@dataclass
class _Pending:
    """What `acknowledge` must do for one snapshot."""

    info: FileInfo | None
    path: Path
    sha256: str
    unreadable: str | None = None
    superseded: list[tuple[Path, str]] = field(default_factory=list)
    rows_read: int = 0


class CsvSource:
    """A JobSource over Infor VISUAL or Infor LN operation exports."""

    def __init__(
        self,
        settings: SourceSettings,
        store: StateStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.kind not in PRESETS:
            raise ConfigError(f"source.kind: {settings.kind!r} is not a CSV source kind")
        self.name = settings.name
        self.kind = settings.kind
        self.settings = settings
        self.csv = settings.csv
        self.preset: CsvPreset = PRESETS[settings.kind]
        self.store = store
        self.operation_stats = SourceStats()
        self.rows = CsvRowReader(settings, self.preset)
        if self.csv.path is not None and self.csv.inbox is not None:
            raise ConfigError("source.csv: set path or inbox, not both")
        self.files = CsvFiles(self.csv, clock)
        self.checkpoints = FileCheckpoints(self.name, store)

    # -- JobSource ---------------------------------------------------------------------------

    def read_runs(self) -> StreamSnapshot | None:
        """A snapshot of the newest unprocessed file, or None when nothing new is ready."""
        pending = self._next_file()
        return None if pending is None else self._snapshot(pending)

    def read_current(self) -> StreamSnapshot | None:
        """The current file as a snapshot, processed or not (for `erpsync sources check`).

        Never acknowledged: it does not advance checkpoints or move files.
        """
        if self.csv.path is not None and not self.csv.path.is_file():
            raise SourceFileMissingError(f"source.csv.path {self.csv.path} does not exist")
        if self.csv.inbox is not None and not self.csv.inbox.is_dir():
            raise SourceFileMissingError(f"source.csv.inbox {self.csv.inbox} is not a folder")
        path = self.files.current_file()
        if path is None:
            return None
        try:
            info = self._inspect(path)
        except UnreadableFileError as exc:
            return self._snapshot(_Pending(None, path, sha_or_name(path), str(exc)), token=False)
        return self._snapshot(_Pending(info, path, info.sha256, self.rows.header_problem(info)), token=False)

    def _snapshot(self, pending: _Pending, *, token: bool = True) -> StreamSnapshot:
        if pending.unreadable is not None:
            reason = pending.unreadable

            def unreadable(stats: SourceStats) -> Iterator[JobOperationRun | BadRecord]:
                stats.suspect = f"the export cannot be read: {reason}"
                yield self.rows.file_bad(pending.path, pending.sha256, reason)

            return StreamSnapshot(
                unreadable,
                complete=False,
                kind=self.kind,
                token=pending if token else None,
            )
        info = pending.info
        assert info is not None

        def produce(stats: SourceStats) -> Iterator[JobOperationRun | BadRecord]:
            for item in runs_of(self.rows.rows(info, stats)):  # the rows say when it is suspect
                if isinstance(item, BadRecord) and item.error_class == UNREADABLE:
                    # Broke off mid-file (changed while read, malformed CSV): the runs read so
                    # far are not the full set, and the file goes to quarantine on acknowledge.
                    snapshot.complete = False
                    pending.unreadable = item.reason
                yield item
            pending.rows_read = stats.rows_read

        snapshot = StreamSnapshot(produce, complete=True, kind=self.kind, token=pending if token else None)
        return snapshot

    def lookup_runs(self, run_keys: Collection[str]) -> Iterator[JobOperationRun | BadRecord]:
        """Runs with these keys in the current file (an export has no history beyond it)."""
        wanted = set(run_keys)
        path = self.files.current_file()
        if path is None or not wanted:
            return
        try:
            info = self._inspect(path)
        except UnreadableFileError:
            return
        for item in runs_of(self.rows.rows(info, SourceStats())):
            if isinstance(item, JobOperationRun) and item.run_key in wanted:
                yield item

    def read_operations(self) -> Iterator[JobOperation | BadRecord]:
        """Operations of the current file that are not ended (to import as MM jobs)."""
        self.operation_stats = SourceStats()
        return count_items(self._operations(self.operation_stats), self.operation_stats, self.kind)

    def acknowledge(self, snapshot: Any) -> None:
        """Record the checkpoint and move inbox files (archive / quarantine)."""
        pending = getattr(snapshot, "token", None)
        if not isinstance(pending, _Pending):
            return
        position = "quarantined" if pending.unreadable else "read"
        self.checkpoints.record(pending.path, pending.sha256, position, pending.rows_read)
        if not self.files.in_inbox(pending.path):
            return
        if pending.unreadable:
            moved = self.files.move(pending.path, QUARANTINE, pending.sha256)
            if moved is not None:
                reason_file = moved.with_name(moved.name + ".reason.txt")
                try:
                    reason_file.write_text(pending.unreadable + "\n")
                except OSError as exc:
                    log.error(  # noqa: TRY400 - a folder to fix, not a bug: no traceback
                        "csv_inbox_folder_not_writable", folder=str(moved.parent), error=str(exc)
                    )
        else:
            self.files.move(pending.path, ARCHIVE, pending.sha256)
            for old_path, old_sha in pending.superseded:
                self.checkpoints.record(old_path, old_sha, "superseded", None)
                self.files.move(old_path, ARCHIVE, old_sha)

    def close(self) -> None:
        """Nothing is held open between reads."""

    # -- which file ----------------------------------------------------------------------------

    def _inspect(self, path: Path) -> FileInfo:
        return inspect_file(
            path,
            encoding=self.csv.encoding,
            delimiter=self.csv.delimiter,
            decimal_separator=self.csv.decimal_separator,
        )

    def _next_file(self) -> _Pending | None:
        if self.csv.path is not None:
            return self._next_path_file(self.csv.path)
        assert self.csv.inbox is not None
        ready = self.files.ready_inbox_files()
        fresh: list[tuple[Path, FileInfo | None, str, str | None]] = []
        for path in ready:
            try:
                info = self._inspect(path)
                sha, problem = info.sha256, None
            except UnreadableFileError as exc:
                info, sha, problem = None, sha_or_name(path), str(exc)
            if not still_same(path, info):
                continue
            if self.checkpoints.is_last(sha):
                log.info("csv_file_same_as_last_processed", file=path.name, sha256=sha)
                self.files.move(path, ARCHIVE, sha)
                continue
            fresh.append((path, info, sha, problem))
        if not fresh:
            return None
        path, info, sha, problem = fresh[-1]
        if problem is None and info is not None:
            problem = self.rows.header_problem(info)
        older = [(p, s) for p, _, s, _ in fresh[:-1]]
        return _Pending(info, path, sha, problem, superseded=older if problem is None else [])

    def _next_path_file(self, path: Path) -> _Pending | None:
        if not path.is_file():
            raise SourceFileMissingError(f"source.csv.path {path} does not exist")
        if self.files.settling(path):
            return None
        try:
            info = self._inspect(path)
        except UnreadableFileError as exc:
            sha = sha_or_name(path)
            return None if self.checkpoints.is_last(sha) else _Pending(None, path, sha, str(exc))
        if not still_same(path, info) or self.checkpoints.is_last(info.sha256):
            return None
        return _Pending(info, path, info.sha256, self.rows.header_problem(info))

    def _operations(self, stats: SourceStats) -> Iterator[JobOperation | BadRecord]:
        path = self.files.current_file()
        if path is None:
            return
        try:
            info = self._inspect(path)
        except UnreadableFileError as exc:
            yield self.rows.file_bad(path, sha_or_name(path), str(exc))
            return
        yield from operations_of(self.rows.rows(info, stats))
