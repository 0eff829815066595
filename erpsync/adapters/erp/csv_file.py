"""Reading one CSV export robustly: checksum, encoding, delimiter, header mapping, line numbers.

- Encoding (case 8), decided LINE BY LINE so the same ERP row reads the same whatever else the file
  holds (one Windows-1252 byte elsewhere must not change how a UTF-8 job id decodes, or its run key):
  each physical line is UTF-8 (a leading BOM dropped), and only the bytes of it that are not valid
  UTF-8 are read as Windows-1252 (its five unassigned bytes as the C1 controls, as Windows does),
  so every line decodes. `csv.encoding` pins one encoding instead: each line is decoded strictly
  with it, and a line that is not valid in it is that row's bad value (quarantined), not the file's.
  A UTF-16/32 file (BOM, or pinned) is decoded as a whole; a byte that does not decode there makes
  the file unreadable (quarantined whole).
- NUL bytes are removed before parsing; quoted fields may hold delimiters, quotes and newlines.
- Delimiter: `,` `;` tab or `|`, whichever splits the header into the most columns (`csv.delimiter`
  overrides). The decimal separator follows it: `,` for `;`/tab files, else `.` (`csv.decimal_separator`
  overrides).
- Headers (case 11) are matched by alias lists, case-insensitively, ignoring BOM, spaces, `_`/`-`.
  `csv.header_overrides` maps a field to a header text, or to a position as `column:AP` (spreadsheet
  letters) or `column:3` (1-based).
Line numbers are physical lines where a record starts (a quoted newline spans lines), so
`file.csv:17` points a person at the right place. A last record cut off (no final newline and
fewer cells than the header, or an open quote) is flagged `truncated` (the export broke off).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from erpsync.domain.errors import ErpsyncError

CHUNK = 1 << 20
SAMPLE_BYTES = 1 << 16
DELIMITERS = (",", ";", "\t", "|")
csv.field_size_limit(16 << 20)


class UnreadableFileError(ErpsyncError):
    """The file as a whole cannot be read (encoding, empty, no usable header)."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What `inspect_file` learnt about a file, enough to parse it and to checkpoint it."""

    path: Path
    sha256: str
    size: int
    mtime_ns: int
    encoding: str
    delimiter: str
    decimal_separator: str


AUTO_ENCODING = "utf-8/cp1252"  # per line: UTF-8, bytes that are not UTF-8 as Windows-1252


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: the bytes UTF-8 refused, read as Windows-1252; a byte Windows-1252
    does not assign either (0x81, 0x8D, 0x8F, 0x90, 0x9D) makes the line undecodable."""
    assert isinstance(exc, UnicodeDecodeError)
    chunk = exc.object[exc.start : exc.end]
    try:
        return chunk.decode("cp1252"), exc.end
    except UnicodeDecodeError as inner:
        at = exc.start + inner.start
        reason = "neither UTF-8 nor Windows-1252"
        raise UnicodeDecodeError(AUTO_ENCODING, exc.object, at, at + 1, reason) from None


codecs.register_error("erpsync-cp1252", _cp1252_fallback)


def decode_line(raw: bytes, encoding: str) -> str:
    """One physical line as text (module rules); UnicodeDecodeError only for a pinned encoding."""
    if encoding == AUTO_ENCODING:
        return raw.decode("utf-8", errors="erpsync-cp1252")
    return raw.decode(encoding)


def _line_by_line(encoding: str) -> bool:
    """True for encodings whose lines can be split on bytes (ASCII-compatible), not UTF-16/32."""
    if encoding in (AUTO_ENCODING, "utf-8-sig"):
        return True
    try:
        return '\n,;"|\t'.encode(encoding) == b'\n,;"|\t'
    except (LookupError, UnicodeError):
        return False


def inspect_file(
    path: Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    decimal_separator: str | None = None,
) -> FileInfo:
    """Hash the file and settle its encoding, delimiter and decimal separator in one pass."""
    if encoding:
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            raise UnreadableFileError(f"source.csv.encoding = {encoding!r} is not a known encoding") from None
    chosen = encoding or AUTO_ENCODING
    try:
        stat = path.stat()
        digest, head, chosen = _hash(path, encoding)
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(
            f"{path.name} is not {chosen} text ({exc.reason} at byte {exc.start}); "
            "re-export it as UTF-8 or set source.csv.encoding"
        ) from None
    if stat.st_size == 0 or not head.strip(b"\x00\r\n\t ,;"):
        raise UnreadableFileError(f"{path.name} is empty")
    if _line_by_line(chosen):
        sample = "".join(_safe_decode(line, chosen) for line in head.splitlines(keepends=True))
    else:
        sample = head.decode(chosen, errors="ignore")
    sample = sample.replace("\x00", "")
    sep = delimiter or _sniff_delimiter(sample)
    decimal = decimal_separator or ("," if sep in (";", "\t") else ".")
    return FileInfo(path, digest.hexdigest(), stat.st_size, stat.st_mtime_ns, chosen, sep, decimal)


def _hash(path: Path, encoding: str | None) -> tuple[hashlib._Hash, bytes, str]:
    """SHA-256, first bytes and encoding of a file; a UTF-16/32 file is decoded whole to check it."""
    digest = hashlib.sha256()
    head = b""
    whole: codecs.IncrementalDecoder | None = None
    chosen = encoding or AUTO_ENCODING
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if not head:
                head = chunk[:SAMPLE_BYTES]
                if encoding is None and head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    chosen = "utf-16"
                if not _line_by_line(chosen):
                    whole = codecs.getincrementaldecoder(chosen)()
            digest.update(chunk)
            if whole is not None:
                whole.decode(chunk)
        if whole is not None:
            whole.decode(b"", final=True)
    return digest, head, chosen


def _safe_decode(raw: bytes, encoding: str) -> str:
    """A line as text whatever it holds: bytes that do not decode become U+FFFD."""
    try:
        return decode_line(raw, encoding)
    except UnicodeDecodeError:
        return raw.decode("utf-8" if encoding == AUTO_ENCODING else encoding, errors="replace")


def _sniff_delimiter(sample: str) -> str:
    lines = [line for line in sample.splitlines() if line.strip()][:20]
    best, best_score = ",", 0
    for candidate in DELIMITERS:
        try:
            rows = list(csv.reader(lines, delimiter=candidate))
        except csv.Error:
            continue
        if not rows:
            continue
        width = len(rows[0])
        consistent = sum(1 for row in rows[1:] if len(row) == width)
        score = width * 10 + consistent if width > 1 else 0
        if score > best_score:
            best, best_score = candidate, score
    return best


@dataclass(frozen=True, slots=True)
class Record:
    """One CSV record: where it starts, its cells, and what is wrong with its bytes if anything.

    `undecodable`: a line of it is not valid in the pinned encoding (cells hold U+FFFD there).
    `truncated`: it is the last record and was cut off (see module docstring).
    `unterminated`: it is the last record and ends without a newline (whole or not: a row that
    then cannot be read was most likely cut inside a value).
    """

    line: int
    cells: list[str]
    undecodable: str | None = None
    truncated: str | None = None
    unterminated: bool = False


class _Lines:
    """Physical lines of a file as text, decoded one by one, remembering what the csv reader needs
    to judge a record: lines that did not decode, the text of the record being read, the last
    line's terminator."""

    def __init__(self, info: FileInfo) -> None:
        self.info = info
        self.undecodable: dict[int, str] = {}
        self.record_text: list[str] = []
        self.number = 0
        self.last_terminated = True

    def text_lines(self, fh: BinaryIO) -> Iterator[str]:
        encoding, size, consumed = self.info.encoding, self.info.size, 0
        auto = encoding == AUTO_ENCODING
        for chunk in fh:
            consumed += len(chunk)
            if consumed > size:
                raise UnreadableFileError(f"{self.info.path.name} changed while read (it grew)")
            lone_cr = b"\r" in chunk and chunk.index(b"\r") < len(chunk) - 2
            for raw in chunk.splitlines(keepends=True) if lone_cr else (chunk,):
                self.number += 1
                try:
                    text = raw.decode("utf-8", "erpsync-cp1252") if auto else raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    what = "UTF-8 nor Windows-1252" if encoding == AUTO_ENCODING else encoding
                    self.undecodable[self.number] = (
                        f"line {self.number} is not {what} text (byte {raw[exc.start : exc.start + 1]!r} "
                        f"at column {exc.start + 1}); re-export the row or set source.csv.encoding"
                    )
                    text = _safe_decode(raw, encoding)
                if self.number == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                self.last_terminated = text.endswith(("\n", "\r"))
                self.record_text.append(text)
                yield text.replace("\x00", "") if "\x00" in text else text
        if consumed < size:
            raise UnreadableFileError(f"{self.info.path.name} changed while read (it shrank)")


def iter_records(info: FileInfo) -> Iterator[Record]:
    """Every non-blank record (the header first) with its first physical line number."""
    if not _line_by_line(info.encoding):
        for line, cells in _whole_file_records(info):
            yield Record(line, cells)
        return
    lines = _Lines(info)
    with info.path.open("rb") as fh:
        reader = csv.reader(lines.text_lines(fh), delimiter=info.delimiter)
        previous_end = 0
        width: int | None = None
        pending: Record | None = None
        parts: list[str] = []
        terminated, header_line = True, 0
        while True:
            lines.record_text = []
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise UnreadableFileError(f"{info.path.name}:{previous_end + 1}: {exc}") from None
            start, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if pending is not None:
                yield pending
            problem = None
            if lines.undecodable:
                undecodable = lines.undecodable
                problem = next(
                    (undecodable[n] for n in range(start, previous_end + 1) if n in undecodable), None
                )
            pending = Record(start, row, problem)
            if width is None:
                width, header_line = len(row), start
            parts, terminated = lines.record_text, lines.last_terminated
        if pending is not None:
            if width is not None and not terminated and pending.line != header_line:
                cut = _cut_off(pending, width, "".join(parts))
                pending = Record(pending.line, pending.cells, pending.undecodable, cut, unterminated=True)
            yield pending


def _cut_off(record: Record, width: int, text: str) -> str | None:
    """Why a last record without a final newline looks cut off, or None."""
    if text.count('"') % 2:
        return f"the last line ({record.line}) ends inside a quoted field and without a newline"
    if len(record.cells) < width:
        return (
            f"the last line ({record.line}) has {len(record.cells)} of the header's {width} fields "
            "and no final newline"
        )
    return None


def _whole_file_records(info: FileInfo) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, cells) of a UTF-16/32 file, decoded as one stream."""
    with info.path.open("r", encoding=info.encoding, errors="strict", newline="") as fh:
        reader = csv.reader((line.replace("\x00", "") for line in fh), delimiter=info.delimiter)
        previous_end = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise UnreadableFileError(f"{info.path.name}:{previous_end + 1}: {exc}") from None
            start, previous_end = previous_end + 1, reader.line_num
            if any(cell.strip() for cell in row):
                yield start, row


def normalise_header(text: str) -> str:
    """Header text as compared: no BOM/NUL, casefolded, spaces/underscores/dashes as one `_`."""
    cleaned = text.replace("\ufeff", "").replace("\x00", "").strip().strip('"').strip().casefold()
    return re.sub(r"[\s_\-]+", "_", cleaned)


_POSITION = re.compile(r"^column:\s*([A-Za-z]{1,3}|\d{1,4})$")


def column_index(reference: str) -> int | None:
    """0-based index for `column:AP` / `column:3`, else None (a header name)."""
    match = _POSITION.match(reference.strip())
    if match is None:
        return None
    ref = match.group(1)
    if ref.isdigit():
        return int(ref) - 1
    index = 0
    for char in ref.upper():
        index = index * 26 + (ord(char) - ord("A") + 1)
    return index - 1


@dataclass(frozen=True, slots=True)
class HeaderMap:
    """Which column holds each canonical field of one file."""

    positions: Mapping[str, int]
    headers: Sequence[str]

    @classmethod
    def build(
        cls,
        headers: Sequence[str],
        aliases: Mapping[str, Sequence[str]],
        overrides: Mapping[str, str],
        required: Sequence[tuple[str, ...]],
        file_name: str,
    ) -> HeaderMap:
        """Map fields by override, then by the first matching alias; missing required -> unreadable."""
        by_name: dict[str, int] = {}
        for position, header in enumerate(headers):
            by_name.setdefault(normalise_header(header), position)
        positions: dict[str, int] = {}
        for field, names in aliases.items():
            override = overrides.get(field)
            if override is not None:
                index = column_index(override)
                if index is None:
                    index = by_name.get(normalise_header(override))
                if index is None or index >= len(headers):
                    raise UnreadableFileError(
                        f"{file_name}: source.csv.header_overrides.{field} = {override!r} matches no column; "
                        f"the header is: {', '.join(h.strip() for h in headers)}"
                    )
                positions[field] = index
                continue
            for name in names:
                found = by_name.get(normalise_header(name))
                if found is not None:
                    positions[field] = found
                    break
        for group in required:
            if not any(field in positions for field in group):
                expected = "; ".join(f"{f}: {', '.join(aliases[f])}" for f in group)
                raise UnreadableFileError(
                    f"{file_name}: no column for {' or '.join(group)} (expected a header like {expected}); "
                    f"set source.csv.header_overrides.{group[0]} to the header text or to column:<letter>"
                )
        return cls(positions, list(headers))

    def fields(self, row: Sequence[str]) -> dict[str, str]:
        """Every mapped field of a row (stripped), for fast repeated lookups."""
        width = len(row)
        return {field: row[i].strip() for field, i in self.positions.items() if i < width}

    def get(self, row: Sequence[str], field: str) -> str:
        """The cell of `field` (stripped), '' when the field is not mapped or the row is short."""
        index = self.positions.get(field)
        if index is None or index >= len(row):
            return ""
        return row[index].strip()

    def header(self, field: str) -> str:
        """The file's own header text for `field` (for messages), or the field name."""
        index = self.positions.get(field)
        if index is None or index >= len(self.headers):
            return field
        return self.headers[index].replace("\ufeff", "").strip() or f"column {index + 1}"

    def raw(self, row: Sequence[str]) -> dict[str, str]:
        """The row as header -> cell, for the quarantine entry."""
        return {
            (
                self.headers[i].replace("\ufeff", "").strip() if i < len(self.headers) else f"column {i + 1}"
            ): cell
            for i, cell in enumerate(row)
        }
