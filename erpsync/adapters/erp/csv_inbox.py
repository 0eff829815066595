"""The files of a CSV source: which one is ready or current, and where a processed one goes.

A file is ready once it is not a temp name (`.tmp`, `.part`, `~`, leading `.`), has a data suffix
and has been unchanged for `csv.settle_seconds` (it may still be being written). Processed inbox
files move to `archive/`, unreadable ones to `quarantine/`; a name already taken there gets the
file's checksum added, so nothing is overwritten.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import structlog

from erpsync.adapters.erp.csv_file import FileInfo
from erpsync.config import CsvSettings
from erpsync.domain.errors import RetryableError

log = structlog.get_logger(__name__)

ARCHIVE = "archive"
QUARANTINE = "quarantine"
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", "~")
DATA_SUFFIXES = (".csv", ".txt", ".tsv")


class SourceFileMissingError(RetryableError):
    """The configured CSV file or inbox does not exist (yet); try again later."""


class CsvFiles:
    """Finds and moves the files of one CSV source (`csv.path` or `csv.inbox`)."""

    def __init__(self, csv: CsvSettings, clock: Callable[[], float]) -> None:
        self.csv = csv
        self._clock = clock

    def ready_inbox_files(self) -> list[Path]:
        """Ready inbox files, oldest first (by modification time, then name)."""
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

    def settling(self, path: Path) -> bool:
        """The file changed less than `csv.settle_seconds` ago."""
        return self._clock() - path.stat().st_mtime < self.csv.settle_seconds

    def current_file(self) -> Path | None:
        """The file that holds the current state: the configured path, or the newest inbox file."""
        if self.csv.path is not None:
            return self.csv.path if self.csv.path.is_file() else None
        inbox = self.csv.inbox
        assert inbox is not None
        pending = self.ready_inbox_files() if inbox.is_dir() else []
        if pending:
            return pending[-1]
        archive = inbox / ARCHIVE
        if not archive.is_dir():
            return None
        files = [p for p in archive.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES]
        return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name)) if files else None

    def in_inbox(self, path: Path) -> bool:
        return self.csv.inbox is not None and path.parent == self.csv.inbox

    def move(self, path: Path, folder: str, sha: str) -> Path | None:
        """Move an inbox file into `folder` of the inbox; None when it could not (logged)."""
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


def still_same(path: Path, info: FileInfo | None) -> bool:
    """False when the file changed while it was hashed (still being written)."""
    if info is None:
        return True
    try:
        stat = path.stat()
    except OSError:
        return False
    return stat.st_size == info.size and stat.st_mtime_ns == info.mtime_ns


def sha_or_name(path: Path) -> str:
    """The SHA-256 of an unreadable file when its bytes can be read, else a stable stand-in."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return hashlib.sha256(str(path).encode()).hexdigest()
