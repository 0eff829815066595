"""The rules of count write-back, free of I/O so they can be proven without a database.

A write into an ERP is the most dangerous thing erpsync does, so every decision is made here:

1. `plan_write`, before the ERP is touched: no MM data is never a zero (skip), an unchanged value is
   not written again, and a count never goes down unless `allow_decrease` is set.
2. `erp_verdict`, inside the ERP transaction, with the row locked: the ERP must still hold what
   erpsync last wrote (optimistic concurrency). If it holds the *new* value already, the write
   happened before a crash and is not repeated; if it holds anything else, a person edited it and
   erpsync must not overwrite it.
3. Writes in doubt: before each ERP transaction erpsync records its intent (the values it is about
   to write) in its own state. A crash after the ERP commit but before the state commit leaves the
   ERP holding such a value while erpsync's "last written" is older; MM may count on meanwhile, so
   the next cycle's new value differs from both. The ERP holding a value erpsync *intended* is
   therefore erpsync's own write, not a person's edit (`erp_verdict(in_doubt=...)`).

Sinks write absolute per-run totals, so replays change nothing. A sink that had to post deltas
(new ticket rows) would also have to record each delta in a ledger row inside the same ERP
transaction; no such sink exists yet.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from erpsync.domain.model import PartCounts
from erpsync.domain.shop_floor import anchor_of

COUNT_FIELDS = ("total", "good", "scrap", "nonconform")
LAST_COLUMNS = ("last_total_parts", "last_good_parts", "last_scrap_parts", "last_nonconform_parts")

WRITE_ACTION = "write_counts"  # the audit rows' action
CONFLICT_CLASS = "writeback_conflict"  # the quarantine class of an ERP value a person changed
# a person's open (or discarded) conflict entry keeps erpsync's hands off that run
BLOCKING_QUARANTINE = ("open", "discarded")
# which bindings a cycle reads: active ones, vanished ones MM may still run, and stopped ones whose
# final counts are due (`final_counts_since` set: see `final_counts_step`)
ACTIVE_STATUSES = ("running", "stopping")
# the binding status that opens a run's final-counts window when erpsync records it
FINAL_COUNTS_STATUS = "stopped"
# the quarantine class of a stopped run whose final counts could not be read or written in time
FINAL_COUNTS_CLASS = "writeback_final_counts"

# What makes a repeated outcome the same as last time: (outcome, error class, after)
AuditKey = tuple[str, str | None, Any]

# One sink's view of a count value, e.g. {"GOOD_QTY": 10, "BAD_QTY": 2}. Compared with ==, so an
# ERP decimal(20,8) 10.00000000 equals the integer 10.
CountValues = Mapping[str, int | Decimal]


class NoDataReason(enum.StrEnum):
    """Why MM gave no counts for a run; each is skipped and audited, never written as 0."""

    NOT_FOUND = "mm_not_found"  # 404: MM does not know the run (yet)
    NO_METRICS = "mm_no_metrics"  # the run exists but carries no metrics
    UNREACHABLE = "mm_unreachable"  # timeout, 5xx, 429 after retries, circuit open
    REJECTED = "mm_rejected"  # MM refused the request for this run (400/422)


class Verdict(enum.StrEnum):
    NO_DATA = "no_data"
    UNCHANGED = "unchanged"
    DECREASE_REFUSED = "decrease_refused"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one run's counts before touching the ERP, and why."""

    verdict: Verdict
    decreased: tuple[str, ...] = ()
    reason: str = ""


def counts_dict(counts: PartCounts) -> dict[str, int]:
    """The four counts as plain data (audit rows, dry-run output)."""
    return {name: getattr(counts, name) for name in COUNT_FIELDS}


def describe_values(values: Mapping[str, Any]) -> str:
    """ERP column values as a person reads them in a message: `GOOD_QTY=25, BAD_QTY=1`."""
    return ", ".join(f"{column}={value}" for column, value in values.items()) or "nothing"


def add_counts(a: PartCounts | None, b: PartCounts | None) -> PartCounts | None:
    """Two runs' counts together (one ticket's generations); None counts as nothing."""
    if a is None or b is None:
        return a or b
    return PartCounts(a.total + b.total, a.good + b.good, a.scrap + b.scrap, a.nonconform + b.nonconform)


def with_sibling_counts(
    targets: Sequence[CountTarget], siblings: Mapping[int, tuple[str, str, PartCounts | None]]
) -> list[CountTarget]:
    """Give each target what erpsync last wrote for the other runs of its ticket (`others`).

    ``siblings``: binding id -> (source, anchor ticket key, last written) for every run generation
    of the targets' tickets. A ticket with one run gets None (nothing to add)."""
    by_ticket: dict[tuple[str, str], list[tuple[int, PartCounts | None]]] = {}
    for binding_id, (source, anchor, last) in siblings.items():
        by_ticket.setdefault((source, anchor), []).append((binding_id, last))
    shared = []
    for target in targets:
        runs = by_ticket.get((target.source, anchor_of(target.run_key)[0]), [])
        others: PartCounts | None = None
        for binding_id, last in runs:
            if binding_id != target.binding_id:
                others = add_counts(others, last)
        shared.append(replace(target, others=others) if others is not None else target)
    return shared


def same_counts(a: PartCounts | None, b: PartCounts | None) -> bool:
    """Equal counts (times ignored: they are carried along, not compared)."""
    if a is None or b is None:
        return a is b
    return counts_dict(a) == counts_dict(b)


def plan_write(
    new: PartCounts | None,
    last_written: PartCounts | None,
    *,
    allow_decrease: bool,
    no_data_reason: NoDataReason | None = None,
    confirmed: bool = True,
) -> Plan:
    """Decide, from MM's counts and what erpsync last wrote, whether to attempt a write.

    `confirmed` is False while the run has writes in doubt: the ERP may hold one of them instead
    of `last_written`, so even an unchanged value goes to the ERP transaction to settle it.
    """
    if new is None:
        reason = no_data_reason or NoDataReason.NOT_FOUND
        return Plan(Verdict.NO_DATA, reason=str(reason))
    if confirmed and same_counts(new, last_written):
        return Plan(Verdict.UNCHANGED)
    if last_written is not None and not allow_decrease:
        decreased = tuple(f for f in COUNT_FIELDS if getattr(new, f) < getattr(last_written, f))
        if decreased:
            before, after = counts_dict(last_written), counts_dict(new)
            detail = ", ".join(f"{f} {before[f]} -> {after[f]}" for f in decreased)
            return Plan(
                Verdict.DECREASE_REFUSED,
                decreased=decreased,
                reason=f"MM count went down ({detail}); not written (writeback.allow_decrease is off)",
            )
    return Plan(Verdict.WRITE)


ErpVerdict = Literal["write", "unchanged", "already_written", "conflict"]


# How many unconfirmed intents a run keeps: each is one crash between an ERP commit and erpsync's
# state commit, so more than a handful in a row means something else is wrong.
IN_DOUBT_LIMIT = 8


def erp_verdict(
    *,
    current: CountValues | None,
    expected: CountValues | None,
    new: CountValues,
    in_doubt: Sequence[CountValues] = (),
) -> ErpVerdict:
    """Compare the ERP's value (row locked) with what erpsync last wrote and what it would write.

    `current` is the ERP's value now (None: no value yet), `expected` what erpsync last wrote, in
    the sink's own terms (None: never written; sinks pass their blank value instead if the row
    exists before the first write), `new` the value to write, `in_doubt` values erpsync meant to
    write in a cycle whose state commit it never saw (any of them may be in the ERP).
    """
    if current is not None and dict(current) == dict(new):
        return "unchanged" if expected is not None and dict(expected) == dict(new) else "already_written"
    if _same(current, expected) or any(_same(current, value) for value in in_doubt):
        return "write"
    return "conflict"


def record_intent(in_doubt: Sequence[PartCounts], new: PartCounts) -> list[PartCounts]:
    """The run's writes in doubt once `new` is about to be written: the oldest beyond the limit go."""
    kept = [counts for counts in in_doubt if not same_counts(counts, new)]
    return [*kept, new][-IN_DOUBT_LIMIT:]


@dataclass(frozen=True, slots=True)
class CountTarget:
    """A bound run as the state holds it for one sink: where its counts go, what was last written
    there (`last`) and what erpsync set out to write there without seeing the outcome (`in_doubt`)."""

    binding_id: int
    mm_run_id: str
    run_key: str
    source: str
    erp_job: str
    erp_operation: str
    erp_machine: str
    last: PartCounts | None
    in_doubt: tuple[PartCounts, ...] = ()
    # since when the run's final counts are due (erpsync stopped it, or last saw its counts
    # change since); None: not stopped, or its final counts are in the ERP
    final_since: datetime | None = None
    # what erpsync last wrote here for the ticket's OTHER runs (its earlier or later run
    # generations, domain/shop_floor.py): a sink that keeps one value per ticket writes the sum
    others: PartCounts | None = None
    # the binding's status: a read that finds MM lost or ended a run erpsync has running is drift
    # (domain/drift.py)
    status: str = ""


def final_counts_mark(status: str | None, now: datetime) -> datetime | None:
    """The `final_counts_since` a binding gets when erpsync records `status` (None: unchanged)."""
    return now if status == FINAL_COUNTS_STATUS else None


@dataclass(frozen=True, slots=True)
class FinalStep:
    """A stopped run's final-counts marker after one cycle: `since` (None: done) and whether
    erpsync gave up on it (quarantined: its reads or writes kept failing past the limit)."""

    since: datetime | None
    give_up: bool = False


def final_counts_step(
    since: datetime,
    now: datetime,
    *,
    window: timedelta,
    max_age: timedelta,
    failed: bool,
    changed: bool,
    ended: bool,
) -> FinalStep:
    """Whether a stopped run's final counts are now in the ERP, from this cycle's outcome.

    The settle window counts from `since` (when erpsync stopped the run, moved to `now` whenever
    the counts changed), never from MM's end time: a clock-out entered hours late, or an outage
    longer than the window, still gets the run read once more. The run is done when a read that
    began at least `window` after `since` was processed and MM had `ended` the run (or confirmed it
    has no data). `failed` (MM unreadable, ERP write failed) keeps it due; once past `max_age`
    since `since` a failure gives up (the caller quarantines it). A cycle reads after `now`, so
    `now >= since` means the read followed the stop.
    """
    if failed:
        return FinalStep(None, give_up=True) if now >= since + max_age else FinalStep(since)
    if changed:
        since = max(since, now)
    if ended and now >= since + window:
        return FinalStep(None)
    return FinalStep(since)


def sink_view(
    binding: Mapping[str, Any], sink_row: Mapping[str, Any] | None, any_sink: bool
) -> tuple[PartCounts | None, tuple[PartCounts, ...]]:
    """What erpsync last wrote (and set out to write) to one sink: its own counts row.

    A run no sink has a row for was last written before counts were kept per sink: its binding's
    columns are the configured sink's. A run only other sinks have rows for was never written to
    this one. Rows are keyed by the state's column names (`LAST_COLUMNS`, ``counts_in_doubt``).
    """
    row = sink_row if sink_row is not None else (None if any_sink else binding)
    if row is None:
        return None, ()
    lasts = [row.get(column) for column in LAST_COLUMNS]
    last = None
    if all(v is not None for v in lasts):
        total, good, scrap, nonconform = (int(v) for v in lasts if v is not None)
        last = PartCounts(total=total, good=good, scrap=scrap, nonconform=nonconform)
    return last, decode_in_doubt(row.get("counts_in_doubt"))


def last_columns(counts: PartCounts | None) -> dict[str, int | None]:
    """The state's last-written columns for `counts` (all None: never written)."""
    values = (None,) * 4 if counts is None else tuple(counts_dict(counts).values())
    return dict(zip(LAST_COLUMNS, values, strict=True))


def encode_in_doubt(in_doubt: Sequence[PartCounts]) -> str | None:
    """``counts_in_doubt`` as IT reads it: a JSON list of {"total", "good", "scrap", "nonconform"}
    (None: no write in doubt)."""
    if not in_doubt:
        return None
    return json.dumps([counts_dict(c) for c in in_doubt], separators=(",", ":"))


def decode_in_doubt(value: str | None) -> tuple[PartCounts, ...]:
    if not value:
        return ()
    return tuple(
        PartCounts(
            total=int(item["total"]),
            good=int(item["good"]),
            scrap=int(item["scrap"]),
            nonconform=int(item["nonconform"]),
        )
        for item in json.loads(value)
    )


def _same(a: CountValues | None, b: CountValues | None) -> bool:
    if a is None or b is None:
        return a is b
    return dict(a) == dict(b)


# The named binds a `writeback.sink = "sql"` statement may use.
SQL_VALUE_BINDS = frozenset(
    {
        "run_id",
        "run_key",
        "source",
        "erp_job",
        "erp_operation",
        "erp_machine",
        "total_parts",
        "good_parts",
        "scrap_parts",
        "nonconform_parts",
        "bad_parts",
        "start_at",
        "end_at",
        "updated_at",
    }
)
SQL_PREV_BINDS = frozenset(
    {"prev_total_parts", "prev_good_parts", "prev_scrap_parts", "prev_nonconform_parts", "prev_bad_parts"}
)
SQL_SINK_BINDS = SQL_VALUE_BINDS | SQL_PREV_BINDS

# SQLAlchemy's own rule for `:name` binds in text(): not after ':' (PostgreSQL casts), '\' or a word.
_BIND_RE = re.compile(r"(?<![:\w\x5c]):(\w+)(?![:\w])", re.UNICODE)


def sql_bind_names(statement: str) -> list[str]:
    """The `:name` binds of a statement, in order of first appearance."""
    return list(dict.fromkeys(_BIND_RE.findall(statement)))


def unknown_sql_binds(statement: str) -> list[str]:
    """Bind names the SQL sink cannot supply (a typo would otherwise bind NULL into the ERP)."""
    return [name for name in sql_bind_names(statement) if name not in SQL_SINK_BINDS]
