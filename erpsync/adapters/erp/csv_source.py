"""CSV operation exports (Infor VISUAL / Infor LN) as a JobSource: one file, or a watched inbox.

- `csv.path`: the file the ERP rewrites. It is read when its content (SHA-256) differs from the last
  acknowledged one; it is never moved.
- `csv.inbox`: export files dropped into a folder. A file is ready once it is not a temp name
  (`.tmp`, `.part`, `~`, leading `.`) and unchanged for `csv.settle_seconds` (size and mtime are
  checked again after hashing). The NEWEST ready file is the current snapshot; on `acknowledge` it
  moves to `archive/`, older pending files move there too (superseded, never read), and a file that
  cannot be read at all moves to `quarantine/` with a `<name>.reason.txt`. A file whose checksum
  was already processed is archived without being read again.
- Checkpoint: one `SourceCheckpoint` row per processed file, stream `file:<sha256>`, written on
  `acknowledge` when a StateStore is given (also remembered in memory).
- A snapshot of a readable file is `complete=True` (the file is the full current set). A file that
  cannot be read gives `complete=False` and one BadRecord; no runs.
- Duplicate rows (same run key) are collapsed: the FIRST row wins; a later identical row is counted
  as `duplicate`, a later different one as `duplicate_conflict` and logged with both line numbers.
Row rules (what is a run, what is skipped) are in `csv_presets`; value rules in `values`/`csv_file`.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select

from erpsync.adapters.erp.csv_file import (
    FileInfo,
    HeaderMap,
    UnreadableFileError,
    inspect_file,
    iter_records,
)
from erpsync.adapters.erp.csv_presets import (
    BUILTIN_STATUSES,
    PRESETS,
    CsvPreset,
    Meaning,
    RowContext,
    RowProblem,
    RowSkipped,
    status_key,
)
from erpsync.adapters.erp.snapshot import ParsedRow, StreamSnapshot, count_items
from erpsync.adapters.state.store import StateStore
from erpsync.adapters.state.tables import SourceCheckpoint
from erpsync.config import SourceSettings
from erpsync.domain.errors import ConfigError, RetryableError
from erpsync.domain.model import BadRecord, JobOperation, JobOperationRun, RunState, SourceStats
from erpsync.domain.timezones import zone_of
from erpsync.domain.units import RunUnit, TimeUnit, UnitError, parse_run_unit, parse_time_unit

log = structlog.get_logger(__name__)

ARCHIVE = "archive"
UNREADABLE = "unreadable_file"
QUARANTINE = "quarantine"
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", "~")
DATA_SUFFIXES = (".csv", ".txt", ".tsv")


class SourceFileMissingError(RetryableError):
    """The configured CSV file or inbox does not exist (yet); try again later."""


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
        self._clock = clock
        self._done: set[str] = set()
        self._check_config()
        self._statuses: dict[str, Meaning] = {
            **BUILTIN_STATUSES,
            **{status_key(k): v for k, v in self.csv.status_map.items()},
        }

    def _check_config(self) -> None:
        unknown = sorted(set(self.csv.header_overrides) - set(self.preset.aliases))
        if unknown:
            raise ConfigError(
                f"source.csv.header_overrides.{unknown[0]}: unknown field for {self.kind}; "
                f"expected one of {', '.join(self.preset.aliases)}"
            )
        self.run_unit: RunUnit | None = None
        self.setup_unit: TimeUnit | None = None
        try:
            if self.csv.run_time_unit:
                self.run_unit = parse_run_unit(self.csv.run_time_unit, self.settings.visual.run_type_aliases)
            if self.csv.setup_time_unit:
                self.setup_unit = parse_time_unit(self.csv.setup_time_unit)
        except UnitError as exc:
            raise ConfigError(f"source.csv.run_time_unit: {exc}") from None
        if self.csv.path is not None and self.csv.inbox is not None:
            raise ConfigError("source.csv: set path or inbox, not both")

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
        path = self._current_file()
        if path is None:
            return None
        try:
            info = self._inspect(path)
        except UnreadableFileError as exc:
            return self._snapshot(_Pending(None, path, _sha_or_name(path), str(exc)), token=False)
        return self._snapshot(_Pending(info, path, info.sha256, self._header_problem(info)), token=False)

    def _snapshot(self, pending: _Pending, *, token: bool = True) -> StreamSnapshot:
        if pending.unreadable is not None:
            reason = pending.unreadable
            return StreamSnapshot(
                lambda _stats: iter([self._file_bad(pending.path, pending.sha256, reason)]),
                complete=False,
                kind=self.kind,
                token=pending if token else None,
            )
        info = pending.info
        assert info is not None

        def produce(stats: SourceStats) -> Iterator[JobOperationRun | BadRecord]:
            for item in self._rows(info, stats):
                if isinstance(item, BadRecord):
                    if item.error_class == UNREADABLE:
                        # Broke off mid-file (changed while read, malformed CSV): the runs read so
                        # far are not the full set, and the file goes to quarantine on acknowledge.
                        snapshot.complete = False
                        pending.unreadable = item.reason
                    yield item
                elif item.state is not None:
                    yield item.run()
            pending.rows_read = stats.rows_read

        snapshot = StreamSnapshot(produce, complete=True, kind=self.kind, token=pending if token else None)
        return snapshot

    def lookup_runs(self, run_keys: Collection[str]) -> Iterator[JobOperationRun | BadRecord]:
        """Runs with these keys in the current file (an export has no history beyond it)."""
        wanted = set(run_keys)
        path = self._current_file()
        if path is None or not wanted:
            return
        try:
            info = self._inspect(path)
        except UnreadableFileError:
            return
        for item in self._rows(info, SourceStats()):
            if isinstance(item, ParsedRow) and item.state is not None and item.run_key in wanted:
                yield item.run()

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
        self._checkpoint(pending.path, pending.sha256, position, pending.rows_read)
        if self._in_inbox(pending.path):
            if pending.unreadable:
                moved = self._move(pending.path, QUARANTINE, pending.sha256)
                if moved is not None:
                    reason_file = moved.with_name(moved.name + ".reason.txt")
                    try:
                        reason_file.write_text(pending.unreadable + "\n")
                    except OSError as exc:
                        log.error(  # noqa: TRY400 - a folder to fix, not a bug: no traceback
                            "csv_inbox_folder_not_writable", folder=str(moved.parent), error=str(exc)
                        )
            else:
                self._move(pending.path, ARCHIVE, pending.sha256)
                for old_path, old_sha in pending.superseded:
                    self._checkpoint(old_path, old_sha, "superseded", None)
                    self._move(old_path, ARCHIVE, old_sha)

    def close(self) -> None:
        """Nothing is held open between reads."""

    # -- files -----------------------------------------------------------------------------

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
        ready = self._ready_inbox_files()
        fresh: list[tuple[Path, FileInfo | None, str, str | None]] = []
        for path in ready:
            try:
                info = self._inspect(path)
                sha, problem = info.sha256, None
            except UnreadableFileError as exc:
                info, sha, problem = None, _sha_or_name(path), str(exc)
            if not self._still_same(path, info):
                continue
            if self._seen(sha):
                log.info("csv_file_already_processed", file=path.name, sha256=sha)
                self._move(path, ARCHIVE, sha)
                continue
            fresh.append((path, info, sha, problem))
        if not fresh:
            return None
        path, info, sha, problem = fresh[-1]
        if problem is None and info is not None:
            problem = self._header_problem(info)
        older = [(p, s) for p, _, s, _ in fresh[:-1]]
        return _Pending(info, path, sha, problem, superseded=older if problem is None else [])

    def _next_path_file(self, path: Path) -> _Pending | None:
        if not path.is_file():
            raise SourceFileMissingError(f"source.csv.path {path} does not exist")
        if self._clock() - path.stat().st_mtime < self.csv.settle_seconds:
            return None
        try:
            info = self._inspect(path)
        except UnreadableFileError as exc:
            sha = _sha_or_name(path)
            return None if self._seen(sha) else _Pending(None, path, sha, str(exc))
        if not self._still_same(path, info) or self._seen(info.sha256):
            return None
        return _Pending(info, path, info.sha256, self._header_problem(info))

    def _ready_inbox_files(self) -> list[Path]:
        inbox = self.csv.inbox
        assert inbox is not None
        if not inbox.is_dir():
            raise SourceFileMissingError(f"source.csv.inbox {inbox} is not a folder")
        now = self._clock()
        ready = []
        for path in inbox.iterdir():
            name = path.name
            if not path.is_file() or name.startswith((".", "~$")) or name.lower().endswith(TEMP_SUFFIXES):
                continue
            if path.suffix.lower() not in DATA_SUFFIXES:
                continue
            stat = path.stat()
            if now - stat.st_mtime < self.csv.settle_seconds:
                log.debug("csv_file_still_changing", file=name)
                continue
            ready.append((stat.st_mtime_ns, name, path))
        return [path for _, _, path in sorted(ready)]

    def _still_same(self, path: Path, info: FileInfo | None) -> bool:
        """False when the file changed while it was hashed (still being written)."""
        if info is None:
            return True
        try:
            stat = path.stat()
        except OSError:
            return False
        return stat.st_size == info.size and stat.st_mtime_ns == info.mtime_ns

    def _header_problem(self, info: FileInfo) -> str | None:
        try:
            self._header(info)
        except UnreadableFileError as exc:
            return str(exc)
        except (UnicodeDecodeError, OSError) as exc:
            return f"{info.path.name} changed or vanished while read: {exc}"
        return None

    def _header(self, info: FileInfo) -> tuple[HeaderMap, Iterator[tuple[int, list[str]]]]:
        records = iter_records(info)
        first = next(records, None)
        if first is None:
            raise UnreadableFileError(f"{info.path.name} has no header row")
        mapping = HeaderMap.build(
            first[1], self.preset.aliases, self.csv.header_overrides, self.preset.required, info.path.name
        )
        return mapping, records

    def _current_file(self) -> Path | None:
        """The file that holds the current state: the configured path, or the newest inbox file."""
        if self.csv.path is not None:
            return self.csv.path if self.csv.path.is_file() else None
        inbox = self.csv.inbox
        assert inbox is not None
        pending = self._ready_inbox_files() if inbox.is_dir() else []
        if pending:
            return pending[-1]
        archive = inbox / ARCHIVE
        if not archive.is_dir():
            return None
        files = [p for p in archive.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES]
        return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name)) if files else None

    # -- rows --------------------------------------------------------------------------------

    def _rows(self, info: FileInfo, stats: SourceStats) -> Iterator[ParsedRow | BadRecord]:
        """Parsed rows of a readable file, duplicates collapsed, bad rows as BadRecords.

        A file that breaks off while read (changed on disk, malformed CSV) ends the stream with
        one BadRecord of class `unreadable_file`.
        """
        try:
            yield from self._parsed_rows(info, stats)
        except UnreadableFileError as exc:
            yield self._file_bad(info.path, info.sha256, str(exc))
        except (UnicodeDecodeError, OSError) as exc:
            yield self._file_bad(
                info.path, info.sha256, f"{info.path.name} changed or vanished while read: {exc}"
            )

    def _parsed_rows(self, info: FileInfo, stats: SourceStats) -> Iterator[ParsedRow | BadRecord]:
        mapping, records = self._header(info)
        ctx = RowContext(
            file_name=info.path.name,
            zone=zone_of(self.settings.timezone),
            date_order=self.csv.date_order,
            decimal_separator=info.decimal_separator,
            run_unit=self.run_unit,
            setup_unit=self.setup_unit,
            statuses=self._statuses,
            run_unit_aliases=self.settings.visual.run_type_aliases,
        )
        seen: dict[str, tuple[int, int]] = {}
        for line, cells in records:
            stats.rows_read += 1
            item = self._row(mapping, cells, line, ctx, stats)
            if not isinstance(item, ParsedRow):
                if item is not None:
                    yield item
                continue
            fingerprint = zlib.crc32("\x1f".join(cells).encode())
            first = seen.get(item.run_key)
            if first is None:
                seen[item.run_key] = (line, fingerprint)
                yield item
            elif first[1] == fingerprint:
                stats.skip("duplicate")
            else:
                stats.skip("duplicate_conflict")
                log.warning(
                    "csv_duplicate_row_ignored",
                    file=info.path.name,
                    run_key=item.run_key,
                    kept_line=first[0],
                    ignored_line=line,
                    rule="first row wins",
                )

    def _row(
        self, mapping: HeaderMap, cells: list[str], line: int, ctx: RowContext, stats: SourceStats
    ) -> ParsedRow | BadRecord | None:
        origin = f"{ctx.file_name}:{line}"
        try:
            fields = mapping.fields(cells)
            return self.preset.parse(lambda name: fields.get(name, ""), ctx, origin)
        except RowSkipped as skipped:
            stats.skip(skipped.reason)
            return None
        except RowProblem as problem:
            header = mapping.header(problem.field)
            log.warning(
                "csv_row_quarantined", file=ctx.file_name, line=line, field=header, reason=str(problem)
            )
            return BadRecord(
                source=self.name,
                record_key=origin,
                reason=str(problem),
                file=ctx.file_name,
                line=line,
                field=header,
                raw=mapping.raw(cells),
            )

    def _operations(self, stats: SourceStats) -> Iterator[JobOperation | BadRecord]:
        path = self._current_file()
        if path is None:
            return
        try:
            info = self._inspect(path)
        except UnreadableFileError as exc:
            yield self._file_bad(path, _sha_or_name(path), str(exc))
            return
        for item in self._rows(info, stats):
            if isinstance(item, BadRecord):
                yield item
            elif item.state is not RunState.ENDED:
                yield item.operation

    def _file_bad(self, path: Path, sha: str, reason: str) -> BadRecord:
        log.warning("csv_file_unreadable", file=path.name, reason=reason)
        return BadRecord(
            source=self.name,
            record_key=f"{path.name}@{sha[:12]}",
            reason=reason,
            error_class=UNREADABLE,
            file=path.name,
        )

    # -- checkpoint & moves ---------------------------------------------------------------------

    def _seen(self, sha: str) -> bool:
        if sha in self._done:
            return True
        if self.store is None:
            return False
        with self.store.session() as session:
            row = session.scalar(
                select(SourceCheckpoint.id).where(
                    SourceCheckpoint.source == self.name, SourceCheckpoint.stream == f"file:{sha}"
                )
            )
        if row is not None:
            self._done.add(sha)
        return row is not None

    def _checkpoint(self, path: Path, sha: str, position: str, rows_read: int | None) -> None:
        self._done.add(sha)
        if self.store is None:
            return
        stream = f"file:{sha}"
        with self.store.session() as session:
            existing = session.scalar(
                select(SourceCheckpoint).where(
                    SourceCheckpoint.source == self.name, SourceCheckpoint.stream == stream
                )
            )
            if existing is None:
                existing = SourceCheckpoint(source=self.name, stream=stream)
                session.add(existing)
            existing.position = position
            existing.file_name = str(path)[:1024]
            existing.file_sha256 = sha
            existing.rows_read = rows_read

    def _in_inbox(self, path: Path) -> bool:
        return self.csv.inbox is not None and path.parent == self.csv.inbox

    def _move(self, path: Path, folder: str, sha: str) -> Path | None:
        inbox = self.csv.inbox
        if inbox is None or not path.exists():
            return None
        target_dir = inbox / folder
        target = target_dir / path.name
        try:
            target_dir.mkdir(exist_ok=True)
            if target.exists():
                target = target_dir / f"{path.stem}.{sha[:12]}{path.suffix}"
            shutil.move(str(path), target)
        except OSError as exc:
            # the file was processed (its checksum is recorded, it is never read again), so the
            # inbox goes on with newer files; the folder is what a person must fix
            log.error(  # noqa: TRY400 - a folder to fix, not a bug: no traceback
                "csv_inbox_folder_not_writable",
                folder=str(target_dir),
                file=path.name,
                error=f"{type(exc).__name__}: {exc.strerror or exc}",
                fix=f"let erpsync's user create and write {target_dir}; {path.name} stays in "
                "the inbox until then (it is not read again) and newer files are processed",
            )
            return None
        log.info("csv_file_moved", file=path.name, to=str(target))
        return target


def _sha_or_name(path: Path) -> str:
    """The SHA-256 of an unreadable file when its bytes can be read, else a stable stand-in."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return hashlib.sha256(str(path).encode()).hexdigest()
