"""Bytes of one CSV export, the way an ERP job, a copy or an Excel save writes them.

`render` turns records (cells in the canonical column order) into the bytes of a file in a
`Format` (encoding and BOM, line ends, delimiter, column order) and says where each record starts:
its physical line (what erpsync names in a quarantine entry) and its byte offset (where a copy in
progress can be cut). `cut` and `header_only` make the broken files from a rendered one.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

# a cell holding this is written as the byte 0x81 (neither UTF-8 nor Windows-1252)
UNDECODABLE = "\x01"
BOMS = {"utf-8-sig": b"\xef\xbb\xbf", "utf-16": b"\xff\xfe"}
CODECS = {"utf-8-sig": "utf-8", "utf-16": "utf-16-le"}


@dataclass(frozen=True)
class Format:
    """How one file is written."""

    encoding: str  # utf-8, utf-8-sig (a BOM), cp1252, latin-1, utf-16 (Excel "Unicode text": LE + BOM)
    eol: str  # "\r\n" or "\n"
    delimiter: str  # "," ";" or "\t"
    decimal: str  # "." or ","
    dates: str  # "iso" or "us"
    order: tuple[int, ...]  # column positions, a permutation of the canonical order
    dutch: bool = False  # LN: Dutch headers and status words (a Dutch session's export)

    @property
    def suffix(self) -> str:
        return ".txt" if self.encoding == "utf-16" else ".csv"


@dataclass(frozen=True)
class Rendered:
    """A file's bytes and where its records start (index 0 is the header)."""

    data: bytes
    lines: list[int]  # physical line of each record, 1-based
    offsets: list[int]  # byte offset of each record
    last_cell: list[int]  # byte offset of the last delimiter of each record (its last cell starts after)
    bom: bytes


def _record_text(cells: Sequence[str], fmt: Format) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=fmt.delimiter, lineterminator=fmt.eol).writerow(cells)
    return out.getvalue()


def _encode(text: str, fmt: Format) -> bytes:
    raw = text.encode(CODECS.get(fmt.encoding, fmt.encoding))
    return raw.replace(UNDECODABLE.encode(), b"\x81") if UNDECODABLE in text else raw


def render(header: Sequence[str], records: Sequence[Sequence[str]], fmt: Format) -> Rendered:
    """The file: header then records, columns in `fmt.order`."""
    bom = BOMS.get(fmt.encoding, b"")
    parts: list[bytes] = [bom]
    lines, offsets, last_cell = [], [], []
    line, offset = 1, len(bom)
    for cells in [header, *records]:
        ordered = [cells[i] for i in fmt.order]
        text = _record_text(ordered, fmt)
        encoded = _encode(text, fmt)
        lines.append(line)
        offsets.append(offset)
        head = _record_text(ordered[:-1], fmt)[: -len(fmt.eol)]  # the cells before the last one
        last_cell.append(offset + len(_encode(head, fmt)))
        parts.append(encoded)
        line += text.count("\n")
        offset += len(encoded)
    return Rendered(b"".join(parts), lines, offsets, last_cell, bom)


def cut(rendered: Rendered, record: int, rng: random.Random) -> bytes:
    """The file as a copy still in progress leaves it: broken off inside `record` (>= 1), before
    its last delimiter, so the last line has fewer fields than the header (or an open quote)."""
    start = rendered.offsets[record]
    return rendered.data[: rng.randint(start + 1, rendered.last_cell[record])]


def header_only(rendered: Rendered, fmt: Format, rng: random.Random) -> bytes:
    """The export of a job that ran without rows (or failed after the header): the header line,
    with or without its line end."""
    end = rendered.offsets[1] if len(rendered.offsets) > 1 else len(rendered.data)
    data = rendered.data[:end]
    if rng.random() < 0.3:  # no line end after the header
        codec = CODECS.get(fmt.encoding, fmt.encoding)
        for eol in ("\r\n".encode(codec), "\n".encode(codec)):
            if data.endswith(eol):
                return data[: -len(eol)]
    return data
