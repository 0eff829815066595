"""Consecutive CSV exports for one trial: the ERP's changes plus what goes wrong with the files.

File N+1 is file N after 20-40 minutes of the ERP (tests/campaign/csv_shop.py) and, drawn at
random, what happens to real exports between two runs of a scheduled job:
- encoding flips (UTF-8 <-> Windows-1252 / Latin-1 with accented names), LN headers and status
  words switching between English and Dutch, a UTF-8 BOM appearing or
  disappearing, an Excel "Unicode text" save (UTF-16 LE with BOM, tab-delimited, US dates, .txt),
  a European locale (`;`, decimal comma, DD.MM.YYYY), CRLF <-> LF, columns reordered, rows in
  another order;
- a truncated file (a copy still in progress: cut inside a row, before its last field), which
  half the time is then completed in place; a header-only file (the job ran without rows); an
  empty file; the same bytes again (the job ran, nothing changed);
- poisoned cells among good rows (a bad number, unit, status, flag or date; an empty or bad key
  cell; a byte that is neither UTF-8 nor Windows-1252), an identical duplicate row.
Each file carries what erpsync must make of it (`FileView`, the bad lines to quarantine) and the
oracle's expectation after it (tests/campaign/csv_oracle.py). Deterministic from the seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tests.campaign import csv_ln
from tests.campaign.csv_oracle import FileView, RowView, ShopState
from tests.campaign.csv_render import UNDECODABLE, Format, cut, header_only, render
from tests.campaign.csv_shop import COLUMN, HEADER, Op, Shop

# kind -> (column, value, key cells still readable: the bad row holds its run)
POISON: dict[str, tuple[str, str, bool]] = {
    "empty work order id": ("WORKORDER_BASE_ID", "", False),
    "sequence not a number": ("SEQUENCE_NO", "ten", False),
    "fractional sequence": ("SEQUENCE_NO", "10.5", False),
    "empty machine": ("RESOURCE_ID", "", True),
    "quantity not a number": ("CALC_END_QTY", "abc", True),
    "quantity NaN": ("CALC_END_QTY", "NaN", True),
    "quantity above 10^9": ("CALC_END_QTY", "5000000000", True),
    "run standard not a number": ("RUN", "fast", True),
    "unknown run unit": ("RUN_TYPE", "BANANAS/HR", True),
    "negative setup hours": ("SETUP_HRS", "-1", True),
    "unknown status": ("STATUS", "Q", True),
    "impossible close date": ("CLOSE_DATE", "2024-02-30", True),
    "start date year 9999": ("ACT_START_DATE", "9999-12-31 23:59", True),
    "run-complete flag not yes/no": ("Run_Complete", "maybe", True),
    "setup-completed flag not yes/no": ("SETUP_COMPLETED", "perhaps", True),
    "impossible due date": ("DESIRED_WANT_DATE", "31.02.2024", True),
    "undecodable byte": ("DESCRIPTION", f"Teil {UNDECODABLE} kaputt", True),
}
ROW = "row"  # the field a quarantine entry names for a cut-off or undecodable line
Poison = tuple[
    dict[int, str], int | None, bool
]  # cells by column, the column named (None: `row`), key readable


@dataclass(frozen=True)
class Dialect:
    """An export kind: its source kind and settings, header, row cells and bad cells."""

    kind: str
    columns: int
    header: Callable[[Format], list[str]]
    cells: Callable[[Op, Format], list[str]]
    poison: dict[str, Poison]
    settings: dict[str, str]


def _visual_poison() -> dict[str, Poison]:
    out: dict[str, Poison] = {}
    for kind, (column, value, readable) in POISON.items():
        index = COLUMN[column]
        out[kind] = ({index: value}, None if kind == "undecodable byte" else index, readable)
    return out


def _ln_poison() -> dict[str, Poison]:
    out: dict[str, Poison] = {}
    for kind, (changes, named, readable) in csv_ln.POISON.items():
        cells = {csv_ln.INDEX[f]: v for f, v in changes.items()}
        out[kind] = (cells, csv_ln.INDEX[named] if named else None, readable)
    desc = csv_ln.INDEX["description"]
    out["undecodable byte"] = ({desc: f"Teil {UNDECODABLE} kaputt"}, None, True)
    return out


VISUAL = Dialect("infor-visual-csv", len(HEADER), lambda fmt: HEADER, Op.cells, _visual_poison(), {})
LN = Dialect("infor-ln-csv", len(csv_ln.FIELDS), csv_ln.header, csv_ln.cells, _ln_poison(), csv_ln.SETTINGS)
DIALECTS = {d.kind: d for d in (VISUAL, LN)}


@dataclass
class ExportFile:
    """One file dropped into the source's inbox (or written over its path)."""

    step: int
    name: str
    data: bytes
    kinds: list[str]  # what went wrong with the file (faults)
    changes: list[str]  # what changed in the ERP since the previous file
    bad: list[tuple[int, str]]  # (line, header) every bad row must be quarantined with
    unreadable: bool  # quarantined whole
    view: FileView
    expect: ShopState = field(repr=False)


@dataclass(frozen=True)
class TrialParams:
    seed: int
    backend: str  # sqlite / postgresql / mariadb
    policy: str  # sync.vanished_runs
    mode: str  # inbox / path
    runner: str  # sync (one process per file) / serve (one process, files dropped while it runs)
    files: int
    kind: str = "infor-visual-csv"  # or infor-ln-csv


def first_format(rng: random.Random, dialect: Dialect) -> Format:
    return Format(
        encoding=rng.choice(("utf-8", "cp1252", "cp1252", "latin-1", "utf-8-sig")),
        eol=rng.choice(("\r\n", "\n")),
        delimiter=",",
        decimal=".",
        dates=rng.choice(("iso", "us")),
        order=tuple(range(dialect.columns)),
        dutch=dialect is LN and rng.random() < 0.5,
    )


def next_format(
    usual: Format, last: Format, rng: random.Random, dialect: Dialect
) -> tuple[Format, Format, list[str]]:
    """(the ERP's usual format from now on, this file's format, what changed)."""
    kinds: list[str] = []
    if rng.random() < 0.1:  # someone opened the export in Excel and saved it as Unicode text
        excel = replace(usual, encoding="utf-16", eol="\r\n", delimiter="\t", decimal=".", dates="us")
        return usual, excel, ["Excel UTF-16 save"]
    fmt = usual
    if rng.random() < 0.3:
        fmt = replace(
            fmt, encoding=rng.choice([e for e in ("utf-8", "cp1252", "latin-1") if e != fmt.encoding])
        )
    if rng.random() < 0.15:
        fmt = replace(fmt, encoding="utf-8" if fmt.encoding == "utf-8-sig" else "utf-8-sig")
    if rng.random() < 0.2:
        fmt = replace(fmt, eol="\n" if fmt.eol == "\r\n" else "\r\n")
    if rng.random() < 0.08:
        european = fmt.delimiter == ";"
        fmt = replace(
            fmt,
            delimiter="," if european else ";",
            decimal="." if european else ",",
            dates=rng.choice(("iso", "us")) if european else "eu",
        )
        kinds.append("locale flip (; and decimal comma)")
    elif rng.random() < 0.1 and fmt.dates != "eu":
        fmt = replace(fmt, dates="us" if fmt.dates == "iso" else "iso")
        kinds.append("date style flip")
    if dialect is LN and rng.random() < 0.15:
        fmt = replace(fmt, dutch=not fmt.dutch)  # LN: the export ran in a session of the other language
        kinds.append("header language flip")
    if rng.random() < 0.15:
        order = list(fmt.order)
        rng.shuffle(order)
        fmt = replace(fmt, order=tuple(order))
        kinds.append("columns reordered")
    if fmt.encoding != last.encoding:
        bom = {fmt.encoding, last.encoding} == {"utf-8", "utf-8-sig"}
        kinds.append(
            ("BOM appears" if fmt.encoding == "utf-8-sig" else "BOM disappears") if bom else "encoding flip"
        )
    if fmt.eol != last.eol:
        kinds.append("CRLF <-> LF")
    return fmt, fmt, kinds


@dataclass
class _Rows:
    """The records of one file and what each means."""

    records: list[list[str]] = field(default_factory=list)
    views: list[RowView | None] = field(default_factory=list)  # None: a bad row
    held: list[str | None] = field(default_factory=list)  # a bad row's key, when readable
    fields: list[str] = field(default_factory=list)  # a bad row's header
    header: list[str] = field(default_factory=list)  # the file's


def _rows(ops: list[Op], fmt: Format, rng: random.Random, kinds: list[str], dialect: Dialect) -> _Rows:
    """The rows of the next file: listed rows, maybe reordered, poisoned or one repeated."""
    listed = [o for o in ops if o.listed]
    if len(listed) > 2 and rng.random() < 0.1:
        listed = listed[:]
        rng.shuffle(listed)
        kinds.append("rows reordered")
    poisoned: dict[int, str] = {}
    if listed and rng.random() < 0.4:
        usable = [k for k in dialect.poison if not (k == "undecodable byte" and fmt.encoding == "utf-16")]
        for index in rng.sample(range(len(listed)), min(len(listed), rng.choice((1, 1, 2)))):
            poisoned[index] = rng.choice(usable)
    duplicate = rng.randrange(len(listed)) if listed and rng.random() < 0.08 else None
    return rows_of(dialect, listed, fmt, poisoned, duplicate, kinds)


def rows_of(
    dialect: Dialect,
    listed: list[Op],
    fmt: Format,
    poisoned: dict[int, str],
    duplicate: int | None,
    kinds: list[str],
) -> _Rows:
    """`listed` as records; `poisoned`: row index -> poison kind; `duplicate`: a row written twice."""
    out = _Rows(header=dialect.header(fmt))
    for index, op in enumerate(listed):
        cells = dialect.cells(op, fmt)
        kind = poisoned.get(index)
        if kind is None:
            for _ in range(2 if duplicate == index else 1):
                out.records.append(cells[:])
                out.views.append(op.view())
                out.held.append(None)
                out.fields.append("")
            if duplicate == index:
                kinds.append("duplicate row")
            continue
        changes, named, readable = dialect.poison[kind]
        for column, value in changes.items():
            cells[column] = value
        out.records.append(cells)
        out.views.append(None)
        out.held.append(op.key if readable else None)
        out.fields.append(ROW if named is None else out.header[named])
        kinds.append("poisoned key cell" if not readable else "poisoned cell")
    return out


def _file(step: int, name: str, rows: _Rows, fmt: Format, rng: random.Random, kinds: list[str]) -> ExportFile:
    """The file of `rows`, maybe broken (truncated, header-only, empty); `expect` is filled later."""
    rendered = render(rows.header, rows.records, fmt)
    roll = rng.random() if step else 1.0  # the first file is a whole one
    if rows.records and roll < 0.14:
        at = rng.randint(1, len(rows.records))  # the record the copy broke off in
        data = cut(rendered, at, rng)
        kinds.append("truncated")
        if fmt.encoding == "utf-16" and len(data) % 2:  # half a UTF-16 code unit: not text at all
            return _broken(step, name, data, kinds, unreadable=True)
        whole = _complete(step, name, rendered.data, rows, rendered.lines, kinds)
        line = rendered.lines[at]
        before = [v for v in rows.views[: at - 1] if v is not None]
        held = frozenset(k for k in rows.held[: at - 1] if k is not None)
        whole.data, whole.bad = data, [b for b in whole.bad if b[0] < line] + [(line, ROW)]
        whole.view = FileView({v.key: v for v in before}, held, True)
        return whole
    if roll < 0.22:
        kinds.append("header-only")
        return _broken(step, name, header_only(rendered, fmt, rng), kinds, unreadable=False)
    if roll < 0.25:
        kinds.append("empty file")
        return _broken(step, name, b"", kinds, unreadable=True)
    return _complete(step, name, rendered.data, rows, rendered.lines, kinds)


def _complete(
    step: int, name: str, data: bytes, rows: _Rows, lines: list[int], kinds: list[str]
) -> ExportFile:
    bad = [(lines[i + 1], rows.fields[i]) for i, v in enumerate(rows.views) if v is None]
    good = {v.key: v for v in rows.views if v is not None}
    held = frozenset(k for k in rows.held if k is not None)
    return ExportFile(step, name, data, kinds, [], bad, False, FileView(good, held, False), ShopState(""))


def _broken(step: int, name: str, data: bytes, kinds: list[str], *, unreadable: bool) -> ExportFile:
    """A file with no good row that must not be trusted (header-only, empty, undecodable)."""
    return ExportFile(
        step, name, data, kinds, [], [], unreadable, FileView({}, frozenset(), True), ShopState("")
    )


def trial_files(params: TrialParams) -> list[ExportFile]:
    """The files of one trial, in the order they are dropped, each with the oracle's expectation."""
    rng = random.Random(params.seed)
    dialect = DIALECTS[params.kind]
    shop = Shop.opened(rng, ln=dialect is LN)
    state = ShopState(params.policy)
    usual = last = first_format(rng, dialect)
    files: list[ExportFile] = []
    acknowledged = False  # the last file read was acknowledged: its bytes are "the last processed"

    def add(f: ExportFile, changes: list[str]) -> None:
        nonlocal acknowledged
        f.changes = changes
        if f.view.read:
            acknowledged = state.apply(f.step, f.view)
        else:
            state.apply(f.step, f.view)
        f.expect = state.copy()
        files.append(f)

    for n in range(params.files):
        step = len(files)
        if n and acknowledged and rng.random() < 0.07:
            same = files[-1]
            view = FileView({}, frozenset(), False, read=False)
            name = _name(params, step, same.name[-4:])
            again = ExportFile(
                step, name, same.data, ["unchanged re-export"], [], [], False, view, ShopState("")
            )
            add(again, [])
            continue
        changes = shop.advance(state) if n else []
        kinds: list[str] = []
        if n:
            usual, fmt, kinds = next_format(usual, last, rng, dialect)
        else:
            fmt = usual
        last = fmt
        rows = _rows(shop.ops, fmt, rng, kinds, dialect)
        f = _file(step, _name(params, step, fmt.suffix), rows, fmt, rng, kinds)
        add(f, changes)
        if "truncated" in f.kinds and rng.random() < 0.5:  # the copy completes in place
            whole = render(rows.header, rows.records, fmt)
            done = _complete(len(files), f.name, whole.data, rows, whole.lines, ["copy completed"])
            add(done, [])
    return files


def _name(params: TrialParams, step: int, suffix: str) -> str:
    return "export.csv" if params.mode == "path" else f"ops_{step:03d}{suffix}"


def batch_file(
    state: ShopState,
    name: str,
    ops: list[Op],
    fmt: Format,
    *,
    poison: dict[int, str] | None = None,
    cut_at: tuple[int, int] | None = None,
    dialect: Dialect = VISUAL,
) -> ExportFile:
    """One file of a fixed batch (the regressions): the listed `ops` written as `fmt`, rows
    poisoned by index, or cut `cut_at[1]` bytes into record `cut_at[0]` (1 = the first row);
    applied to `state` (the oracle) as the next step."""
    kinds: list[str] = []
    rows = rows_of(dialect, [o for o in ops if o.listed], fmt, poison or {}, None, kinds)
    rendered = render(rows.header, rows.records, fmt)
    step = state.steps
    f = _complete(step, name, rendered.data, rows, rendered.lines, kinds)
    if cut_at is not None:
        at, into = cut_at
        line = rendered.lines[at]
        f.data = rendered.data[: rendered.offsets[at] + into]
        f.kinds.append("truncated")
        f.bad = [b for b in f.bad if b[0] < line] + [(line, ROW)]
        before = [v for v in rows.views[: at - 1] if v is not None]
        f.view = FileView({v.key: v for v in before}, frozenset(k for k in rows.held[: at - 1] if k), True)
    state.apply(step, f.view)
    f.expect = state.copy()
    return f
