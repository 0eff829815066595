"""Reading one CSV export robustly: checksum, encoding, delimiter, header mapping, line numbers.

- Encoding (case 8): a UTF-16 BOM means UTF-16; else UTF-8 (BOM stripped) if every byte decodes,
  else Windows-1252. A file that is neither cannot be read and is quarantined whole.
- NUL bytes are removed before parsing; quoted fields may hold delimiters, quotes and newlines.
- Delimiter: `,` `;` tab or `|`, whichever splits the header into the most columns (`csv.delimiter`
  overrides). The decimal separator follows it: `,` for `;`/tab files, else `.` (`csv.decimal_separator`
  overrides).
- Headers (case 11) are matched by alias lists, case-insensitively, ignoring BOM, spaces, `_`/`-`.
  `csv.header_overrides` maps a field to a header text, or to a position as `column:AP` (spreadsheet
  letters) or `column:3` (1-based).
Line numbers are physical lines where a record starts (a quoted newline spans lines), so
`file.csv:17` points a person at the right place.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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


def inspect_file(
    path: Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    decimal_separator: str | None = None,
) -> FileInfo:
    """Hash the file and settle its encoding, delimiter and decimal separator in one pass."""
    try:
        stat = path.stat()
        digest = hashlib.sha256()
        head = b""
        decoders: dict[str, codecs.IncrementalDecoder | None] = {}
        last_error: UnicodeDecodeError | None = None
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                if not head:
                    head = chunk[:SAMPLE_BYTES]
                    decoders = _decoders(head, encoding)
                digest.update(chunk)
                for name, decoder in decoders.items():
                    if decoder is not None:
                        try:
                            decoder.decode(chunk)
                        except UnicodeDecodeError as exc:
                            decoders[name] = None
                            last_error = exc
        for name, decoder in decoders.items():
            if decoder is not None:
                try:
                    decoder.decode(b"", final=True)
                except UnicodeDecodeError as exc:
                    decoders[name] = None
                    last_error = exc
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if stat.st_size == 0 or not head.strip(b"\x00\r\n\t ,;"):
        raise UnreadableFileError(f"{path.name} is empty")
    chosen = next((name for name, decoder in decoders.items() if decoder is not None), None)
    if chosen is None:
        names = " nor ".join(decoders)
        where = f" ({last_error.reason} at byte {last_error.start})" if last_error else ""
        raise UnreadableFileError(
            f"{path.name} is not {names} text{where}; re-export it as UTF-8 or set source.csv.encoding"
        )
    sample = head.decode(chosen, errors="ignore").replace("\x00", "")
    sep = delimiter or _sniff_delimiter(sample)
    decimal = decimal_separator or ("," if sep in (";", "\t") else ".")
    return FileInfo(path, digest.hexdigest(), stat.st_size, stat.st_mtime_ns, chosen, sep, decimal)


def _decoders(head: bytes, configured: str | None) -> dict[str, codecs.IncrementalDecoder | None]:
    if configured:
        return {configured: codecs.getincrementaldecoder(configured)()}
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return {"utf-16": codecs.getincrementaldecoder("utf-16")()}
    return {
        "utf-8-sig": codecs.getincrementaldecoder("utf-8-sig")(),
        "cp1252": codecs.getincrementaldecoder("cp1252")(),
    }


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


def iter_records(info: FileInfo) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, cells) of every non-blank record, header included."""
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


def cut_last_line(info: FileInfo, bad_line: int | None = None) -> str | None:
    """Why the file looks caught mid-write, or None: its last line ends without a newline and has
    fewer fields than the header, or could not be read (``bad_line``: the last bad row's line).
    Such a file is read (its good rows count), but it is not trusted to stop runs
    (`RunSnapshot.suspect`). Reads the file again only when the last byte is not a newline."""
    try:
        with info.path.open("rb") as fh:
            fh.seek(max(0, info.size - 4))
            tail = fh.read(4).rstrip(b"\x00")  # UTF-16: the newline's other byte
    except OSError:
        return None
    if not tail or tail.endswith((b"\n", b"\r")):
        return None
    width = 0
    last: tuple[int, int] | None = None
    try:
        for line, cells in iter_records(info):
            if not width:
                width = len(cells)
            else:
                last = (line, len(cells))
    except (UnreadableFileError, UnicodeDecodeError, OSError):
        return None  # the row reader reports these itself
    if last is None:
        return None
    where = f"{info.path.name}:{last[0]}: the last line ends without a newline"
    if last[1] < width:
        return f"{where} and has {last[1]} of {width} fields (an export caught mid-write?)"
    if last[0] == bad_line:
        return f"{where} and cannot be read (an export caught mid-write?)"
    return None


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
